"""Who may act: a person's signed act checked against the policy's people, for any stream.

One check for every place a person acts (a request's workflow, the allocation ledger, a screening
list load), so the rule — registered, their own key, this stream at this version, these exact bytes —
is written once.
"""

from __future__ import annotations

from typing import Any

from chipclear.domain.errors import DomainError, StaleSignature
from chipclear.domain.names import normalise_buyer
from chipclear.domain.policy import Person, Policy
from chipclear.domain.signing import RESERVED_ACTORS, ActSignature, act_verifies


def require_person(policy: Policy, person: str) -> Person:
    """The registered person `person`, with a key; DomainError naming why not."""
    if person in RESERVED_ACTORS:
        raise DomainError(
            f"{person!r} is reserved for the system's own acts; a person acts under their own name"
        )
    registered = policy.person(person)
    if registered is None or registered.key is None:
        raise DomainError(
            f"{person!r} is not a person with a key in policy {policy.version} [reviewers]; "
            "only a registered person's signed act is accepted"
        )
    return registered


def require_signature(
    policy: Policy,
    person: str,
    act: dict[str, Any],
    signature: ActSignature | None,
    *,
    stream: str,
    version: int,
) -> None:
    """`act` counts only signed by `person`'s key in `policy`, for `stream` as it stands at `version`."""
    registered = require_person(policy, person)
    if signature is None:
        raise DomainError(f"the act is not signed: {person} signs it with their key (--key)")
    if signature.key != registered.key:
        raise DomainError(f"the act is signed with a key that is not {person}'s in policy {policy.version}")
    if signature.expected_version != version:
        raise StaleSignature(
            f"the signature is for version {signature.expected_version} of {stream}, which is now at "
            f"version {version}: it has moved on; look at it again and sign anew"
        )
    if not act_verifies(stream, act, signature):
        raise DomainError(f"{person}'s signature does not match this act; nothing was recorded")


def require_exporter_officer(policy: Policy, person: str, exporter: str) -> Person:
    """`person`, registered with a key and acting for `exporter` ([reviewers.NAME] exporters)."""
    registered = require_person(policy, person)
    if normalise_buyer(exporter) not in {normalise_buyer(name) for name in registered.exporters}:
        raise DomainError(
            f"{person!r} does not act for exporter {exporter!r} in policy {policy.version} "
            "([reviewers.NAME] exporters); only its own officers record its shipments and US figures"
        )
    return registered
