"""`chipclear up`: the embedded dev server and a worker in one command, until Ctrl-C."""

from __future__ import annotations

import asyncio

from chipclear import keys
from chipclear.cli import output
from chipclear.config import Settings
from chipclear.devserver import DevServer, require_free, stop
from chipclear.domain.policy import load_policy
from chipclear.logs import configure
from chipclear.store.urls import redact
from chipclear.worker import install_signal_handlers, run_worker

NEXT_STEPS = """
[bold green]chipclear is up.[/]
  Temporal gRPC  {address}
  Web UI         http://127.0.0.1:{ui_port}
  Home           {home}  (from {home_source})
  Event store    {store}
  Policy         {policy}  (task queue {task_queue})

In another terminal (with the venv active: `source .venv/bin/activate`){address_hint}:
  chipclear demo                                     # the scenario from the news, auto policy
  chipclear batch open --id B1 --units 400000 --priority ByteDance,Alibaba,Tencent --actor wang
  chipclear submit examples/bytedance.yaml --actor chen    # signed with {home}/keys/chen.key
  chipclear status bytedance-2026-001
  chipclear decide bytedance-2026-001 --gate us-export --reviewer alice --approve
  chipclear events bytedance-2026-001
  chipclear audit checkpoint -o checkpoint.json      # keep it where the operators cannot write
  chipclear audit verify --checkpoint checkpoint.json
  chipclear screening load consolidated.csv --actor alice  # the Consolidated Screening List (trade.gov)
Ctrl-C stops the worker and the server; their state is kept in {home} (server log: {home}/temporal.log).
"""


DEFAULT_PORT = 7233  # TEMPORAL_ADDRESS's default: any other port must be exported for the CLI


def run_up(settings: Settings, *, port: int, ui_port: int, server_args: list[str] | None = None) -> None:
    # Busy ports first, before any key or file is made: exit 1 naming the port, never a worker
    # attached to a server this command did not start.
    how = "make up PORT=7300 UI_PORT=8300, or chipclear up --port 7300 --ui-port 8300"
    require_free({"--port": port, "--ui-port": ui_port}, how=how)
    output.console.print(
        f"chipclear home: {settings.home} (from {settings.home_source}); starting the dev server…",
        highlight=False,
        soft_wrap=True,
    )
    made = keys.provide_missing(settings.home, settings.policy)
    policy = load_policy(settings.policy, home=settings.home)
    configure()
    dev = DevServer(port=port, ui_port=ui_port, db=settings.home / "temporal.db", extra=server_args or [])
    process = dev.start(log=settings.home / "temporal.log")

    async def go() -> None:
        stop_event = asyncio.Event()
        install_signal_handlers(stop_event)
        client = await dev.wait_ready(
            process, metrics_port=settings.metrics_port, metrics_host=settings.metrics_host
        )
        ready = asyncio.Event()
        worker_task = asyncio.create_task(
            run_worker(settings, policy=policy, client=client, stop=stop_event, ready=ready)
        )
        await ready.wait()
        output.console.print(
            NEXT_STEPS.format(
                address=dev.address,
                ui_port=ui_port,
                store=redact(settings.event_store_url),
                policy=policy.version,
                task_queue=settings.task_queue,
                home=settings.home,
                home_source=settings.home_source,
                address_hint=(
                    f" and `export TEMPORAL_ADDRESS={dev.address}`" if port != DEFAULT_PORT else ""
                ),
            )
        )
        if made:
            output.console.print(
                f"Made keys for {', '.join(name for name, _ in made)} in {settings.home / 'keys'} "
                "(private keys 0600: each signs that person's acts; never share one)."
            )
        await worker_task

    try:
        asyncio.run(go())
    finally:
        stop(process)
