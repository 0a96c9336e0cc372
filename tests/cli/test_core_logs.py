"""The SDK core's own warnings reach Python's logging (stderr), never a command's stdout.

By default the core prints its log lines to stdout: `bench --json` and any other `--json` output then
began with lines that are not JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from chipclear.devserver import DevServer, free_port, stop
from chipclear.temporal import connect


async def test_a_retried_call_is_logged_to_python_logging_not_printed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    dev = DevServer(port=free_port(), ui_port=None, db=tmp_path / "temporal.db")
    process = dev.start(log=tmp_path / "temporal.log")
    try:
        await dev.wait_ready(process)
        client = await connect(target_host=dev.address, namespace="default")
    finally:
        stop(process)
    caplog.set_level(logging.WARNING, logger="temporalio.core")
    # The server is gone: the core retries the call, warning at each retry past the first few.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.count_workflows(), timeout=6)
    for _ in range(20):  # forwarded lines are handed over in batches
        if any("retried" in record.getMessage() for record in caplog.records):
            break
        await asyncio.sleep(0.1)
    assert any(
        record.name.startswith("temporalio.core") and "retried" in record.getMessage()
        for record in caplog.records
    )
    assert "retried" not in capfd.readouterr().out
