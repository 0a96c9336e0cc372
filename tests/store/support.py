"""What the store's conformance suites share: real event batches, backends, and a raw database handle.

Events are never hand-written when the decider can produce them: each scenario plays real commands
through `decide` and `fold`, so the store is exercised with the batches the workflow really appends.
`Raw` reaches behind the interfaces (plain SQL on the database) to play an attacker or an operator
with database access.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from chipclear.domain.allocation import UnitsGranted
from chipclear.domain.commands import AddEvidence, Command, Evaluate, Expire, PersonAct, Submit, Withdraw
from chipclear.domain.events import Event, RequestWithdrawn, StoredEvent
from chipclear.domain.models import ProcurementRecord, Status
from chipclear.domain.policy import DEFAULT_ROUTE, Policy
from chipclear.domain.state import RequestState
from chipclear.projections import PROJECTIONS, REQUESTS, open_event_store
from chipclear.store.postgres import PostgresEventStore, split_url
from chipclear.store.protocol import AppendResult, EventLog, EventStore
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys
from tests.decisions import Ids, Run
from tests.factories import make_policy, make_request

BACKENDS = ["sqlite", "postgresql"]
# Every store a test opens seals with the test recorder key, as a worker seals with its own; the
# policies of tests.factories trust it.
RECORDER = keys.private(keys.RECORDER)
NOW = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)
AUTO = make_policy("auto")
MANUAL = make_policy("manual")

# -- scenarios: real event batches from the pure decider ---------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Scenario:
    request_id: str
    batches: list[list[Event]]
    state: RequestState  # the fold of every batch: what the store must end up holding

    @property
    def events(self) -> list[Event]:
        return [event for batch in self.batches for event in batch]


Step = tuple[timedelta, Command]


class UniqueIds(Ids):
    """Event ids unique across every scenario in one store (its `event_id` column is unique)."""

    def __call__(self) -> str:
        return new_id()


def play(policy: Policy, steps: Sequence[Step], *, start: datetime = NOW) -> Scenario:
    """Run commands through `needs` and `decide` (tests.decisions), one batch per command that emits
    events, as the workflow does."""
    run = Run(policy, now=start, new_id=UniqueIds())
    batches = [events for offset, command in steps if (events := run.send(command, at=start + offset))]
    return Scenario(request_id=run.request_id, batches=batches, state=run.state)


Act = TypeVar("Act", bound=PersonAct)


def signed(command: Act, state: RequestState) -> Act:
    """A person's command signed as the client signs it, for the version the state is at."""
    assert state.request_id is not None
    return keys.signed_for(command, state.version, state.request_id)


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def evaluations(*gates: str) -> list[Step]:
    return [(minutes(i), Evaluate(gate=gate)) for i, gate in enumerate(gates, start=1)]


US_EXPORT, CN_IMPORT, DOMESTIC_QUOTA = ALL_GATES = DEFAULT_ROUTE
SHORT_EVIDENCE = [{"vendor": "Huawei", "product": "Ascend 910C", "units": 1_000, "invoice": "HW-1"}]
MORE_EVIDENCE = ProcurementRecord(vendor="Cambricon", product="MLU590", units=49_000, invoice="CB-7")
EXPECTED_STATUS: dict[str, str] = {
    "licensed": Status.LICENSED,
    "denied": Status.DENIED,
    "quota_pending": "domestic_quota_review",
    "licensed_after_evidence": Status.LICENSED,
    "awaiting_review": "us_export_review",
    "withdrawn": Status.WITHDRAWN,
    "expired": Status.EXPIRED,
}
KINDS = list(EXPECTED_STATUS)


def scenario(kind: str, request_id: str | None = None, *, start: datetime = NOW) -> Scenario:
    """A request's whole event history; `kind` is one of `KINDS`."""
    ident = {"request_id": request_id} if request_id else {}
    match kind:
        case "licensed":  # 4 batches, 9 events
            request = make_request(**ident)
            steps = [(minutes(0), Submit(request=request)), *evaluations(*ALL_GATES)]
            found = play(AUTO, steps, start=start)
        case "denied":  # a state-owned buyer passes US export, then cn-import denies it
            request = make_request(
                buyer={"name": "Sinopec AI", "country": "CN", "kind": "state_owned"}, **ident
            )
            steps = [(minutes(0), Submit(request=request)), *evaluations(US_EXPORT, CN_IMPORT)]
            found = play(AUTO, steps, start=start)
        case "quota_pending" | "licensed_after_evidence":  # short of domestic units at the last gate
            request = make_request(domestic_procurement=SHORT_EVIDENCE, **ident)
            steps = [(minutes(0), Submit(request=request)), *evaluations(*ALL_GATES)]
            if kind == "licensed_after_evidence":
                steps.append((minutes(30), AddEvidence(records=[MORE_EVIDENCE])))
            found = play(AUTO, steps, start=start)
        case "awaiting_review":  # manual mode: evaluation emits nothing, a reviewer is awaited
            request = make_request(**ident)
            steps = [(minutes(0), Submit(request=request)), *evaluations(US_EXPORT)]
            found = play(MANUAL, steps, start=start)
        case "withdrawn":
            request = make_request(**ident)
            steps = [(minutes(0), Submit(request=request)), (minutes(7), Withdraw(reason="order cancelled"))]
            found = play(MANUAL, steps, start=start)
        case "expired":
            request = make_request(**ident)
            steps = [(minutes(0), Submit(request=request)), (timedelta(days=91), Expire(gate=US_EXPORT))]
            found = play(MANUAL, steps, start=start)
        case _:
            raise AssertionError(f"unknown scenario kind {kind!r}")
    assert found.state.status == EXPECTED_STATUS[kind], (kind, found.state.status)
    return found


def scenarios(n: int, prefix: str = "req") -> list[Scenario]:
    """`n` requests cycling through every kind, submitted a second apart."""
    return [
        scenario(KINDS[i % len(KINDS)], f"{prefix}-{i:03d}", start=NOW + timedelta(seconds=i))
        for i in range(n)
    ]


def append_batches(store: EventStore, batches: Sequence[Sequence[Event]]) -> list[AppendResult]:
    return [store.append(batch[0].stream_id, batch[0].version - 1, batch) for batch in batches]


def append_all(store: EventStore, found: Sequence[Scenario]) -> None:
    for each in found:
        append_batches(store, each.batches)


def as_event(stored: StoredEvent) -> Event:
    return Event.model_validate({name: getattr(stored, name) for name in Event.model_fields})


def stray_event(stream_id: str, version: int, *, event_id: str | None = None) -> Event:
    return Event(
        event_id=event_id or new_id(),
        stream_id=stream_id,
        version=version,
        data=RequestWithdrawn(gate=None, reason="written by someone else"),
        occurred_at=NOW,
        policy_version="test-auto",
        actor="intruder",
    )


def snapshot(store: EventStore) -> tuple[list[StoredEvent], list[dict[str, Any]]]:
    """Everything a failed append must leave untouched: the whole log and the whole projection."""
    return list(store.read_all()), store.projection_rows(REQUESTS)


def store_url(store: EventStore) -> str:
    """The `CHIPCLEAR_EVENT_STORE` URL that opens another handle on the same database."""
    if isinstance(store, SQLiteEventStore):
        return f"sqlite:///{store.path.resolve()}"
    if isinstance(store, PostgresEventStore):
        return store.url
    raise NotImplementedError(type(store).__name__)


def open_handle(store: EventStore) -> EventStore:
    """Another handle on the same database, opened from its URL as a worker opens it (with its key)."""
    return open_event_store(store_url(store)).seal_with(RECORDER)


def open_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> EventStore:
    """A fresh, migrated store with chipclear's projections registered, as the worker opens it."""
    if name == "sqlite":
        return SQLiteEventStore(tmp_path / "events.db", projections=PROJECTIONS, recorder=RECORDER)
    if name == "postgresql":
        return PostgresEventStore(
            request.getfixturevalue("pg_url"), projections=PROJECTIONS, recorder=RECORDER
        )
    raise NotImplementedError(name)


class Raw:
    """Plain SQL on the store's database, outside the store: `?` placeholders on either backend."""

    def __init__(self, store: EventStore) -> None:
        self.postgres = isinstance(store, PostgresEventStore)
        if isinstance(store, PostgresEventStore):
            self.conn: Any = psycopg.connect(split_url(store.url)[0], autocommit=True)
        else:
            assert isinstance(store, SQLiteEventStore)
            self.conn = sqlite3.connect(store.path, isolation_level=None)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s") if self.postgres else sql, params)

    def drop_guards(self) -> None:
        if self.postgres:
            self.execute("ALTER TABLE events DISABLE TRIGGER USER")
        else:
            self.execute("DROP TRIGGER events_append_only_update")
            self.execute("DROP TRIGGER events_append_only_delete")


@contextmanager
def attacker(store: EventStore) -> Iterator[Raw]:
    """A raw connection to the database that first drops the append-only guards, as an attacker would."""
    raw = Raw(store)
    try:
        raw.drop_guards()
        yield raw
    finally:
        raw.conn.close()


def trusting_policy_toml(*, recorder: bool = True) -> str:
    """A policy file an auditor's machine might hold: every test person's key, and the test recorder's.

    The invoice registry is off, as in the `make_policy` scenarios the tests store: `audit verify` then
    expects no registry rows, as the worker that wrote them kept none."""
    people = {
        "alice": ["us-export"],
        "wang": ["cn-import"],
        "li": ["domestic-quota"],
        "chen": [],
        "applicant": [],
    }
    lines = ['version = "audit-test"']
    for section in ("us_export", "cn_import", "domestic_quota"):
        lines += [f"[{section}]", 'mode = "auto"']
    lines.append("unique_invoices = false")  # under [domestic_quota], the last section written
    for name, gates in people.items():
        lines += [f"[reviewers.{name}]", f"gates = {json.dumps(gates)}", f'key = "{keys.public(name)}"']
    lines += ["[recorder]", f"keys = {json.dumps([keys.public(keys.RECORDER)] if recorder else [])}"]
    return "\n".join(lines) + "\n"


def auditor_env(folder: Path) -> dict[str, str]:
    """CHIPCLEAR_HOME (every test key installed) and CHIPCLEAR_POLICY (`trusting_policy_toml`) in `folder`."""
    home = folder / "home"
    keys.install(home)
    policy = folder / "audit-policy.toml"
    policy.write_text(trusting_policy_toml(), encoding="utf-8")
    return {"CHIPCLEAR_HOME": str(home), "CHIPCLEAR_POLICY": str(policy)}


def run_threads(targets: Sequence[Callable[[], None]], timeout: float = 60) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def grant(stream_id: str, version: int) -> Event:
    """A ledger event: streams outside the request projection, so writers only append and chain."""
    return Event(
        event_id=str(uuid.uuid4()),
        stream_id=stream_id,
        version=version,
        data=UnitsGranted(
            request_id=f"{stream_id}-r{version}",
            buyer="Alpha Compute Ltd.",
            batch_id="2026-Q1",
            units=version,
            requested=version,
            workflow_id=f"import-{stream_id}-r{version}",
        ),
        occurred_at=NOW + timedelta(milliseconds=version),
        policy_version="test-auto",
        actor="ledger",
    )


def write_stream(store: EventLog, stream_id: str, events: int) -> None:
    """One append per event, as a busy entity workflow does."""
    for version in range(1, events + 1):
        store.append(stream_id, version - 1, [grant(stream_id, version)])
