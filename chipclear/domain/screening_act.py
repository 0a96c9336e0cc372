"""Loading a restricted-party list: an us-export reviewer's signed act on the `screening-lists` stream.

A list decides who is held, so switching it is as much an act as a decision: it names a person who
proves it, for the stream as they saw it, and is kept with the `ScreeningListLoaded` it caused.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from chipclear.domain.errors import DomainError
from chipclear.domain.people import require_signature
from chipclear.domain.policy import Policy
from chipclear.domain.signing import ActorSignedAct

SCREENING_STREAM = "screening-lists"
# Screening holds requests at this gate: its reviewers, and only they, change the list in force.
SCREENING_GATE = "us-export"


class LoadScreeningList(ActorSignedAct):
    kind: Literal["load_screening_list"] = "load_screening_list"
    version: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    source: str
    entries: int
    names: int


def require_loader(policy: Policy, command: LoadScreeningList, stream_version: int) -> None:
    """Only a reviewer of the screening gate loads a list, signed for the stream as it stands."""
    act = command.model_dump(mode="json")
    require_signature(
        policy, command.actor, act, command.signature, stream=SCREENING_STREAM, version=stream_version
    )
    if not policy.may_decide(command.actor, SCREENING_GATE):
        raise DomainError(
            f"{command.actor!r} may not load screening lists: only a reviewer of {SCREENING_GATE} may "
            f"(policy {policy.version} [reviewers])"
        )
