"""Saved histories replay on today's workflow code; fresh ones replay deterministically.

Each workflow type has a folder of saved histories under tests/histories/: `import-request/`
(ImportRequest), `allocation-ledger/` (CnImportAllocation), `licence/` and `exporter/`, one JSON file
per history, each recorded from a real run of a scenario below. Every
saved history is replayed with a Replayer carrying the production workflows and chipclear's data
converter: a change to workflow code that makes one fail needs a `workflow.patched` marker (see
docs/versioning.md).

Re-recording: set CHIPCLEAR_RECORD_HISTORIES=1 and the scenarios write their histories as they run,

    CHIPCLEAR_RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/test_replay.py -k fresh

or `-k "fresh and exporter"` for one folder, `-k "fresh and expired"` for one scenario. A scenario writes
`<folder>/<scenario>.json`, or `<folder>/<scenario>.run<N>.json` per run for an entity that continued
as new (its older run files are removed first). Recording overwrites a scenario's own files: to keep
the one saved before a change, copy it to a name of its own first (`expired.before-<patch-id>.json`);
every JSON file in a folder is replayed. docs/versioning.md has the rule.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer

from activities.events import EventActivities, InvoiceOwners
from activities.store_calls import STORE_UNAVAILABLE
from chipclear import client as ops
from chipclear.contracts import (
    EXPORTER_WORKFLOW,
    LEDGER_WORKFLOW,
    LICENCE_WORKFLOW,
    REQUEST_WORKFLOW,
    LedgerInput,
    entity_queue,
    exporter_workflow_id,
    home_queue,
    ledger_id,
    licence_workflow_id,
)
from chipclear.domain.allocation import BatchSpec, OpenBatch
from chipclear.domain.commands import AddEvidence, ClearScreeningHold, RequestInfo, Respond, Withdraw
from chipclear.domain.facts import RegisterInvoices
from chipclear.domain.gates import cn_import, domestic_quota, us_export
from chipclear.domain.licence import ReinstateLicence, SuspendLicence
from chipclear.domain.models import ProcurementRecord, Status
from chipclear.domain.state import RequestState
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.temporal import DATA_CONVERTER
from chipclear.worker import ALL_WORKFLOWS, workflow_runner
from tests.conftest import running_worker
from tests.factories import make_policy, make_request
from tests.wedge_check import assert_no_orphan_rows
from tests.workflows import licences as licence_tests
from tests.workflows import test_rescreening as rescreening_tests
from tests.workflows.support import (
    at_gate,
    decision,
    ledger_through_runs,
    settled_history_length,
    start,
    wait_for,
)
from workflows.options import LOCAL_STORE_RETRY

HISTORIES = Path(__file__).parents[1] / "histories"
REQUEST, LEDGER = "import-request", "allocation-ledger"
LICENCE, EXPORTER = "licence", "exporter"
FOLDERS = (REQUEST, LEDGER, LICENCE, EXPORTER)
RECORD = os.environ.get("CHIPCLEAR_RECORD_HISTORIES", "") not in ("", "0")

US, CN, DQ = us_export.NAME, cn_import.NAME, domestic_quota.NAME

# A scenario runs on a fresh worker and returns the histories it made: {file stem: history}.
Recorded = dict[str, WorkflowHistory]
Scenario = Callable[[Client, SQLiteEventStore], Awaitable[Recorded]]


def replayer() -> Replayer:
    """What production runs: every workflow the worker registers, and the converter as stored."""
    return Replayer(
        workflows=list(ALL_WORKFLOWS), data_converter=DATA_CONVERTER, workflow_runner=workflow_runner()
    )


def assessed(state: RequestState) -> bool:
    return domestic_quota.GATE.slice(state).assessment is not None


def with_invoice(invoice: str, units: int = 60_000) -> list[dict[str, Any]]:
    """Own domestic evidence under an invoice no other request of the scenario uses."""
    return [{"vendor": "Huawei", "product": "Ascend 910C", "units": units, "invoice": invoice}]


async def history_of(handle: WorkflowHandle[Any, Any]) -> WorkflowHistory:
    """The handle's run's history once it has stopped moving."""
    await settled_history_length(handle)
    return await handle.fetch_history()


async def every_run(client: Client, workflow_id: str, first_run_id: str | None) -> list[WorkflowHistory]:
    """An entity's history, one per run from `first_run_id`, following each continue-as-new."""
    histories = []
    run_id = first_run_id
    while True:
        history = await history_of(client.get_workflow_handle(workflow_id, run_id=run_id))
        histories.append(history)
        last = history.events[-1]
        if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            return histories
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id


def runs(name: str, histories: list[WorkflowHistory]) -> Recorded:
    if len(histories) == 1:
        return {name: histories[0]}
    return {f"{name}.run{number}": history for number, history in enumerate(histories, start=1)}


# -- import-request -----------------------------------------------------------------------------------
async def _manual_withdrawn(client: Client, store: SQLiteEventStore) -> Recorded:
    request = make_request(request_id="history-manual-withdrawn")
    async with running_worker(client, store, make_policy("manual")) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, at_gate(US))
        await ops.update(client, request.request_id, decision(US, "alice", units=40_000))
        await ops.update(client, request.request_id, Withdraw(reason="replay me"))
        assert (await handle.result()).status == Status.WITHDRAWN
        return {"manual-withdrawn": await history_of(handle)}


async def _auto_evidence(client: Client, store: SQLiteEventStore) -> Recorded:
    request = make_request(
        request_id="history-auto-evidence",
        units=40_000,
        domestic_procurement=[{"vendor": "Huawei", "product": "Ascend", "units": 10_000, "invoice": "H-1"}],
    )
    async with running_worker(client, store, make_policy("auto")) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, assessed)
        more = ProcurementRecord(vendor="Huawei", product="Ascend", units=30_000, invoice="H-2")
        await ops.update(client, request.request_id, AddEvidence(records=[more]))
        assert (await handle.result()).status == Status.LICENSED
        return {"auto-evidence": await history_of(handle)}


async def _expired(client: Client, store: SQLiteEventStore) -> Recorded:
    request = make_request(request_id="history-expired")
    policy = make_policy("manual", us_export={"decision_deadline": "PT1S"})
    async with running_worker(client, store, policy) as worker:
        handle = await start(client, store, worker, request)
        assert (await handle.result()).status == Status.EXPIRED
        return {"expired": await history_of(handle)}


async def _allocation_released(client: Client, store: SQLiteEventStore) -> Recorded:
    """Units reserved from a batch, then given back when the domestic quota denies the request."""
    request = make_request(
        request_id="history-allocation-released",
        units=500,
        data_center={"name": "Hub", "province": "Ningxia", "state_funded": True},
    )
    policy = make_policy("auto", cn_import={"allocate_from_batches": True})
    async with running_worker(client, store, policy) as worker:
        batch = BatchSpec(batch_id="H1", capacity=1_000)
        await ops.open_batch(client, worker.task_queue, OpenBatch(batch=batch, actor="wang"))
        handle = await start(client, store, worker, request)
        assert (await handle.result()).status == Status.DENIED
        types = [event.type for event in store.read_stream(request.request_id)]
        assert "AllocationGranted" in types and "AllocationReleased" in types, types
        return {"allocation-released": await history_of(handle)}


US_EXPORT_IN_DEPTH = {
    "screening": True,
    "max_units_per_buyer": 75_000,
    "default_conditions": ["KYC of the consignee"],
}


async def _held_asked_approved_withdrawn(client: Client, store: SQLiteEventStore) -> Recorded:
    """Screening hold, a question and its answer, a capped approval, then withdrawal: the claim's
    units go back to the buyer."""
    request = make_request(
        request_id="history-us-export-held",
        units=20_000,
        buyer={"name": "Huawei Technologies Co., Ltd.", "country": "CN", "kind": "private"},
    )
    policy = make_policy("manual", us_export=US_EXPORT_IN_DEPTH)
    async with running_worker(client, store, policy) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, us_export.on_hold)
        ask = RequestInfo(gate=US, reviewer="alice", question="Which entity is the buyer?")
        await ops.update(client, request.request_id, ask)
        await ops.update(client, request.request_id, Respond(text="A different, unlisted one"))
        reason = "counsel confirmed a different entity"
        await ops.update(client, request.request_id, decision(US, "alice", reason=reason))
        await ops.update(client, request.request_id, Withdraw(reason="replay me"))
        assert (await handle.result()).status == Status.WITHDRAWN
        types = [event.type for event in store.read_stream(request.request_id)]
        assert types[-1] == "ExportApprovalReleased", types
        return {"us-export-held": await history_of(handle)}


async def _searchable(client: Client, store: SQLiteEventStore) -> Recorded:
    """With the Web UI's search attributes on: a question and its answer change nothing they index, so
    (since the patch `upsert-when-changed`) those steps upsert nothing; the withdrawal does."""
    request = make_request(request_id="history-searchable", units=20_000)
    async with running_worker(client, store, make_policy("manual"), search_attributes=True) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, at_gate(US))
        ask = RequestInfo(gate=US, reviewer="alice", question="Which data centre?")
        await ops.update(client, request.request_id, ask)
        await ops.update(client, request.request_id, Respond(text="Wuhu Cluster 3"))
        await ops.update(client, request.request_id, Withdraw(reason="replay me"))
        assert (await handle.result()).status == Status.WITHDRAWN
        return {"searchable": await history_of(handle)}


async def _escalated_expired(client: Client, store: SQLiteEventStore) -> Recorded:
    request = make_request(request_id="history-us-export-escalated")
    timeline = {"review_sla": "PT1S", "decision_deadline": "PT3S"}
    policy = make_policy("manual", us_export=US_EXPORT_IN_DEPTH | timeline)
    async with running_worker(client, store, policy) as worker:
        handle = await start(client, store, worker, request)
        assert (await handle.result()).status == Status.EXPIRED
        assert "ReviewEscalated" in [event.type for event in store.read_stream(request.request_id)]
        return {"us-export-escalated": await history_of(handle)}


async def _evidence_judged(client: Client, store: SQLiteEventStore) -> Recorded:
    """Evidence judged record by record through the invoice registry, short, then made up."""
    request = make_request(
        request_id="history-evidence-judged",
        units=20_000,
        domestic_procurement=[
            {"vendor": "Huawei", "product": "Ascend 910C", "units": 10_000, "invoice": "HJ-1"},
            {"vendor": "NVIDIA", "product": "H20", "units": 10_000, "invoice": "NV-1"},
        ],
    )
    vendors = {"Huawei": {"domestic": True}, "NVIDIA": {"domestic": False}}
    policy = make_policy("auto", domestic_quota={"unique_invoices": True, "vendors": vendors})
    async with running_worker(client, store, policy) as worker:
        handle = await start(client, store, worker, request)
        held = await wait_for(client, request.request_id, assessed)
        assert domestic_quota.GATE.slice(held).rejected_evidence  # the NVIDIA record did not count
        more = ProcurementRecord(vendor="Huawei", product="Ascend 910B", units=10_000, invoice="HJ-2")
        await ops.update(client, request.request_id, AddEvidence(records=[more]))
        assert (await handle.result()).status == Status.LICENSED
        return {"evidence-judged": await history_of(handle)}


async def _withdrawn_under_cap_and_registry(client: Client, store: SQLiteEventStore) -> Recorded:
    """Withdrawn before any claim, under a buyer cap and the invoice registry: both are given back."""
    request = make_request(request_id="history-withdrawn-registry")
    policy = make_policy(
        "manual",
        us_export={"max_units_per_buyer": 75_000},
        domestic_quota={"unique_invoices": True},
    )
    async with running_worker(client, store, policy) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, at_gate(US))
        await ops.update(client, request.request_id, Withdraw(reason="replay me"))
        assert (await handle.result()).status == Status.WITHDRAWN
        return {"withdrawn-registry": await history_of(handle)}


async def _refused_before_facts(client: Client, store: SQLiteEventStore) -> Recorded:
    """A registered person's unsigned submission with invoices: refused, and (since the patch
    `refuse-before-facts`) refused before anything is registered, so no invoice is left without an event."""
    request = make_request(
        request_id="history-refused-before-facts", domestic_procurement=with_invoice("RB-1")
    )
    policy = make_policy("manual", domestic_quota={"unique_invoices": True})
    async with running_worker(client, store, policy) as worker:
        submission = await ops.submit(client, store, request, task_queue=worker.task_queue, actor="applicant")
        with pytest.raises(WorkflowFailureError):
            await submission.handle.result()
        assert store.read_stream(request.request_id) == []
        assert_no_orphan_rows(store)  # no invoice is left registered to it
        return {"refused-before-facts": await history_of(submission.handle)}


async def _store_outage(client: Client, store: SQLiteEventStore) -> Recorded:
    """Invoice registration fails every attempt of its first call (the store away): the workflow waits
    (the `wait-out-outages` patch) and registers again, then goes on to its licence."""
    request = make_request(request_id="history-store-outage", units=40_000)
    policy = make_policy("auto", domestic_quota={"unique_invoices": True})
    real = EventActivities(store, policy)
    calls: list[int] = []

    @activity.defn(name="register_invoices")
    def register_invoices(input: RegisterInvoices) -> InvoiceOwners:
        calls.append(activity.info().attempt)
        if len(calls) <= LOCAL_STORE_RETRY.maximum_attempts:
            raise ApplicationError("the event store is away", type=STORE_UNAVAILABLE)
        return real.register_invoices(input)

    async with running_worker(client, store, policy, replace=[register_invoices]) as worker:
        handle = await start(client, store, worker, request)
        assert (await handle.result()).status == Status.LICENSED
        history = await history_of(handle)
    assert len(calls) == LOCAL_STORE_RETRY.maximum_attempts + 1, calls
    timers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
    assert len(timers) == 1, "the workflow was meant to wait once, on a timer"
    return {"store-outage": history}


# -- allocation-ledger --------------------------------------------------------------------------------
def _buyer(name: str) -> dict[str, str]:
    return {"name": name, "country": "CN", "kind": "private"}


async def _ledger_batches_queue_release(client: Client, store: SQLiteEventStore) -> Recorded:
    """The ledger grants, grants in part, queues; a new batch serves the queue; withdrawals give units
    back and the queue is served from them. A small history limit makes it continue as new."""
    policy = make_policy("manual", us_export={"mode": "auto"}, cn_import={"allocate_from_batches": True})
    requests = [
        make_request(
            request_id=f"history-ledger-{i}",
            buyer=_buyer(name),
            units=units,
            domestic_procurement=with_invoice(f"LEDGER-{i}"),
        )
        for i, (name, units) in enumerate(
            [("ByteDance Ltd.", 600), ("JD.com, Inc.", 600), ("Kuaishou", 300), ("Baidu Inc.", 200)]
        )
    ]
    async with running_worker(client, store, policy) as worker:
        queue = worker.task_queue
        ledger = await client.start_workflow(
            LEDGER_WORKFLOW,
            LedgerInput(history_limit=40),
            id=ledger_id(queue),
            task_queue=entity_queue(queue),
        )
        first_run = ledger.result_run_id

        def allocated(state: RequestState) -> bool:
            return cn_import.GATE.slice(state).allocation is not None

        await ops.open_batch(
            client, queue, OpenBatch(batch=BatchSpec(batch_id="L1", capacity=1_000), actor="wang")
        )
        handles: list[WorkflowHandle[Any, Any]] = []
        for request in requests:  # one at a time: granted, partial, queued, queued
            handles.append(await start(client, store, worker, request))
            await wait_for(client, request.request_id, allocated)
        served = await ops.open_batch(
            client, queue, OpenBatch(batch=BatchSpec(batch_id="L2", capacity=300), actor="wang")
        )
        assert served.served == [requests[2].request_id], served
        await wait_for(client, requests[2].request_id, lambda s: s.status == "cn_import_review")
        # The first request's 600 units go back to L1 and serve the one still queued.
        await ops.update(client, requests[0].request_id, Withdraw(reason="replay me"))
        await wait_for(client, requests[3].request_id, lambda s: s.status == "cn_import_review")
        for request in requests[1:]:
            await ops.update(client, request.request_id, Withdraw(reason="replay me"))
        for handle in handles:
            assert (await handle.result()).status == Status.WITHDRAWN
        histories = await every_run(client, ledger_id(queue), first_run)
    assert len(histories) >= 2, "the ledger was meant to continue as new"
    return runs("batches-queue-release", histories)


async def _ledger_settles(client: Client, store: SQLiteEventStore) -> Recorded:
    """A licensed request and a denied one (its units given back) in the ledger's first run; reservations
    of no real request push it through a second run, which carried both in and settles them as it ends
    (patch `ledger-settles`), and into a third."""
    policy = make_policy("auto", cn_import={"allocate_from_batches": True})
    async with running_worker(client, store, policy) as worker:
        ledger, run_ids, _ = await ledger_through_runs(client, store, worker, history_limit=60)
        histories = await every_run(client, ledger, run_ids[0])
    return runs("settles", histories)


async def _licence_used_up(client: Client, store: SQLiteEventStore, name: str) -> tuple[Recorded, Recorded]:
    """A licence drawn down: a shipment refused by the 50% rule, the US figures declared, a shipment,
    a suspension and reinstatement, the rest shipped; the licence's and the exporter's histories."""
    request = make_request(request_id=f"history-{name}", units=300)
    async with running_worker(client, store, make_policy("auto")) as worker:
        handle = await start(client, store, worker, request)
        assert (await handle.result()).status == Status.LICENSED
        rig = licence_tests.Rig(client, store, worker)
        # Its first act opens it (update-with-start), as the CLI's would.
        with pytest.raises(ops.Rejected, match="50%"):
            await rig.ship(request.request_id, "S0", 100)
        await rig.declare(1_000)
        await rig.ship(request.request_id, "S1", 100, declaration="310120261234567890")
        await rig.act(request.request_id, SuspendLicence(actor="alice", reason="check"))
        await rig.act(request.request_id, ReinstateLicence(actor="alice", reason="ok"))
        await rig.ship(request.request_id, "S2", 200)
        licence = client.get_workflow_handle(licence_workflow_id(request.request_id))
        await licence.result()
        exporter = exporter_workflow_id(licence_tests.EXPORTER, worker.task_queue)
        exporter_runs = await every_run(client, exporter, None)
        return {"used-up": await history_of(licence)}, runs("declared-and-counted", exporter_runs)


async def _rescreened_held(client: Client, store: SQLiteEventStore) -> Recorded:
    """A request under review held by a new list, cleared by a reviewer, then withdrawn."""
    request = make_request(
        request_id="history-rescreened",
        buyer={"name": rescreening_tests.HELD_LATER, "country": "CN", "kind": "private"},
    )
    async with running_worker(client, store, make_policy("manual", us_export={"screening": True})) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, at_gate(US))
        listing = rescreening_tests.new_list()
        store.save_screening_list(listing, by="ops")
        await (await ops.start_rescreening(client, worker.task_queue, listing.info.version)).result()
        await ops.update(
            client, request.request_id, ClearScreeningHold(reviewer="alice", reason="a namesake")
        )
        await ops.update(client, request.request_id, Withdraw(reason="replay me"))
        assert (await handle.result()).status == Status.WITHDRAWN
        types = [event.type for event in store.read_stream(request.request_id)]
        assert "PartiesRescreened" in types and "ScreeningHoldCleared" in types, types
        return {"rescreened-held": await history_of(handle)}


async def _licence(client: Client, store: SQLiteEventStore) -> Recorded:
    return (await _licence_used_up(client, store, "licence"))[0]


async def _exporter(client: Client, store: SQLiteEventStore) -> Recorded:
    return (await _licence_used_up(client, store, "exporter"))[1]


async def _exporter_settles(client: Client, store: SQLiteEventStore) -> Recorded:
    """Shipments counted in the exporter's first run, carried into its second and settled as it ends
    (patch `exporter-settles`); more shipments push it into a third."""
    async with running_worker(client, store, make_policy("auto")) as worker:
        rig = licence_tests.Rig(client, store, worker)
        exporter, run_ids, _ = await licence_tests.exporter_through_runs(rig, history_limit=30)
        histories = await every_run(client, exporter, run_ids[0])
    return runs("settles", histories)


SCENARIOS: dict[str, dict[str, Scenario]] = {
    REQUEST: {
        "manual-withdrawn": _manual_withdrawn,
        "auto-evidence": _auto_evidence,
        "expired": _expired,
        "allocation-released": _allocation_released,
        "us-export-held": _held_asked_approved_withdrawn,
        "us-export-escalated": _escalated_expired,
        "evidence-judged": _evidence_judged,
        "withdrawn-registry": _withdrawn_under_cap_and_registry,
        "refused-before-facts": _refused_before_facts,
        "store-outage": _store_outage,
        "rescreened-held": _rescreened_held,
        "searchable": _searchable,
    },
    LEDGER: {"batches-queue-release": _ledger_batches_queue_release, "settles": _ledger_settles},
    LICENCE: {"used-up": _licence},
    EXPORTER: {"declared-and-counted": _exporter, "settles": _exporter_settles},
}


def _saved(folder: str) -> list[Path]:
    return sorted((HISTORIES / folder).glob("*.json"))


def _record(folder: str, scenario: str, recorded: Recorded) -> None:
    target = HISTORIES / folder
    target.mkdir(parents=True, exist_ok=True)
    for stale in [target / f"{scenario}.json", *target.glob(f"{scenario}.run*.json")]:
        stale.unlink(missing_ok=True)
    for stem, history in recorded.items():
        (target / f"{stem}.json").write_text(history.to_json())


@pytest.mark.parametrize(
    ("folder", "scenario"),
    [(folder, scenario) for folder, scenarios in SCENARIOS.items() for scenario in scenarios],
    ids=lambda value: value,
)
async def test_fresh_histories_replay_deterministically(
    client: Client, store: SQLiteEventStore, folder: str, scenario: str
) -> None:
    recorded = await SCENARIOS[folder][scenario](client, store)
    assert recorded
    if RECORD:
        _record(folder, scenario, recorded)
    for history in recorded.values():
        await replayer().replay_workflow(history)


@pytest.mark.parametrize(
    "path",
    [path for folder in FOLDERS for path in _saved(folder)],
    ids=lambda path: f"{path.parent.name}/{path.stem}",
)
async def test_saved_histories_still_replay(path: Path) -> None:
    """Histories recorded by earlier code must replay on today's (or the change needs a patch)."""
    history = WorkflowHistory.from_json(_workflow_id(path), path.read_text())
    await replayer().replay_workflow(history)


def _workflow_id(path: Path) -> str:
    """The id the history ran under where the workflow's behaviour depends on it: the ledger's stream
    (which its batch openings are signed for) is named after its id, itself named after its queue."""
    probe = WorkflowHistory.from_json("probe", path.read_text())
    # An entity runs on its deployment's entity queue (or once ran on the main one): named after the main.
    queue = home_queue(probe.events[0].workflow_execution_started_event_attributes.task_queue.name)
    if path.parent.name == LEDGER:
        return ledger_id(queue)
    if path.parent.name == EXPORTER:
        return exporter_workflow_id(licence_tests.EXPORTER, queue)
    return f"{path.parent.name}-{path.stem}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_workflow_type_has_saved_histories(folder: str) -> None:
    stems = {path.stem for path in _saved(folder)}
    assert stems, f"tests/histories/{folder}/ holds no saved history"
    for scenario in SCENARIOS[folder]:
        assert scenario in stems or any(stem.startswith(f"{scenario}.run") for stem in stems), (
            f"{folder}/{scenario}: no saved history; record it (see this module's docstring)"
        )


def test_histories_live_in_a_folder_per_workflow_type() -> None:
    # Loose files at the top were recorded before 1.0 with patches that no longer exist.
    assert sorted(path.name for path in HISTORIES.glob("*.json")) == []
    assert sorted(path.name for path in HISTORIES.iterdir() if path.is_dir()) == sorted(FOLDERS)


def test_saved_histories_are_of_their_folders_workflow_type() -> None:
    types = {
        REQUEST: REQUEST_WORKFLOW,
        LEDGER: LEDGER_WORKFLOW,
        LICENCE: LICENCE_WORKFLOW,
        EXPORTER: EXPORTER_WORKFLOW,
    }
    for folder in FOLDERS:
        for path in _saved(folder):
            history = WorkflowHistory.from_json(path.stem, path.read_text())
            started = history.events[0].workflow_execution_started_event_attributes
            assert started.workflow_type.name == types[folder], path
