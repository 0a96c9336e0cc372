"""No payload can wedge a workflow (issue 14): refused at the door, or refused inside with one sentence.

A workflow is wedged when a workflow task fails: the server retries it forever and only a hand
`terminate` ends the request. The examples from the issue are regression tests here (a 1 MB note in a
procurement record, three 1 MB evidence files, a start that skips the client's check); the property
test sends generated requests and acts (valid and invalid, edge sizes, unicode, odd numbers) through
the client to one real worker and checks every workflow's history: no workflow task failed, and each
workflow is closed or waits, its last task completed, for a person or a timer. Nothing is left in the
store without its event (tests/wedge_check.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import string
import subprocess
import uuid
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio import workflow
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from chipclear import client as ops
from chipclear.codec import data_converter
from chipclear.contracts import ACT_UPDATE, REQUEST_WORKFLOW, ImportRequestInput, workflow_id
from chipclear.domain import bounds
from chipclear.domain.allocation import BatchSpec, OpenBatch
from chipclear.domain.commands import AddEvidence, Decide, HumanAct, RequestInfo, Respond, Withdraw
from chipclear.domain.gates import domestic_quota
from chipclear.domain.models import ImportRequest, ProcurementRecord
from chipclear.domain.policy import Policy
from chipclear.payload_limits import SUMMARY_LIMIT, PayloadTooLarge, check, encoded_size, fit, largest_field
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys
from tests.cli.test_cli import CHIPCLEAR, hermetic_env
from tests.conftest import running_worker
from tests.factories import make_policy, make_request, request_doc
from tests.wedge_check import WedgeWatch, assert_no_orphan_rows, on_deployment, task_failures, wedged
from tests.workflows.support import wait_for

US, CN, DQ = "us-export", "cn-import", "domestic-quota"
MB = 1024 * 1024


def policy() -> Policy:
    """Manual gates, every rule that asks the world on (invoices, batches) except screening."""
    return make_policy(
        "manual", cn_import={"allocate_from_batches": True}, domestic_quota={"unique_invoices": True}
    )


def quota_policy() -> Policy:
    """The first two gates pass by rule; the domestic quota waits for evidence."""
    return make_policy(
        "manual",
        us_export={"mode": "auto"},
        cn_import={"mode": "auto"},
        domestic_quota={"unique_invoices": True},
    )


def with_note(note: str, invoice: str = "LX-1") -> ProcurementRecord:
    """A procurement record carrying a free-text `note`, built as a careless client library would:
    without the model's own checks (which bound such fields), so the size check is what stops it."""
    return ProcurementRecord.model_construct(
        vendor="Lixin", product="LX-900", units=10, invoice=invoice, note=note
    )


def unchecked_evidence(*records: ProcurementRecord) -> AddEvidence:
    """Evidence built without the models' checks, as `with_note` builds its record."""
    return AddEvidence.model_construct(records=list(records))


def wide_records(count: int, prefix: str) -> list[ProcurementRecord]:
    """`count` valid records, each as large as its fields allow (about 700 bytes)."""
    return [
        ProcurementRecord(
            vendor="V" * 200, product="P" * 200, units=1, invoice=f"{prefix}-{number:04d}-" + "I" * 180
        )
        for number in range(count)
    ]


async def settle(handle: WorkflowHandle[Any, Any], within: float = 20.0) -> None:
    """Until the workflow has nothing in flight (no workflow task, no activity), or is closed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING:
            return
        raw = description.raw_description
        if raw.pending_workflow_task.attempt > 1:
            return  # retrying a failed task: wedged, and the checks below say so
        if not raw.HasField("pending_workflow_task") and not raw.pending_activities:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} did not settle within {within} s")


async def assert_can_move(handle: WorkflowHandle[Any, Any]) -> None:
    """No workflow task of the run failed, and it is closed or waits with its last task completed."""
    await settle(handle)
    assert await task_failures(handle) == []
    description = await handle.describe()
    if description.status == WorkflowExecutionStatus.RUNNING:
        assert description.raw_description.pending_workflow_task.attempt <= 1


async def not_started(client: Client, request_id: str) -> None:
    with pytest.raises(RPCError) as raised:
        await client.get_workflow_handle(workflow_id(request_id)).describe()
    assert raised.value.status == RPCStatusCode.NOT_FOUND


def test_the_field_named_is_the_one_that_makes_a_message_large() -> None:
    big = make_request().model_copy(update={"domestic_procurement": [with_note("x" * 600_000)]})
    assert largest_field(ImportRequestInput(request=big)) == "request.domestic_procurement[0].note"
    assert largest_field(AddEvidence(records=wide_records(900, "F"))) == "records"  # none big alone
    assert largest_field({"a": "x" * 100, "b": 1}) == "a" and largest_field({"a": 1}) == ""
    # The Web UI's summary is cut to the bytes the server takes, on a character boundary.
    summary = fit("字" * 300, SUMMARY_LIMIT)
    assert len(summary.encode()) <= SUMMARY_LIMIT and summary.endswith("…") and fit("short", 400) == "short"


async def test_the_check_measures_the_message_as_sent_sealed_or_not() -> None:
    """What counts is the payload after the codec: AES-GCM adds its nonce, tag and key id to each."""
    records = AddEvidence(records=wide_records(100, "S"))
    plain = await encoded_size(data_converter({}), records)
    sealed = await encoded_size(data_converter({"2026-11": bytes(32)}), records)
    assert plain > 60_000 and sealed > plain
    await check(data_converter({"2026-11": bytes(32)}), records, what="the evidence")  # well under


@pytest.fixture
async def quota_worker(
    client: Client, store: SQLiteEventStore, wedge_watch: WedgeWatch
) -> AsyncIterator[str]:
    async with running_worker(client, store, quota_policy()) as worker:
        wedge_watch.watch(store, worker.task_queue)
        yield worker.task_queue


# -- the examples -----------------------------------------------------------------------------
async def test_a_megabyte_note_is_refused_before_anything_starts(
    client: Client, store: SQLiteEventStore, quota_worker: str
) -> None:
    """Issue 14: a 1 MB `note` started the workflow, registered invoice LX-1 with no event stored, then
    failed its workflow task forever. Now the client refuses it, naming the field; nothing starts."""
    request = make_request().model_copy(update={"domestic_procurement": [with_note("x" * MB)]})
    with pytest.raises(PayloadTooLarge) as refused:
        await ops.submit(client, store, request, task_queue=quota_worker, actor="applicant")
    message = str(refused.value)
    assert message.startswith("request.domestic_procurement[0].note: too large") and len(message) <= 300
    await not_started(client, request.request_id)
    assert store.read_stream(request.request_id) == []
    assert_no_orphan_rows(store)


async def test_three_megabyte_evidence_files_are_refused_and_status_still_answers(
    client: Client, store: SQLiteEventStore, quota_worker: str
) -> None:
    """Issue 14: three 1 MB evidence files were each accepted, after which `status` failed with "Blob
    data size exceeds limit". Now each is refused (the client names the field), evidence that would
    take the request over its bound is refused by the workflow itself, and the request still answers,
    still takes a decision and still ends."""
    request = make_request(units=1_000, domestic_procurement=[])
    handle = (
        await ops.submit(
            client, store, request, task_queue=quota_worker, actor="applicant", key=keys.private("applicant")
        )
    ).handle
    waiting = await wait_for(
        client,
        request.request_id,
        lambda s: s.gate == DQ and domestic_quota.GATE.slice(s).assessment is not None,
    )

    for number in range(3):
        with pytest.raises(PayloadTooLarge, match=r"^records\[0\]\.note: too large"):
            await ops.update(
                client, request.request_id, unchecked_evidence(with_note("n" * MB, f"LX-{number}"))
            )
    with pytest.raises(PayloadTooLarge, match=r"^records: too large"):  # many records, none big alone
        await ops.update(client, request.request_id, AddEvidence(records=wide_records(1_000, "ALL")))
    assert (await ops.live_state(client, request.request_id)).version == waiting.version  # type: ignore[union-attr]

    # A client that skips the check: the workflow's validator refuses what it would record (3 copies).
    raw = keys.signed_for(
        AddEvidence(records=wide_records(1_000, "RAW")), waiting.version, request.request_id
    )
    with pytest.raises(WorkflowUpdateFailedError) as bypassed:
        await handle.execute_update(ACT_UPDATE, raw)
    assert "add_evidence refused: it would record" in str(bypassed.value.cause)

    # Evidence the client lets through, until the request would hold more than its bound.
    accepted, refusal = 0, None
    while refusal is None and accepted < 10:
        try:
            await ops.update(
                client, request.request_id, AddEvidence(records=wide_records(350, f"B{accepted}"))
            )
            accepted += 1
        except ops.Rejected as exc:
            refusal = str(exc)
    assert refusal is not None and "more than the 1.0 MiB one request may" in refusal, refusal
    assert 0 < accepted < 10
    state = await ops.live_state(client, request.request_id)  # the query answers: under the bound
    assert state is not None and bounds.state_bytes(state) <= bounds.MAX_STATE_BYTES
    await ops.update(client, request.request_id, Withdraw(reason="too much paper"))  # still moves
    assert (await handle.result()).status == "withdrawn"
    await assert_can_move(handle)
    assert_no_orphan_rows(store)


async def test_a_start_that_skips_the_client_cannot_wedge_the_request(
    client: Client, store: SQLiteEventStore, quota_worker: str
) -> None:
    """A hand-made start (another client, another release): an input the models refuse, and a request
    that would hold more than a request may. Each run fails at once saying why, having recorded and
    registered nothing; no workflow task fails."""
    bad = request_doc(units="lots")
    oversized = make_request(domestic_procurement=wide_records(1_000, "BIG"))
    cases = [
        (bad["request_id"], {"request": bad, "actor": "someone"}, "not a request this release accepts"),
        (oversized.request_id, ImportRequestInput(request=oversized, actor="someone"), "submit refused:"),
    ]
    for request_id, start, expected in cases:
        handle = await client.start_workflow(
            REQUEST_WORKFLOW, start, id=workflow_id(request_id), task_queue=quota_worker
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        assert isinstance(failed.value.cause, ApplicationError) and expected in failed.value.cause.message
        assert len(failed.value.cause.message) <= 300
        await assert_can_move(handle)
        assert store.read_stream(request_id) == []
    assert_no_orphan_rows(store)


async def test_cli_submit_of_a_megabyte_note_exits_2_and_starts_nothing(
    client: Client, store: SQLiteEventStore, tmp_path: Path, signing_home: Path
) -> None:
    document = request_doc()
    document["domestic_procurement"][0]["note"] = "x" * MB
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    env = hermetic_env(
        TEMPORAL_ADDRESS=client.service_client.config.target_host,
        CHIPCLEAR_HOME=str(signing_home),
        CHIPCLEAR_EVENT_STORE=f"sqlite:///{store.path}",
        CHIPCLEAR_TASK_QUEUE=f"test-{uuid.uuid4().hex[:12]}",
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [str(CHIPCLEAR), "submit", str(path), "--actor", "someone"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    # Refused at the door (the input gate's file size, or the client's payload check naming the field).
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")
    assert len(result.stderr.splitlines()) == 1 and len(result.stderr) <= 400  # the value never echoed
    await not_started(client, document["request_id"])


@workflow.defn(name="WedgesOnPurpose")
class WedgesOnPurpose:
    """A workflow whose every task fails: what the checks below must see."""

    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("a bug, on purpose")


async def seen_wedged(client: Client, queue: str, within: float = 20.0) -> list[str]:
    """`wedged` for the queue, asked until it reports something (the list of workflows lags a little)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    stuck = await wedged(client, on_deployment(queue))
    while not stuck and loop.time() < deadline:
        await asyncio.sleep(0.2)
        stuck = await wedged(client, on_deployment(queue))
    return stuck


async def test_the_checks_see_a_wedged_workflow(client: Client) -> None:
    """The checks the property test and the session's end rely on do report a wedge."""
    queue = f"test-{uuid.uuid4().hex[:12]}"
    async with Worker(
        client, task_queue=queue, workflows=[WedgesOnPurpose], workflow_runner=UnsandboxedWorkflowRunner()
    ):
        handle = await client.start_workflow(WedgesOnPurpose.run, id=f"wedged-{queue}", task_queue=queue)
        stuck = await seen_wedged(client, queue)
        try:
            assert stuck and handle.id in stuck[0]
            assert any("a bug, on purpose" in failure for failure in await task_failures(handle))
        finally:
            await handle.terminate("the wedge check saw it")


# -- the property: whatever is sent, no workflow task fails --------------------------------------------
# Characters a careless user or an attacker puts in text: controls, ANSI, bidi, zero-width, CJK, emoji.
HOSTILE = "\x1b[2J\x07\x9b\u202e\u2066\u200b\ufeff\u0301é中文🚀'\"\\=+-@<>{}$%"
TEXT = st.text(
    alphabet=st.sampled_from(HOSTILE) | st.sampled_from(string.ascii_letters + " "), min_size=0, max_size=30
)
NAMES = st.one_of(TEXT, st.text(alphabet="Aé中", min_size=195, max_size=205))  # around the 200 limit
UNITS = st.one_of(
    st.integers(min_value=-2, max_value=3),
    st.integers(min_value=999_998, max_value=10_000_002),
    st.sampled_from([2**31, 2**63, 2**70]),
)
GATES = st.sampled_from([US, US, CN, DQ, "nowhere", "US-EXPORT"])
REVIEWERS = st.sampled_from(["alice", "wang", "bob", "applicant"])


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a value the models take, sometimes an odd one: most examples get past the door."""
    # About one draw in sixteen is odd (13 is no boundary value, which hypothesis favours).
    return st.integers(0, 15).flatmap(lambda n: odd if n == 13 else usual)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    record = {
        "vendor": draw(mostly(st.sampled_from(["Huawei", "Cambricon"]), NAMES)),
        "product": draw(mostly(st.just("Ascend 910C"), TEXT)),
        "units": draw(mostly(st.integers(1, 100_000), UNITS)),
        "invoice": draw(
            mostly(st.builds(lambda: f"INV-{uuid.uuid4().hex[:8]}"), st.sampled_from(["LX-1", "HW-1"]) | TEXT)
        ),
    }
    if draw(st.booleans()):
        record["invoice_date"] = draw(
            st.sampled_from(["2026-01-15", "0001-01-01", "2999-12-31", "2026-02-30"])
        )
    if draw(st.integers(0, 9)) == 0:
        record["note"] = draw(st.sampled_from(["a short note", "n" * 4096, "n" * 300 * 1024]))
    return record


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    buyer = {
        "name": draw(mostly(st.sampled_from(["ByteDance Ltd.", "阿里巴巴集团", "Tencent"]), NAMES)),
        "country": draw(mostly(st.just("CN"), st.sampled_from(["ZZ", "cn"]))),
        "kind": draw(mostly(st.just("private"), st.sampled_from(["military", "state_owned", "alien"]))),
    }
    return request_doc(
        request_id=f"nw-{uuid.uuid4().hex[:10]}",
        buyer=buyer,
        end_use=draw(mostly(st.just("training"), TEXT)),
        units=draw(mostly(st.integers(1, 100_000), UNITS)),
        unit_price_usd=draw(mostly(st.just(32_000), st.sampled_from([1e308, float("inf"), -1]))),
        domestic_procurement=draw(st.lists(records(), max_size=3)),
    )


def acts() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.one_of(
        st.tuples(
            st.just("decide"),
            st.fixed_dictionaries(
                {
                    "gate": GATES,
                    "reviewer": REVIEWERS,
                    "approve": st.booleans(),
                    "units": st.none() | mostly(st.integers(1, 1_000), UNITS),
                    "reason": mostly(st.just("checked"), st.none() | TEXT),
                    "conditions": st.lists(TEXT, max_size=2),
                }
            ),
        ),
        st.tuples(
            st.just("request_info"),
            st.fixed_dictionaries(
                {"gate": GATES, "reviewer": REVIEWERS, "question": mostly(st.just("which entity?"), TEXT)}
            ),
        ),
        st.tuples(st.just("respond"), st.fixed_dictionaries({"text": mostly(st.just("here it is"), TEXT)})),
        st.tuples(
            st.just("add_evidence"), st.fixed_dictionaries({"records": st.lists(records(), max_size=3)})
        ),
        st.tuples(
            st.just("bulk_evidence"), st.fixed_dictionaries({"count": st.sampled_from([100, 350, 800])})
        ),
        st.tuples(
            st.just("withdraw"), st.fixed_dictionaries({"reason": mostly(st.just("no longer needed"), TEXT)})
        ),
        st.tuples(
            st.just("open_batch"),
            st.fixed_dictionaries(
                {
                    "batch_id": st.sampled_from(["B1", "B-2", "bad id"]),
                    "capacity": mostly(st.integers(1, 10_000), UNITS),
                    "priority": st.lists(NAMES, max_size=2),
                }
            ),
        ),
    )


ACTS: dict[str, type[HumanAct]] = {
    "decide": Decide,
    "request_info": RequestInfo,
    "respond": Respond,
    "add_evidence": AddEvidence,
    "withdraw": Withdraw,
}
# What the door (the models, the client's size check) and the rules may answer: anything else fails.
REFUSALS = (ValidationError, PayloadTooLarge, ops.Rejected, ops.NotFound, ops.Conflict)


async def send(
    client: Client, store: SQLiteEventStore, queue: str, request_id: str, kind: str, fields: dict[str, Any]
) -> None:
    if kind == "open_batch":
        spec = BatchSpec.model_validate(
            {k: v for k, v in fields.items() if k != "priority"} | {"priority": fields["priority"]}
        )
        await ops.open_batch(client, queue, OpenBatch(batch=spec, actor="wang"), key=keys.private("wang"))
        return
    if kind == "bulk_evidence":  # many records as large as their fields allow: the size bounds
        fields = {"records": wide_records(fields["count"], uuid.uuid4().hex[:6])}
        kind = "add_evidence"
    command = ACTS[kind].model_validate(fields)
    await ops.update(client, request_id, command, key=keys.private(command.person))


@pytest.mark.slow
async def test_no_generated_request_or_act_fails_a_workflow_task(
    client: Client, store: SQLiteEventStore, wedge_watch: WedgeWatch
) -> None:
    loop = asyncio.get_running_loop()
    started: list[str] = []
    accepted: list[str] = []

    def on_loop(coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=120)

    async with running_worker(client, store, policy()) as worker:
        queue = worker.task_queue
        wedge_watch.watch(store, queue)

        async def example(document: dict[str, Any], steps: list[tuple[str, dict[str, Any]]]) -> None:
            try:
                request = ImportRequest.model_validate(document)
            except ValidationError:
                return  # refused at the door: nothing can start
            try:
                submission = await ops.submit(
                    client, store, request, task_queue=queue, actor="applicant", key=keys.private("applicant")
                )
            except PayloadTooLarge:
                await not_started(client, request.request_id)
                return
            started.append(request.request_id)
            await settle(submission.handle)
            for kind, fields in steps:
                with contextlib.suppress(*REFUSALS):
                    await send(client, store, queue, request.request_id, kind, fields)
                    accepted.append(kind)
            await assert_can_move(submission.handle)

        @settings(
            max_examples=100,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(document=requests(), steps=st.lists(acts(), min_size=1, max_size=6))
        def each(document: dict[str, Any], steps: list[tuple[str, dict[str, Any]]]) -> None:
            on_loop(example(document, steps))

        await asyncio.to_thread(each)
        # The examples reach the workflows: requests started and acts recorded, not only refusals.
        assert len(started) >= 10 and len(accepted) >= 5, (started, accepted)
    assert_no_orphan_rows(store)
