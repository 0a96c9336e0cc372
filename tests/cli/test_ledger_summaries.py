"""`chipclear events allocation`: each of the ledger's events in one line a person can read."""

from __future__ import annotations

from datetime import UTC, datetime

from chipclear.cli.output import summarise
from chipclear.domain.allocation import (
    BatchOpened,
    BatchSpec,
    LedgerEvent,
    QueueLeft,
    RequestQueued,
    RequestsSettled,
    UnitsGranted,
    UnitsReleased,
)
from chipclear.domain.events import StoredEvent

NOW = datetime(2026, 1, 28, tzinfo=UTC)


def stored(data: LedgerEvent) -> StoredEvent:
    return StoredEvent(
        event_id="e-1",
        stream_id="allocation",
        version=1,
        data=data,
        occurred_at=NOW,
        policy_version="allocation",
        actor="allocation-ledger",
        position=1,
        recorded_at=NOW,
        prev_hash="0" * 64,
        hash="1" * 64,
    )


def test_every_ledger_event_reads_as_a_sentence_not_its_type() -> None:
    events: list[LedgerEvent] = [
        BatchOpened(batch=BatchSpec(batch_id="B1", capacity=10), opened_at=NOW),
        UnitsGranted(request_id="r1", buyer="JD", batch_id="B1", units=5, requested=5, workflow_id="w"),
        RequestQueued(request_id="r2", buyer="JD", units=5, workflow_id="w", seq=1),
        UnitsReleased(request_id="r1", batch_id="B1", units=5, reason="denied"),
        QueueLeft(request_id="r2", reason="withdrawn"),
        RequestsSettled(request_ids=["r1"], licensed=1),
    ]
    for data in events:
        assert summarise(stored(data)) != data.type, data.type


def test_a_settlement_names_how_many_of_each_and_the_first_requests() -> None:
    few = summarise(stored(RequestsSettled(request_ids=["r1", "r2"], licensed=1)))
    assert few == "settled: 1 licensed, 1 given back (r1, r2)"
    many = summarise(stored(RequestsSettled(request_ids=[f"r{i}" for i in range(5)], licensed=5)))
    assert many == "settled: 5 licensed, 0 given back (r0, r1, r2, …)"
