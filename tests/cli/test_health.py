"""The worker's probes: alive while the loop answers; ready only while polling with a reachable store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from chipclear import health as health_module
from chipclear.devserver import free_port
from chipclear.health import LIVENESS_PATH, READINESS_PATH, Health, serve
from chipclear.store.protocol import StoreUnavailable
from chipclear.store.sqlite import SQLiteEventStore


class UnreachableStore(SQLiteEventStore):
    def ping(self) -> None:
        raise ConnectionError("server closed the connection unexpectedly")


@pytest.fixture
async def probes() -> AsyncIterator[tuple[Health, str]]:
    health, port = Health(), free_port()
    runner = await serve(health, port, host="127.0.0.1")
    try:
        yield health, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get(url: str) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return answer.status, await answer.json()


async def test_alive_from_the_start_ready_only_while_polling(
    probes: tuple[Health, str], tmp_path: Path
) -> None:
    health, base = probes
    assert await get(base + LIVENESS_PATH) == (200, {"status": "ok", "detail": "alive"})
    status, body = await get(base + READINESS_PATH)  # still connecting: no store, not polling
    assert status == 503 and "not polling" in body["detail"]

    health.store = SQLiteEventStore(tmp_path / "events.db")
    health.polling = True
    assert await get(base + READINESS_PATH) == (
        200,
        {"status": "ok", "detail": "polling, event store reachable"},
    )

    health.polling = False  # draining after SIGTERM: take no new work, but stay alive
    assert (await get(base + READINESS_PATH))[0] == 503
    assert (await get(base + LIVENESS_PATH))[0] == 200
    health.store.close()


async def test_not_ready_while_the_event_store_does_not_answer(
    probes: tuple[Health, str], tmp_path: Path
) -> None:
    health, base = probes
    health.store, health.polling = UnreachableStore(tmp_path / "events.db"), True
    status, body = await get(base + READINESS_PATH)
    assert status == 503
    assert body["detail"] == (
        "the event store does not answer: ConnectionError: server closed the connection unexpectedly"
    )
    assert (await get(base + LIVENESS_PATH))[0] == 200  # a store outage must not restart every worker
    health.store.close()


async def test_not_ready_once_every_store_call_has_failed_for_a_while(
    probes: tuple[Health, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock held on the store lets reads (the ping) answer while every write fails: the outage the
    store activities report makes the worker unready, and the first answered call makes it ready again."""
    health, base = probes
    health.store = SQLiteEventStore(tmp_path / "events.db")
    health.polling = True
    monkeypatch.setattr(health_module, "WEDGED_AFTER", 0.0)
    health.outage.failing(StoreUnavailable("events.db is locked by another connection for over 5s"))
    status, body = await get(base + READINESS_PATH)
    assert status == 503 and "has failed every call" in body["detail"]
    health.outage.wrote()
    assert (await get(base + READINESS_PATH))[0] == 200
    health.store.close()
