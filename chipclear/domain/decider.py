"""The decider core: `needs` then `decide`, for any route of gates.

The core holds what every gate shares (submission, the route, reviewers, denials, questions, deadlines,
withdrawal) and hands everything gate-specific to the gate's own module, found by name through the
registry. It names no particular gate.

The workflow calls `needs` to learn which outside facts a command wants, fetches them through
activities, and calls `decide` once with them. Validators call `decide` with `provisional` facts, so
a command that would fail is rejected before it enters history and before the world is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chipclear.domain.commands import (
    AddEvidence,
    ClearScreeningHold,
    Command,
    Compensate,
    Decide,
    Escalate,
    Evaluate,
    Expire,
    PersonAct,
    RecordAllocation,
    RequestInfo,
    Rescreen,
    Respond,
    Submit,
    Withdraw,
)
from chipclear.domain.errors import DomainError
from chipclear.domain.events import (
    ApprovalProposed,
    Event,
    GateDenied,
    InformationProvided,
    InformationRequested,
    RequestExpired,
    RequestSubmitted,
    RequestWithdrawn,
    ReviewEscalated,
)
from chipclear.domain.facts import NONE, Facts, FactsWanted
from chipclear.domain.gates import gate_of
from chipclear.domain.gates.base import (
    LEDGER_ACTOR,
    POLICY_ACTOR,
    By,
    Context,
    GateRules,
    NewId,
    Payload,
    require_at,
    require_open,
)
from chipclear.domain.people import require_signature
from chipclear.domain.policy import Policy
from chipclear.domain.signing import RESERVED_ACTORS
from chipclear.domain.state import RequestState, evolve

DEADLINE_ACTOR = "deadline"
SCREENING_ACTOR = "system"  # a re-screening when a new list comes into force
assert {
    POLICY_ACTOR,
    DEADLINE_ACTOR,
    LEDGER_ACTOR,
    SCREENING_ACTOR,
} <= RESERVED_ACTORS  # no person may act as these


def route_of(state: RequestState, policy: Policy) -> tuple[str, ...]:
    """The request's own route once submitted; before that, the policy's."""
    return state.route or policy.route


def owner(state: RequestState, policy: Policy, command: Command) -> GateRules[Any, Any] | None:
    """The gate a command concerns: the one it names, or the one whose own command it is."""
    gate = getattr(command, "gate", None)
    if isinstance(gate, str):
        return gate_of(gate) if gate in route_of(state, policy) else None
    for name in route_of(state, policy):
        found = gate_of(name)
        if isinstance(command, found.commands):
            return found
    return None


def needs(
    state: RequestState, command: Command, policy: Policy, now: datetime, known: Facts = NONE
) -> FactsWanted:
    """The outside facts `command` still needs, given those already `known`; nothing: decide now.

    Called again after each fetch: what a gate wants next may depend on what it learnt (a request
    screening holds wants no buyer-cap claim).
    """
    match command:
        case Submit():
            if state.status is not None:
                return FactsWanted()
            wanted = FactsWanted()
            ctx = Context(state, policy, known, now)
            for name in policy.route:
                wanted = wanted.merged(gate_of(name).needs(ctx, command))
            return wanted.missing(known)
        case Decide(approve=False) | Withdraw() | Expire() | Escalate() | RequestInfo() | Respond():
            return FactsWanted()
        case Decide() if _first_of_four_eyes(state, policy, command):
            return FactsWanted()  # a proposal changes nothing outside until a second reviewer agrees
        case Compensate() if not state.is_final or state.licence_id is not None:
            return FactsWanted()  # `decide` refuses it: nothing may be given back
    gate = owner(state, policy, command)
    if gate is None or state.status is None:
        return FactsWanted()
    if isinstance(command, Decide | Evaluate) and state.gate != gate.name:
        return FactsWanted()
    return gate.needs(Context(state, policy, known, now), command).missing(known)


def decide(
    state: RequestState, command: Command, facts: Facts, policy: Policy, now: datetime, *, new_id: NewId
) -> list[Event]:
    """Events that carry out `command`, or DomainError naming the rule it breaks.

    `new_id` supplies event ids; the workflow passes `workflow.uuid4` so ids are stable on replay and
    an activity retry re-appends the very same events.
    """
    ctx = Context(state, policy, facts, now)
    actor: str
    if isinstance(command, PersonAct):
        if not isinstance(command, Submit) and state.status is None:
            raise DomainError("request has not been submitted")
        _require_signed(state, policy, command)
    match command:
        case Submit():
            return _submit(ctx, command, new_id)
        case Decide():
            actor, payloads = command.reviewer, _decide(ctx, command)
        case Evaluate():
            actor, payloads = POLICY_ACTOR, _evaluate(ctx, command)
        case RequestInfo():
            actor, payloads = command.reviewer, _request_info(ctx, command)
        case Respond():
            actor, payloads = command.actor, _respond(ctx, command)
        case Escalate():
            actor, payloads = DEADLINE_ACTOR, _escalate(state, command.gate, now)
        case Withdraw():
            require_open(state)
            actor, payloads = command.actor, [RequestWithdrawn(gate=state.gate, reason=command.reason)]
        case Expire():
            actor, payloads = DEADLINE_ACTOR, _expire(state, command, now)
        case Compensate():
            actor, payloads = POLICY_ACTOR, _compensate(ctx, command)
        case AddEvidence() | RecordAllocation() | Rescreen() | ClearScreeningHold():
            gate = owner(state, policy, command)
            if gate is None:
                raise DomainError(f"no gate of this request's route takes {command.kind}")
            actor = _actor_of(command)
            payloads = gate.handle(ctx, command)
    return _events(state, payloads, actor, policy, now, new_id, act=_signed_act(command))


def _actor_of(command: AddEvidence | RecordAllocation | Rescreen | ClearScreeningHold) -> str:
    match command:
        case AddEvidence(actor=actor):
            return actor
        case ClearScreeningHold(reviewer=reviewer):
            return reviewer
        case Rescreen():
            return SCREENING_ACTOR
    return LEDGER_ACTOR


def _signed_act(command: Command) -> dict[str, Any] | None:
    """The act as the person signed it, kept on the events it caused so `audit verify` re-checks it."""
    if isinstance(command, PersonAct) and command.signature is not None:
        return command.model_dump(mode="json")
    return None


def _events(
    state: RequestState,
    payloads: list[Payload],
    actor: str,
    policy: Policy,
    now: datetime,
    new_id: NewId,
    *,
    act: dict[str, Any] | None = None,
) -> list[Event]:
    assert state.request_id is not None
    events = []
    for offset, payload in enumerate(payloads, start=1):
        # Rules that fire inside someone else's command (an approval once evidence suffices) are
        # the policy's decision, not that person's; the ledger's answers are the ledger's.
        by = payload.actor if isinstance(payload, By) else actor
        events.append(
            Event(
                event_id=new_id(),
                stream_id=state.request_id,
                version=state.version + offset,
                data=payload.data if isinstance(payload, By) else payload,
                occurred_at=now,
                policy_version=policy.version,
                actor=by,
                act=act if by == actor else None,
            )
        )
    return events


def _require_signed(state: RequestState, policy: Policy, command: PersonAct) -> None:
    """A person's act counts only signed by that person's key, for this request at this version.

    A submission by someone the policy does not register is recorded under the name given, unsigned:
    it carries no authority. Everything else a person does needs the signature.
    """
    person = command.person
    if isinstance(command, Submit) and person not in RESERVED_ACTORS and policy.person(person) is None:
        if command.signature is not None:
            raise DomainError(
                f"{person!r} signed the submission but is not in policy {policy.version} [reviewers]"
            )
        return
    stream = command.request.request_id if isinstance(command, Submit) else state.request_id
    assert stream is not None  # `decide` refuses any other act before a submission
    act = command.model_dump(mode="json")
    require_signature(policy, person, act, command.signature, stream=stream, version=state.version)


def _submit(ctx: Context, command: Submit, new_id: NewId) -> list[Event]:
    """The request, then what each gate of the route adds at submission, then the first gate opens."""
    if ctx.state.status is not None:
        raise DomainError(f"request {ctx.state.request_id} was already submitted")
    request, policy, now = command.request, ctx.policy, ctx.now
    act = _signed_act(command)
    submitted = Event(
        event_id=new_id(),
        stream_id=request.request_id,
        version=1,
        data=RequestSubmitted(request=request, route=policy.route),
        occurred_at=now,
        policy_version=policy.version,
        actor=command.actor,
        act=act,
    )
    state = evolve(ctx.state, submitted)
    after = Context(state, policy, ctx.facts, now)
    payloads: list[Payload] = [p for name in policy.route for p in gate_of(name).on_submit(after)]
    payloads.append(gate_of(policy.route[0]).opened(policy, now))
    return [submitted, *_events(state, payloads, command.actor, policy, now, new_id, act=act)]


def _evaluate(ctx: Context, command: Evaluate) -> list[Payload]:
    """Rules that apply on entering a gate: denials in every mode, decisions in auto mode."""
    require_at(ctx.state, command.gate)
    gate = gate_of(command.gate)
    denial = gate.denial(ctx.state, ctx.policy)
    return [denial] if denial is not None else gate.on_enter(ctx)


def _require_reviewer(reviewer: str, gate: str, policy: Policy) -> None:
    if not policy.may_decide(reviewer, gate):
        allowed = sorted(name for name, person in policy.reviewers.items() if gate in person.gates)
        raise DomainError(
            f"reviewer {reviewer!r} may not decide gate {gate} "
            f"(policy {policy.version} [reviewers] allows: {', '.join(allowed) or 'nobody'})"
        )


def _require_duties(state: RequestState, policy: Policy, reviewer: str, gate: str) -> None:
    """Separation of duties (`[duties]`): whatever their gates, some people may not decide this one."""
    duties = policy.duties
    if not duties.submitter_may_decide and reviewer == state.submitted_by:
        raise DomainError(
            f"{reviewer!r} submitted this request and may not decide it "
            "([duties] submitter_may_decide = false)"
        )
    if duties.distinct_reviewers:
        for other in state.gates.values():
            deciders = {other.decided_by, other.proposal.by if other.proposal else None}
            if other.gate != gate and reviewer in deciders:
                raise DomainError(
                    f"{reviewer!r} already decided gate {other.gate} of this request; one person decides "
                    "at most one gate ([duties] distinct_reviewers = true)"
                )


def _first_of_four_eyes(state: RequestState, policy: Policy, command: Decide) -> bool:
    """Whether this approval is the first of two: large, at a four-eyes gate, none proposed yet."""
    limit = policy.duties.four_eyes_above
    if limit is None or not command.approve or command.gate not in route_of(state, policy):
        return False
    gate = gate_of(command.gate)
    record = state.gates.get(command.gate)
    if not gate.four_eyes or record is None or record.proposal is not None:
        return False
    return _approval_units(state, policy, gate, command) > limit


def _approval_units(state: RequestState, policy: Policy, gate: GateRules[Any, Any], command: Decide) -> int:
    in_play = state.units_in_play
    cap = gate.max_units(policy)
    return command.units if command.units is not None else min(in_play, cap or in_play)


def _decide(ctx: Context, command: Decide) -> list[Payload]:
    state, policy = ctx.state, ctx.policy
    require_at(state, command.gate)
    _require_reviewer(command.reviewer, command.gate, policy)
    _require_duties(state, policy, command.reviewer, command.gate)
    gate = gate_of(command.gate)
    if not command.approve:
        if command.units is not None or command.conditions:
            raise DomainError("a denial takes a reason only, not units or conditions")
        if not command.reason or not command.reason.strip():
            raise DomainError("reason: a denial needs a reason")
        return [GateDenied(gate=gate.name, reason=command.reason.strip())]
    denial = gate.denial(state, policy)
    if denial is not None:
        # Rules that deny hold in every mode; no reviewer overrides them.
        raise DomainError(f"cannot approve: {denial.reason}")
    for name in state.route:
        if (held := gate_of(name).holds(state)) is not None:
            raise DomainError(f"cannot approve: {held}")
    if (question := state.open_question) is not None:
        raise DomainError(
            f"the request is waiting for the applicant's answer to {question.question!r} "
            f"(due {question.due.isoformat()}); it returns to review when they respond"
        )
    in_play, cap = state.units_in_play, gate.max_units(policy)
    units = _approval_units(state, policy, gate, command)
    if units > in_play:
        raise DomainError(f"units: {units} exceeds the {in_play} units still requested")
    if cap is not None and units > cap:
        raise DomainError(f"units: {units} exceeds {gate.rule_prefix}.max_units_per_request = {cap}")
    if _first_of_four_eyes(state, policy, command):
        gate.check_approval(ctx, command)  # a proposal meets every rule the approval itself must
        note = command.reason.strip() if command.reason else None
        return [ApprovalProposed(gate=gate.name, units=units, conditions=command.conditions, note=note)]
    proposal = state.gates[gate.name].proposal
    if proposal is not None:
        command, units = _second_approval(command, units, proposal.by, proposal.units, proposal.conditions)
    return gate.approve(ctx, command, units)


def _second_approval(
    command: Decide, units: int, first: str, proposed: int, conditions: list[str]
) -> tuple[Decide, int]:
    """The second of four eyes: another reviewer, no more than was proposed, both sets of conditions."""
    if command.reviewer == first:
        raise DomainError(
            f"{first!r} proposed this approval; it takes effect when a second reviewer approves "
            "([duties] four_eyes_above)"
        )
    if command.units is not None and command.units > proposed:
        raise DomainError(f"units: {command.units} exceeds the {proposed} units {first!r} proposed")
    merged = list(dict.fromkeys([*conditions, *command.conditions]))
    return command.model_copy(update={"conditions": merged}), min(units, proposed)


def _request_info(ctx: Context, command: RequestInfo) -> list[Payload]:
    state, policy = ctx.state, ctx.policy
    require_at(state, command.gate)
    allowed = gate_of(command.gate).info_deadline(policy)
    if allowed is None:
        raise DomainError(f"gate: gate {command.gate} does not ask the applicant for information")
    _require_reviewer(command.reviewer, command.gate, policy)
    if (question := state.open_question) is not None:
        raise DomainError(f"the applicant has not answered the last question yet ({question.question!r})")
    return [InformationRequested(gate=command.gate, question=command.question.strip(), due=ctx.now + allowed)]


def _respond(ctx: Context, command: Respond) -> list[Payload]:
    require_open(ctx.state)
    question = ctx.state.open_question
    if question is None:
        raise DomainError("nobody has asked this request for information; there is nothing to answer")
    if ctx.now > question.due:
        # The application is being returned without action; a late answer cannot revive it.
        raise DomainError(f"the answer was due by {question.due.isoformat()}; the request is being returned")
    return [
        InformationProvided(
            gate=question.gate, text=command.text.strip(), attachments=list(command.attachments)
        )
    ]


def _escalate(state: RequestState, gate: str, now: datetime) -> list[Payload]:
    require_at(state, gate)
    due = state.review_due
    if due is None:
        raise DomainError(f"gate {gate} has no review SLA")
    if state.escalated:
        raise DomainError(f"gate {gate} is already escalated")
    if state.open_question is not None:
        raise DomainError("the review clock is stopped while the applicant answers")
    if now < due:
        raise DomainError(f"gate {gate} review SLA {due.isoformat()} has not passed")
    return [ReviewEscalated(gate=gate, due=due)]


def _expire(state: RequestState, command: Expire, now: datetime) -> list[Payload]:
    gate = command.gate
    require_at(state, gate)
    if command.cause == "information_request":
        question = state.open_question
        if question is None:
            raise DomainError("the request is not waiting for the applicant")
        deadline = question.due
    else:
        assert state.deadline is not None
        deadline = state.deadline
    if now < deadline:
        raise DomainError(f"gate {gate} deadline {deadline.isoformat()} has not passed")
    return [RequestExpired(gate=gate, deadline=deadline, cause=command.cause)]


def _compensate(ctx: Context, command: Compensate) -> list[Payload]:
    """Compensation, once: only a request that ended without its licence gives anything back."""
    if not ctx.state.is_final or ctx.state.licence_id is not None:
        raise DomainError("only a request that ended without a licence gives back what it holds")
    if command.gate not in ctx.state.route:
        raise DomainError(f"gate {command.gate} is not on this request's route")
    return gate_of(command.gate).compensate(ctx, command.reason)


def compensations(state: RequestState) -> list[Compensate]:
    """What a request that ended unlicensed asks of each gate of its route, last gate first."""
    if not state.is_final or state.licence_id is not None:
        return []
    reason = f"request {state.status}: {state.outcome_reason or 'ended'}"
    return [Compensate(gate=name, reason=reason) for name in reversed(state.route)]


@dataclass(frozen=True)
class Due:
    """The next thing time alone will do to a request, and when."""

    at: datetime
    command: Expire | Escalate


def next_due(state: RequestState) -> Due | None:
    gate = state.gate
    if gate is None or state.deadline is None:
        return None
    candidates = [Due(state.deadline, Expire(gate=gate))]
    question = state.open_question
    if question is not None:
        candidates.append(Due(question.due, Expire(gate=gate, cause="information_request")))
    elif (review_due := state.review_due) is not None and not state.escalated:
        candidates.append(Due(review_due, Escalate(gate=gate)))
    return min(candidates, key=lambda due: due.at)  # on a tie the hard deadline, listed first, wins
