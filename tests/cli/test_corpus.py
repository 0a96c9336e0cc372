"""The corpus of bad input (issue 14): every case in tests/corpus/manifest.yaml is refused with its exit
code and one sentence naming the problem, and nothing is started or written.

One real Temporal dev server (the session's) and one SQLite event store serve the whole corpus; the CLI
runs in-process (typer's CliRunner), so a case costs milliseconds, not an interpreter start. Most cases
are refused before any server call; those that reach the server (a status on a missing namespace) must
still start nothing. A case that would start a worker fails the test instead of blocking it.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from chipclear.cli.main import app
from chipclear.domain.limits import MAX_MESSAGE
from chipclear.projections import PROJECTIONS
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys
from tests.wedge_check import WedgeWatch

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
MANIFEST = CORPUS / "manifest.yaml"
REPEAT = re.compile(r"\{repeat:(\d+):(.)\}")
runner = CliRunner()


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    code: int
    says: str
    env: dict[str, str] = field(default_factory=dict)
    make: str | None = None
    note: str | None = None


def cases() -> list[Case]:
    return [Case(**entry) for entry in yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))["cases"]]


# -- files a case needs made: too big to keep, or not files at all ------------------------------------
BASE_REQUEST = (
    (CORPUS / "requests" / "units-zero.yaml").read_text(encoding="utf-8").replace("units: 0", "units: 5")
)
RECORD = "- vendor: Huawei\n  product: Ascend 910C\n  units: 5\n  invoice: HW-{n}\n"
ORDER_HEADER = "request_id,buyer_name,buyer_country,buyer_kind,exporter_name,end_use,units,data_center_name,"
ORDER_HEADER += "data_center_province\n"
ORDER_ROW = "ob-1,ByteDance Ltd.,CN,private,NVIDIA Corporation,Model training,500,Wuhu AI Campus 1,Anhui\n"


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _symlink_loop(path: Path) -> None:
    other = path.with_name(path.name + "-other")
    path.symlink_to(other)
    other.symlink_to(path)


MAKERS: dict[str, Callable[[Path], object]] = {
    "fifo": _fifo,
    "symlink-loop": _symlink_loop,
    "request-over-256-kib": lambda p: p.write_text(BASE_REQUEST + "#" * (257 * 1024) + "\n"),
    "request-note-1-mib": lambda p: p.write_text(
        BASE_REQUEST.replace("invoice: HW-2026-00017", "invoice: LX-1\n  note: " + "n" * 2**20)
    ),
    "request-name-1-mib": lambda p: p.write_text(BASE_REQUEST.replace("ByteDance Ltd.", "B" * 2**20)),
    "request-value-50-mib": lambda p: p.write_text(
        BASE_REQUEST.replace("end_use: Training", "end_use: " + "v" * (50 * 2**20))
    ),
    "evidence-1001-records": lambda p: p.write_text("".join(RECORD.format(n=n) for n in range(1001))),
    "evidence-1001-rows-csv": lambda p: p.write_text(
        "vendor,product,units,invoice\n" + "".join(f"Huawei,Ascend,5,HW-{n}\n" for n in range(1001))
    ),
    "evidence-over-1-mib": lambda p: p.write_text(RECORD.format(n=1) + "#" * (2**20 + 1) + "\n"),
    "evidence-note-1-mib": lambda p: p.write_text(RECORD.format(n=1) + "  note: " + "n" * 2**20 + "\n"),
    "policy-over-256-kib": lambda p: p.write_text('version = "v"\n' + "#" * (257 * 1024) + "\n"),
    "order-book-over-8-mib": lambda p: p.write_text(ORDER_HEADER + "#" * (8 * 2**20) + "\n"),
    "order-book-10001-rows": lambda p: p.write_text(ORDER_HEADER + ORDER_ROW * 10_001),
    "order-book-latin-1": lambda p: p.write_bytes(
        (ORDER_HEADER + ORDER_ROW.replace("Ltd.", "Lt\xe9e")).encode("latin-1")
    ),
}
SUFFIX = {
    "evidence-1001-rows-csv": ".csv",
    "policy-over-256-kib": ".toml",
    "request-name-1-mib": ".json",
    "order-book-over-8-mib": ".csv",
    "order-book-10001-rows": ".csv",
    "order-book-latin-1": ".csv",
}


def expand(text: str, made: Path | None) -> str:
    text = text.replace("{corpus}", str(CORPUS)).replace("{made}", str(made))
    return REPEAT.sub(lambda found: found[2] * int(found[1]), text)


# -- what the corpus must leave untouched ----------------------------------------------------------
def store_rows(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(db)) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables}


def workflow_count(address: str) -> int:
    async def count() -> int:
        client = await Client.connect(address)
        return (await client.count_workflows()).count

    return asyncio.run(count())


@dataclass
class Bench:
    env: dict[str, str]
    tmp: Path

    def run(self, case: Case) -> Result:
        made = None
        if case.make is not None:
            made = self.tmp / f"{case.id.replace('/', '-')}{SUFFIX.get(case.make, '.yaml')}"
            MAKERS[case.make](made)
        args = [expand(arg, made) for arg in case.args]
        env = self.env | {name: expand(value, made) for name, value in case.env.items()}
        return runner.invoke(app, args, env=env)


@pytest.fixture(scope="module")
def bench(
    temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory, wedge_watch: WedgeWatch
) -> Iterator[Bench]:
    # typer rebuilds the whole click command tree on every invoke (a third of a second here): built once,
    # the corpus runs in a fraction of the time, through exactly the same command objects.
    command = typer.main.get_command(app)
    patch = pytest.MonkeyPatch()
    patch.setattr(typer.testing, "_get_command", lambda _app: command)
    tmp = tmp_path_factory.mktemp("corpus")
    home = tmp / "home"
    keys.install(home)
    db = tmp / "events.db"
    empty = SQLiteEventStore(db, projections=PROJECTIONS)  # an empty, migrated store to read from
    empty.close()
    env = {
        "CHIPCLEAR_HOME": str(home),
        "CHIPCLEAR_EVENT_STORE": f"sqlite:///{db}",
        # No worker polls this queue: a request that slipped through would start and stay visible.
        "CHIPCLEAR_TASK_QUEUE": f"corpus-{uuid.uuid4().hex[:12]}",
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": "default",
        "CHIPCLEAR_POLICY": "",
        "CHIPCLEAR_CODEC_KEYS": "",
        "CHIPCLEAR_CODEC_KEY_FILE": "",
        "CHIPCLEAR_KEY_FILE": "",
    }
    # Checked again at the end of the session: nothing the corpus sent wedged later or left a row behind.
    wedge_watch.watch(empty, env["CHIPCLEAR_TASK_QUEUE"])
    yield Bench(env, tmp)
    patch.undo()


def refused_as_documented(case: Case, result: Result) -> list[str]:
    """What is wrong with `result` for `case`: nothing, if it is the documented refusal."""
    problems = []
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        problems.append(f"raised {type(result.exception).__name__}: {str(result.exception)[:200]}")
    if result.exit_code != case.code:
        problems.append(f"exit {result.exit_code}, expected {case.code}")
    output = " ".join(result.output.split())
    if "Traceback" in output:
        problems.append("printed a traceback")
    if case.says not in output:
        problems.append(f"does not say {case.says!r}")
    if len(output) > 2_000:
        problems.append(f"printed {len(output)} characters")
    for line in re.findall(r"error: .*", " ".join(result.output.splitlines())):
        if len(line) > MAX_MESSAGE + len("error: "):
            problems.append(f"an error of {len(line)} characters (over {MAX_MESSAGE})")
    return [f"{case.id}: {problem}\n    {output[:300]}" for problem in problems]


def test_the_corpus_is_refused_and_nothing_is_started_or_written(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = cases()
    assert len(every) >= 150
    assert len({case.id for case in every}) == len(every), "two cases share an id"

    def worker_started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the worker would have started with this policy")

    monkeypatch.setattr("chipclear.worker.main", worker_started)
    db = Path(bench.env["CHIPCLEAR_EVENT_STORE"].removeprefix("sqlite:///"))
    rows, workflows = store_rows(db), workflow_count(bench.env["TEMPORAL_ADDRESS"])

    problems = [problem for case in every for problem in refused_as_documented(case, bench.run(case))]

    assert not problems, f"{len(problems)} of {len(every)} cases misbehaved:\n" + "\n".join(problems)
    assert store_rows(db) == rows, "a refused case wrote to the event store"
    assert workflow_count(bench.env["TEMPORAL_ADDRESS"]) == workflows, "a refused case started a workflow"


def test_every_example_of_the_issue_is_in_the_corpus() -> None:
    """Issue 14 lists what went wrong; each one is a case, marked by its note."""
    noted = {case.id for case in cases() if (case.note or "").startswith("issue:")}
    for expected in [
        "request/note-1-mib",
        "request/billion-laughs",
        "request/nested-10000-yaml",
        "request/json-nested-10000",
        "evidence/nested-500",
        "request/price-infinity",
        "request/units-duplicate-key",
        "request/units-bool",
        "request/units-sexagesimal",
        "request/country-zz",
        "request/installed-domestic-2-pow-70",
        "request/invoice-date-year-1",
        "command/batch-closes-in-the-past",
        "policy/deadline-999999999-days",
        "policy/required-ratio-inf",
        "policy/latin-1",
        "policy/directory",
        "command/events-after-beyond-64-bits",
        "request/symlink-loop",
        "request/dev-zero",
        "command/store-under-proc",
        "command/store-dev-null",
        "command/store-not-a-database",
        "command/temporal-address-malformed",
        "command/temporal-namespace-missing",
        "request/value-50-mib",
        "command/decide-reviewer-1-mib",
        "evidence/three-1-mib-notes",
    ]:
        assert expected in noted, f"{expected} is not in tests/corpus/manifest.yaml as an issue example"
