"""Helpers the workflow tests share: waiting on a running request's own state."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client

from chipclear import client as ops
from chipclear.domain.state import RequestState


async def wait_for(client: Client, request_id: str, predicate: Any, within: float = 20.0) -> RequestState:
    """Poll the workflow's own state until `predicate` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        state = await ops.live_state(client, request_id)
        if state is not None and predicate(state):
            return state
        if loop.time() > deadline:
            raise AssertionError(f"{request_id}: condition not reached, last state {state}")
        await asyncio.sleep(0.05)
