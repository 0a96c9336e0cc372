"""The worker's health endpoints, for an orchestrator's probes (Kubernetes, compose, a load balancer).

Liveness and readiness answer different questions. `/healthz` says the process's event loop still
answers: a restart would help if it does not. `/readyz` says this worker is polling its task queues
and can reach the event store: if not, the orchestrator should hold traffic and wait, not restart it
(a store outage would otherwise restart every worker at once).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import web

from chipclear.config import DEFAULT_LISTEN_HOST
from chipclear.store.outage import StoreOutage
from chipclear.store.protocol import Connection

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
STORE_TIMEOUT = 2.0  # seconds a readiness probe waits for the event store
# Seconds of failing store calls (and no call answered) after which the worker is not ready: a read
# may still answer while every write waits on a lock this worker cannot take.
WEDGED_AFTER = 15.0


@dataclass
class Health:
    store: Connection | None = None  # set once the store is open
    polling: bool = False  # set once the worker runs; cleared when it starts draining
    outage: StoreOutage = field(default_factory=StoreOutage)  # what the store activities have met

    async def readiness(self) -> tuple[bool, str]:
        if not self.polling or self.store is None:
            return False, "the worker is not polling (starting or draining)"
        try:
            await asyncio.wait_for(asyncio.to_thread(self.store.ping), STORE_TIMEOUT)
        except Exception as exc:  # any failure to answer is "not ready", with the reason shown
            return False, f"the event store does not answer: {type(exc).__name__}: {exc}"
        if (seconds := self.outage.seconds()) > WEDGED_AFTER:
            return (
                False,
                f"the event store has failed every call for {seconds:.0f}s (since {self.outage.since})",
            )
        return True, "polling, event store reachable"


def build_app(health: Health) -> web.Application:
    async def alive(request: web.Request) -> web.Response:
        return _answer(200, "alive")

    async def ready(request: web.Request) -> web.Response:
        ok, reason = await health.readiness()
        return _answer(200 if ok else 503, reason)

    app = web.Application()
    app.router.add_get(LIVENESS_PATH, alive)
    app.router.add_get(READINESS_PATH, ready)
    return app


def _answer(status: int, detail: str) -> web.Response:
    body = {"status": "ok" if status == 200 else "unavailable", "detail": detail}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


async def serve(health: Health, port: int, host: str = DEFAULT_LISTEN_HOST) -> web.AppRunner:
    """Start serving in the running loop; the caller cleans the returned runner up. This machine only
    unless `host` says otherwise (CHIPCLEAR_HEALTH_HOST; a container's probes need 0.0.0.0)."""
    runner = web.AppRunner(build_app(health), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
