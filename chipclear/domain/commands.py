"""Commands: what someone (or the workflow itself) asks a request to do.

A command is a request, not a fact; `decide` turns it into events or refuses it with a DomainError.
What a person sends (`HumanCommand`: decide, request information, respond, evidence, withdraw) is
exactly what crosses the wire: facts from outside (a buyer-cap claim, the invoice registry's answer)
travel separately (chipclear.domain.facts), never on a model a client fills in.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import ConfigDict, Field

from chipclear.domain.allocation import Reservation
from chipclear.domain.models import MAX_UNITS, Attachment, GateName, ImportRequest, ProcurementRecord, Text
from chipclear.domain.signing import ActSignature

Reason = Annotated[str, Field(min_length=1, max_length=2000)]


class _Command(Text):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    # The discriminator: each command narrows it to its own literal (declared here, it stays the first key).
    kind: str


class _GateCommand(_Command):
    """A command addressed to one gate of the request's route."""

    gate: GateName


class PersonAct(_Command):
    """A person's act: it counts only with their signature over it, the request and the version
    they saw (chipclear.domain.signing), checked by the decider before anything is decided."""

    signature: ActSignature | None = None

    @property
    def person(self) -> str:
        raise NotImplementedError


class _ReviewerAct(PersonAct, _GateCommand):
    reviewer: Annotated[str, Field(min_length=1, max_length=100)]

    @property
    def person(self) -> str:
        return self.reviewer


class _ApplicantAct(PersonAct):
    actor: Annotated[str, Field(min_length=1, max_length=100)] = "applicant"

    @property
    def person(self) -> str:
        return self.actor


class Submit(_ApplicantAct):
    """Signed when the submitter is a registered person; anyone else's submission names them only."""

    kind: Literal["submit"] = "submit"
    request: ImportRequest


class Evaluate(_GateCommand):
    """Apply the policy's rules at a gate the request has just entered."""

    kind: Literal["evaluate"] = "evaluate"


class Decide(_ReviewerAct):
    kind: Literal["decide"] = "decide"
    approve: bool
    units: Annotated[int, Field(ge=1, le=MAX_UNITS)] | None = None
    reason: str | None = None
    conditions: list[Reason] = Field(default_factory=list)


class RequestInfo(_ReviewerAct):
    """An officer asks the applicant for more information; the review waits for the answer."""

    kind: Literal["request_info"] = "request_info"
    question: Reason


class Respond(_ApplicantAct):
    kind: Literal["respond"] = "respond"
    text: Reason
    attachments: Annotated[list[Attachment], Field(max_length=20)] = Field(default_factory=list)


class Escalate(_GateCommand):
    """The review SLA passed: raised by the workflow's timer, not by a person."""

    kind: Literal["escalate"] = "escalate"


class AddEvidence(_ApplicantAct):
    kind: Literal["add_evidence"] = "add_evidence"
    records: Annotated[list[ProcurementRecord], Field(max_length=1_000)]


class Withdraw(_ApplicantAct):
    kind: Literal["withdraw"] = "withdraw"
    reason: Reason


class Expire(_GateCommand):
    kind: Literal["expire"] = "expire"
    cause: Literal["information_request"] | None = None


class RecordAllocation(_Command):
    """The allocation ledger served this request from its queue (a new batch, or units given back)."""

    kind: Literal["record_allocation"] = "record_allocation"
    reservation: Reservation


class Compensate(_GateCommand):
    """The request ended without a licence: the gate gives back what it holds (units to a batch,
    headroom to the buyer's cap, invoices to the registry), once."""

    kind: Literal["compensate"] = "compensate"
    reason: str


class Rescreen(_Command):
    """A new restricted-party list is in force: screen the request's parties again. The re-screening
    workflow asks every live request; the request screens against the list in force itself, so the
    sender decides nothing."""

    kind: Literal["rescreen"] = "rescreen"
    list_version: Annotated[str, Field(min_length=1, max_length=200)]


class ClearScreeningHold(PersonAct):
    """A reviewer clears a re-screening match as a false positive, saying why."""

    kind: Literal["clear_hold"] = "clear_hold"
    reviewer: Annotated[str, Field(min_length=1, max_length=100)]
    reason: Reason

    @property
    def person(self) -> str:
        return self.reviewer


HumanAct = Decide | RequestInfo | Respond | AddEvidence | Withdraw | ClearScreeningHold
HumanCommand = Annotated[HumanAct, Field(discriminator="kind")]
# The same, for isinstance: a person's command is dry-run before the world is asked anything.
HUMAN_COMMANDS: tuple[type, ...] = get_args(HumanAct)
Command = Annotated[
    Submit
    | Evaluate
    | Decide
    | RequestInfo
    | Respond
    | Escalate
    | AddEvidence
    | Withdraw
    | Expire
    | RecordAllocation
    | Compensate
    | Rescreen
    | ClearScreeningHold,
    Field(discriminator="kind"),
]
