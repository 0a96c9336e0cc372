"""`reconcile`: the projections, the invoice registry and the screening lists rebuilt from the log and
compared row by row. A clean store reports nothing; an edit to any of those tables (which the chain
does not cover) is named by table, key and what differs. Runs on SQLite and on PostgreSQL; `Raw` plays
the operator or attacker who edits a table behind the store's back.
"""

from __future__ import annotations

import json
from contextlib import closing
from datetime import timedelta

import pytest

from chipclear.domain.commands import Evaluate, Submit, Withdraw
from chipclear.domain.decider import compensations
from chipclear.domain.models import Status, invoice_key
from chipclear.store import reconcile as reconciling
from chipclear.store.protocol import EventStore
from chipclear.store.reconcile import Difference, reconcile
from tests.decisions import Run
from tests.domain.test_evidence import rec, request_with
from tests.domain.test_screening import ACME_ROWS, LOADED_AT, csl_list
from tests.factories import make_policy
from tests.store.support import (
    ALL_GATES,
    KINDS,
    NOW,
    Raw,
    UniqueIds,
    append_all,
    scenario,
    scenarios,
)
from tests.store.test_invoice_registry import StoreWorld

# The bundled policies keep invoices unique; tests.factories turns the registry off unless asked.
REGISTRY = make_policy("auto", domestic_quota={"unique_invoices": True})
OTHER_BUYER = {"name": "Alibaba Cloud Computing Co., Ltd.", "country": "CN", "kind": "private"}


def played(
    store: EventStore, request_id: str, *invoices: str, withdraw: bool = False, **request: object
) -> Run:
    """A request run as the workflow runs it, against the store's real invoice registry: submitted
    (its invoices registered), then licensed, or withdrawn and compensated (its invoices released);
    its events appended."""
    records = [rec(invoice, units=60_000 // len(invoices)) for invoice in invoices]
    run = Run(REGISTRY, now=NOW, world=StoreWorld(store=store), new_id=UniqueIds())
    run.send(Submit(request=request_with(*records, request_id=request_id, **request)))
    if withdraw:
        run.send(Withdraw(reason="order cancelled"), at=NOW + timedelta(minutes=5))
        for command in compensations(run.state):
            run.send(command, at=NOW + timedelta(minutes=5))
    else:
        for minute, gate in enumerate(ALL_GATES, start=1):
            run.send(Evaluate(gate=gate), at=NOW + timedelta(minutes=minute))
    store.append(run.request_id, 0, run.history)
    return run


@pytest.fixture
def registry(event_store: EventStore) -> EventStore:
    """Licensed req-lic holds HW-1; withdrawn req-wd released HW-2; HW-3, released by withdrawn req-a,
    counts again for req-b of the same buyer."""
    assert played(event_store, "req-lic", "HW-1").state.status == Status.LICENSED
    assert played(event_store, "req-wd", "HW-2", withdraw=True).state.status == Status.WITHDRAWN
    played(event_store, "req-a", "HW-3", withdraw=True)
    assert played(event_store, "req-b", "HW-3", "HW-4").state.status == Status.LICENSED
    # Another buyer's request counts none of them: HW-1 is req-lic's, HW-2 stays its buyer's.
    played(event_store, "req-other", "HW-1", "HW-2", "HW-5", buyer=OTHER_BUYER)
    assert reconcile(event_store) == []
    return event_store


def key(invoice: str) -> str:
    return invoice_key(rec(invoice))


def tamper(store: EventStore, sql: str, params: tuple[object, ...] = ()) -> None:
    raw = Raw(store)
    with closing(raw.conn):
        raw.execute(sql, params)


def only(store: EventStore) -> Difference:
    [difference] = reconcile(store)
    return difference


# -- clean stores ------------------------------------------------------------------------------------


def test_a_clean_store_reports_nothing(event_store: EventStore) -> None:
    assert reconcile(event_store) == []
    append_all(event_store, scenarios(2 * len(KINDS)))
    event_store.save_screening_list(csl_list(*ACME_ROWS), by="ops")
    # tests.factories' policies keep no invoice registry: there is none to compare.
    assert reconcile(event_store, unique_invoices=False) == []


def test_a_store_whose_policy_keeps_no_registry_must_be_reconciled_without_one(
    event_store: EventStore,
) -> None:
    """Evidence accepted under a policy without the registry registered nothing, so asking for the
    registry names every invoice as missing: `unique_invoices` must state the policy."""
    append_all(event_store, [scenario("licensed", "req-unregistered")])
    [missing] = reconcile(event_store)
    assert missing.table == "invoices"
    assert missing.problem == (
        f"an invoices row for {missing.key} missing: request req-unregistered's accepted evidence holds it"
    )


def test_the_registry_as_the_workflow_leaves_it_reconciles(registry: EventStore) -> None:
    raw = Raw(registry)
    with closing(raw.conn):
        rows = raw.execute("SELECT invoice_key, request_id FROM invoices ORDER BY invoice_key").fetchall()
    assert [tuple(row) for row in rows] == [
        (key("HW-1"), "req-lic"),
        (key("HW-2"), None),
        (key("HW-3"), "req-b"),
        (key("HW-4"), "req-b"),
        (key("HW-5"), "req-other"),
    ]
    assert reconcile(registry) == []


def test_every_page_is_compared(event_store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams and rows are merged a page at a time, in byte order on both backends (mixed case, dots
    and dashes sort alike everywhere)."""
    monkeypatch.setattr(reconciling, "PAGE", 2)
    ids = ["REQ-B", "req-a", "Req.c", "req-A", "req_d", "REQ-3", "req-10", "req-9"]
    append_all(event_store, [scenario(KINDS[n % len(KINDS)], request_id) for n, request_id in enumerate(ids)])
    assert reconcile(event_store, unique_invoices=False) == []
    tamper(event_store, "UPDATE requests SET units_requested = 1 WHERE request_id = ?", ("req-A",))
    tamper(event_store, "DELETE FROM requests WHERE request_id = ?", ("req_d",))
    assert [(d.key, d.problem.split(":")[0]) for d in reconcile(event_store, unique_invoices=False)] == [
        ("req-A", "requests row req-A"),
        ("req_d", "a requests row req_d missing"),
    ]


# -- the request projection ------------------------------------------------------------------------------


def test_a_withdrawn_request_shown_as_licensed_is_reported(event_store: EventStore) -> None:
    """Only the projection is edited: the log, the chain and `verify` are untouched."""
    append_all(event_store, [scenario("licensed", "req-1"), scenario("withdrawn", "req-7")])
    tamper(event_store, "UPDATE requests SET status = 'licensed' WHERE request_id = 'req-7'")
    assert event_store.verify().ok
    assert reconcile(event_store, unique_invoices=False) == [
        Difference(
            table="requests",
            key="req-7",
            problem="requests row req-7: status 'licensed' but the log folds to 'withdrawn'",
        )
    ]
    event_store.rebuild_projection()
    assert reconcile(event_store, unique_invoices=False) == []


def test_an_edited_state_is_reported_without_quoting_it(event_store: EventStore) -> None:
    append_all(event_store, [scenario("withdrawn", "req-7")])
    raw = Raw(event_store)
    with closing(raw.conn):
        (text,) = raw.execute("SELECT state FROM requests WHERE request_id = 'req-7'").fetchone()
        state = json.loads(text)
        state["outcome_reason"] = "approved by phone"
        raw.execute("UPDATE requests SET state = ? WHERE request_id = 'req-7'", (json.dumps(state),))
    assert only_problem(event_store) == "requests row req-7: state differs from the log's fold"


def only_problem(store: EventStore) -> str:
    [difference] = reconcile(store, unique_invoices=False)
    return difference.problem


def test_a_missing_and_a_stray_request_row_are_reported(event_store: EventStore) -> None:
    found = scenario("licensed", "req-9")
    append_all(event_store, [scenario("denied", "req-1"), found])
    tamper(event_store, "DELETE FROM requests WHERE request_id = 'req-9'")
    missing = (
        f"a requests row req-9 missing: the log folds {len(found.events)} event(s) of stream req-9 to one"
    )
    assert only_problem(event_store) == missing
    tamper(
        event_store,
        "INSERT INTO requests SELECT 'req-ghost', status, gate, buyer, units_requested, units_approved, "
        "policy_version, version, submitted_at, updated_at, state, flags FROM requests "
        "WHERE request_id = 'req-1'",
    )
    assert [d.problem for d in reconcile(event_store, unique_invoices=False)] == [
        missing,
        "a requests row req-ghost that no event of the log folds to",
    ]


# -- the invoice registry ------------------------------------------------------------------------------


def test_a_deleted_invoice_row_is_reported(registry: EventStore) -> None:
    tamper(registry, "DELETE FROM invoices WHERE invoice_key = ?", (key("HW-1"),))
    assert registry.verify().ok
    assert only(registry) == Difference(
        table="invoices",
        key=key("HW-1"),
        problem=f"an invoices row for {key('HW-1')} missing: request req-lic's accepted evidence holds it",
    )


def test_a_deleted_released_invoice_row_is_reported(registry: EventStore) -> None:
    """Deleting a released row would let another buyer register the purchase."""
    tamper(registry, "DELETE FROM invoices WHERE invoice_key = ?", (key("HW-2"),))
    assert only(registry).problem == (
        f"an invoices row for {key('HW-2')} missing: req-wd counted it (released since, not deleted)"
    )


def test_an_invoice_given_to_another_request_is_reported(registry: EventStore) -> None:
    tamper(registry, "UPDATE invoices SET request_id = 'req-b' WHERE invoice_key = ?", (key("HW-1"),))
    assert (
        only(registry).problem == f"invoices row {key('HW-1')}: held by req-b but the log gives it to req-lic"
    )


def test_a_released_invoice_taken_back_is_reported(registry: EventStore) -> None:
    tamper(registry, "UPDATE invoices SET request_id = 'req-wd' WHERE invoice_key = ?", (key("HW-2"),))
    assert only(registry).problem == (
        f"invoices row {key('HW-2')}: held by req-wd but the log gives it to no request "
        "(req-wd ended withdrawn without a licence, so it is released)"
    )


def test_a_held_invoice_released_behind_the_workflows_back_is_reported(registry: EventStore) -> None:
    tamper(registry, "UPDATE invoices SET request_id = NULL WHERE invoice_key = ?", (key("HW-4"),))
    assert only(registry).problem == f"invoices row {key('HW-4')}: released but the log gives it to req-b"


def test_an_invoice_moved_to_another_buyer_is_reported(registry: EventStore) -> None:
    tamper(
        registry,
        "UPDATE invoices SET buyer = 'Alibaba Cloud', buyer_key = 'alibabacloud' WHERE invoice_key = ?",
        (key("HW-2"),),
    )
    assert only(registry).problem == (
        f"invoices row {key('HW-2')}: buyer 'Alibaba Cloud' (key 'alibabacloud') but the log gives it to "
        "buyer 'ByteDance Ltd.'"
    )


def test_an_invoice_no_event_registered_is_reported(registry: EventStore) -> None:
    tamper(
        registry,
        "INSERT INTO invoices (invoice_key, request_id, buyer, buyer_key, registered_at) "
        "SELECT 'huawei|hw9', request_id, buyer, buyer_key, registered_at FROM invoices "
        "WHERE invoice_key = ?",
        (key("HW-1"),),
    )
    assert only(registry) == Difference(
        table="invoices",
        key="huawei|hw9",
        problem="an invoices row for huawei|hw9 (held by req-lic) that no event registered",
    )


# -- the screening lists ---------------------------------------------------------------------------------


@pytest.fixture
def lists(event_store: EventStore) -> tuple[str, str]:
    first, second = csl_list(*ACME_ROWS), csl_list(ACME_ROWS[1], loaded_at=LOADED_AT + timedelta(hours=1))
    assert event_store.save_screening_list(first, by="ops")
    assert event_store.save_screening_list(second, by="ops")
    assert reconcile(event_store) == []
    return first.info.version, second.info.version


def test_a_deleted_list_in_force_is_named(event_store: EventStore, lists: tuple[str, str]) -> None:
    _, in_force = lists
    tamper(event_store, "DELETE FROM screening_lists WHERE version = ?", (in_force,))
    assert only(event_store) == Difference(
        table="screening_lists",
        key=in_force,
        problem=f"a screening_lists row {in_force} (the list in force) missing: ScreeningListLoaded "
        "event 2 of screening-lists records it",
    )


def test_edited_lists_are_named(event_store: EventStore, lists: tuple[str, str]) -> None:
    older, in_force = lists
    tamper(event_store, "UPDATE screening_lists SET data = '[]' WHERE version = ?", (in_force,))
    tamper(event_store, "UPDATE screening_lists SET entries = 7 WHERE version = ?", (older,))
    tamper(
        event_store,
        "INSERT INTO screening_lists (version, sha256, source, loaded_at, entries, names, data) "
        "SELECT 'smuggled', sha256, source, loaded_at, entries, names, data FROM screening_lists "
        "WHERE version = ?",
        (older,),
    )
    assert [(d.key, d.problem) for d in reconcile(event_store)] == [
        ("smuggled", "a screening_lists row smuggled that no ScreeningListLoaded event records"),
        (older, f"screening_lists row {older}: entries 7 but the log records 2"),
        (
            in_force,
            f"screening_lists row {in_force} (the list in force): its entries differ from the list that "
            "was loaded (entries sha256)",
        ),
    ]
