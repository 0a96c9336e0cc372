"""`chipclear status` of a final request answers from the SQLite store's row without the domain's models
(chipclear.cli.final_status): what it prints must be what the models print for the same state.

Final states are made the way the workflow makes them (the pure decider, tests.decisions): licensed
with screening, a buyer's cap claim, an allocation and the domestic quota; denied on a listed party;
denied after the export approval went back to the buyer's cap; withdrawn at a public computing hub
short of evidence, with refused evidence and an answered question; expired. Each is compared both
ways, and the shapes the module checks rows against are compared with the models themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from chipclear.cli import final_status, output
from chipclear.config import Settings
from chipclear.domain.buyer_cap import BuyerClaim
from chipclear.domain.commands import Compensate, Decide, Evaluate, RequestInfo, Respond, Submit, Withdraw
from chipclear.domain.events import DomesticQuotaAssessed, PartiesRescreened, PartiesScreened, PublicHubShare
from chipclear.domain.gates import cn_import, registered
from chipclear.domain.models import FINAL_STATUSES, Attachment
from chipclear.domain.policy import Policy
from chipclear.domain.screening import ScreenedParty, ScreeningMatch
from chipclear.domain.state import GateRecord, InfoExchange, RequestState
from chipclear.projections import PROJECTIONS, REQUESTS, get_request
from chipclear.store.chain import timestamp
from chipclear.store.sqlite import SQLiteEventStore
from tests.decisions import Run, World
from tests.factories import make_policy, make_request, safe_policy
from tests.store.support import NOW, RECORDER, append_all, scenario


def _run(policy: Policy, world: World | None = None) -> Run:
    return Run(policy, now=NOW, world=world or World())


LISTED = ScreeningMatch(
    role="buyer",
    party_name="ByteDance Ltd.",
    entry_name="Listed Party Co. [EL]",
    matched_name="Listed Party",
    entity_number="EL-1",
    source="Entity List (EL) - Bureau of Industry and Security",
    programs=["EAR"],
    score=97.5,
    entry_id="csl-1",
    entry_type="Entity",
    tokens=["bytedance"],
    folds=["homoglyph: Cyrillic '\u0430' read as 'a'"],
)
HUB = {
    "name": "Zhangbei Cloud Region",
    "province": "Hebei",
    "public_computing_hub": True,
    "installed_domestic": 30_000,
    "installed_foreign": 25_000,
}
# Every rule that asks the world on, and a cap per buyer: every slice of every gate gets filled.
ASKING = make_policy(
    "auto",
    us_export={"screening": True, "max_units_per_buyer": 75_000},
    cn_import={"allocate_from_batches": True},
    domestic_quota={"unique_invoices": True},
)


def licensed() -> RequestState:
    run = _run(ASKING)
    run.send(Submit(request=make_request()))
    for gate in ("us-export", "cn-import", "domestic-quota"):
        run.send(Evaluate(gate=gate))
    return run.state


def denied_on_a_listed_party() -> RequestState:
    run = _run(safe_policy("auto"), World(matches=[LISTED]))
    run.send(Submit(request=make_request()))
    run.send(Evaluate(gate="us-export"))
    return run.state


def denied_after_the_export_approval() -> RequestState:
    run = _run(ASKING)
    buyer = {"name": "Sinopec AI", "country": "CN", "kind": "state_owned"}
    run.send(Submit(request=make_request(buyer=buyer)))
    run.send(Evaluate(gate="us-export"))
    run.send(Evaluate(gate="cn-import"))
    for gate in run.state.route:  # the workflow gives back what each gate holds, once it ended unlicensed
        run.send(Compensate(gate=gate, reason="request ended without a licence"))
    return run.state


def withdrawn_at_a_hub_with_questions() -> RequestState:
    world = World()
    other = _run(safe_policy("auto"), world)
    other.send(Submit(request=make_request()))  # registers invoice HW-2026-0001 to ByteDance
    run = _run(
        make_policy("manual", domestic_quota={"min_domestic_share": 0.5, "unique_invoices": True}), world
    )
    kuaishou = {"name": "Kuaishou Technology", "country": "CN", "kind": "private"}
    run.send(Submit(request=make_request(buyer=kuaishou, data_center=HUB, units=20_000)))
    run.send(RequestInfo(gate="us-export", reviewer="alice", question="Who uses the [cluster]?"))
    attachment = Attachment(name="end-user.pdf", size=12, sha256="ab" * 32)
    run.send(Respond(text="Our own cloud customers.", attachments=[attachment], actor="applicant"))
    run.to("domestic-quota")
    run.send(Evaluate(gate="domestic-quota"))
    run.send(Withdraw(reason="the order moved to next year", actor="applicant"))
    return run.state


def approved_by_a_reviewer_then_withdrawn() -> RequestState:
    run = _run(make_policy("manual"))
    run.send(Submit(request=make_request()))
    run.send(
        Decide(gate="us-export", reviewer="alice", approve=True, units=40_000, conditions=["No re-export"])
    )
    run.send(Withdraw(reason="cancelled", actor="applicant"))
    return run.state


FINAL: dict[str, Callable[[], RequestState]] = {
    "licensed": licensed,
    "denied-listed": denied_on_a_listed_party,
    "denied-released": denied_after_the_export_approval,
    "withdrawn-hub": withdrawn_at_a_hub_with_questions,
    "withdrawn-reviewed": approved_by_a_reviewer_then_withdrawn,
    "expired": lambda: scenario("expired").state,
    "licensed-after-evidence": lambda: scenario("licensed_after_evidence").state,
}


def as_stored(state: RequestState) -> dict[str, Any]:
    """The state as the projection's row holds it."""
    stored: dict[str, Any] = json.loads(REQUESTS.row(state)["state"])
    return stored


def printed(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False, default=str)  # as output.print_json


@pytest.mark.parametrize("kind", FINAL)
def test_a_final_state_prints_as_the_models_print_it(kind: str) -> None:
    state = FINAL[kind]()
    assert state.is_final, state.status
    stored = as_stored(state)
    assert final_status._known(stored), f"{kind}: a state of a shape final_status does not know"
    assert printed(final_status.document(stored, source="event-store")) == printed(
        output.state_document(state, source="event-store")
    )
    assert final_status.gate_lines(stored) == output.gate_lines(state)


def test_the_states_cover_every_line_a_gate_prints() -> None:
    lines = [line for make in FINAL.values() for line in output.gate_lines(make())]
    for start in (
        "screening: 1 match(es)",
        "screening: clear",
        "  buyer 'ByteDance Ltd.' ~ 'Listed Party Co. [EL]'",
        "buyer cap: ByteDance Ltd. has",
        "buyer cap: this request's",
        "allocation: ",
        "domestic quota: ",
        "  public computing hub: ",
        "  not counted: invoice ",
    ):
        assert any(line.startswith(start) for line in lines), start


def test_a_state_still_open_is_left_to_the_models() -> None:
    run = _run(make_policy("manual"))
    run.send(Submit(request=make_request()))
    stored = as_stored(run.state)
    assert not final_status._known(stored)


def test_a_state_of_another_shape_is_left_to_the_models() -> None:
    stored = as_stored(licensed())
    assert final_status._known(stored)
    assert not final_status._known({**stored, "new_field": None})
    assert not final_status._known({**stored, "route": [*stored["route"], "new-gate"]})
    slices = {**stored["slices"], "cn-import": {**stored["slices"]["cn-import"], "more": 1}}
    assert not final_status._known({**stored, "slices": slices})


def test_the_shapes_are_the_models() -> None:
    """A model that grows a field fails here: final_status must learn it (or leave such rows alone)."""
    assert {str(status) for status in FINAL_STATUSES} == final_status.FINAL
    assert set(registered()) == set(final_status.SLICE_KEYS), "a gate final_status does not know"
    shapes: list[tuple[Any, frozenset[str]]] = [
        (RequestState, final_status.STATE_KEYS),
        (GateRecord, final_status.GATE_RECORD_KEYS),
        (InfoExchange, final_status.EXCHANGE_KEYS),
        *((gate.slice_model, final_status.SLICE_KEYS[name]) for name, gate in registered().items()),
        (PartiesScreened, final_status.SCREENING_KEYS),
        (PartiesRescreened, final_status.SCREENING_KEYS),
        (ScreenedParty, final_status.PARTY_KEYS),
        (ScreeningMatch, final_status.MATCH_KEYS),
        (BuyerClaim, final_status.BUYER_CLAIM_KEYS),
        (cn_import.AllocationRecord, final_status.ALLOCATION_KEYS),
        (DomesticQuotaAssessed, final_status.ASSESSMENT_KEYS),
        (PublicHubShare, final_status.HUB_KEYS),
    ]
    for model, keys in shapes:
        assert frozenset(model.model_fields) == keys, model.__name__


def test_a_row_stored_before_a_field_was_added_reads_as_the_models_read_it() -> None:
    for gate, defaults in final_status.SLICE_DEFAULTS.items():
        model = registered()[gate].slice_model
        for key, value in defaults.items():
            assert model.model_fields[key].get_default(call_default_factory=True) == value, (gate, key)
    stored = as_stored(licensed())
    older = {
        **stored,
        "slices": {
            gate: {
                key: value
                for key, value in part.items()
                if key not in final_status.SLICE_DEFAULTS.get(gate, {})
            }
            for gate, part in stored["slices"].items()
        },
    }
    read = final_status._with_defaults(older)
    assert final_status._known(read) and not final_status._known(older)
    state = REQUESTS.load({"state": json.dumps(older)})
    assert printed(final_status.document(read, source="event-store")) == printed(
        output.state_document(state, source="event-store")
    )


def test_moments_take_the_chains_form() -> None:
    state = licensed()
    assert state.updated_at is not None
    assert output.json_moment(state.updated_at.isoformat()) == timestamp(state.updated_at)
    assert output.json_moment(as_stored(state)["updated_at"]) == timestamp(state.updated_at)


def test_read_from_a_sqlite_store(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    done, open_ = scenario("licensed", "req-done"), scenario("awaiting_review", "req-open")
    with closing(SQLiteEventStore(db, projections=PROJECTIONS, recorder=RECORDER)) as store:
        append_all(store, [done, open_])
        expected = get_request(store, "req-done")
    current = Settings.from_env({"CHIPCLEAR_HOME": str(tmp_path), "CHIPCLEAR_EVENT_STORE": f"sqlite:///{db}"})
    found = final_status.stored_final(current, "req-done")
    assert expected is not None and found == as_stored(expected)
    assert final_status.stored_final(current, "req-open") is None
    assert final_status.stored_final(current, "req-never") is None
    elsewhere = Settings.from_env({"CHIPCLEAR_HOME": str(tmp_path / "none")})
    assert final_status.stored_final(elsewhere, "req-done") is None
    assert not (tmp_path / "none").exists()  # a read creates nothing
