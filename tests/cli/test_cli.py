"""End to end through the `chipclear` console script, in subprocesses, exactly as a user runs it.

One real Temporal dev server (`chipclear server`) and one worker (`chipclear worker`) per module, in a
temporary CHIPCLEAR_HOME; every CLI call is a fresh process. Each test uses request ids of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from chipclear.devserver import free_port, stop
from chipclear.domain.gates import us_export
from chipclear.domain.policy import load_policy
from tests import keys
from tests.cli import forked
from tests.log_events import log_events
from tests.postgres import Cluster

CHIPCLEAR = Path(sys.executable).parent / "chipclear"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_REQUEST = ROOT / "examples" / "bytedance.yaml"
EXAMPLE_EVIDENCE = ROOT / "examples" / "evidence.yaml"
DEFAULT_POLICY = ROOT / "chipclear" / "policies" / "default.toml"
TEST_POLICY_VERSION = "cli-test-2026-01-15"

EVENT_KEYS = {
    "position",
    "event_id",
    "stream_id",
    "version",
    "type",
    "data",
    "occurred_at",
    "recorded_at",
    "policy_version",
    "actor",
    "act",
    "prev_hash",
    "hash",
}
# A process killed by a signal: subprocess reports -signum.
CRASH_SIGNALS = {-signal.SIGABRT, -signal.SIGSEGV}

Result = subprocess.CompletedProcess[str]


# -- running the CLI --------------------------------------------------------------------------------
def hermetic_env(**values: str) -> dict[str, str]:
    """The user's environment without any Temporal or chipclear setting that could leak in."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TEMPORAL_", "CHIPCLEAR_"))}
    return env | values


def chipclear(env: dict[str, str], *args: str | Path, fresh: bool = False) -> Result:
    """`chipclear ARGS` in a process forked from one that has imported chipclear (tests/cli/forked.py),
    or, `fresh`, or with a `PYTHON*` setting the test process lacks, in a fresh interpreter."""
    argv = [str(CHIPCLEAR), *map(str, args)]
    python_settings = {k: v for k, v in env.items() if k.startswith("PYTHON") and os.environ.get(k) != v}
    if fresh or python_settings or os.environ.get("CHIPCLEAR_TESTS_FRESH_CLI"):
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    return forked.run(argv, env, timeout=60)


def flat(text: str) -> str:
    """Rich wraps non-terminal output at 80 columns; compare words, not line breaks."""
    return " ".join(text.split())


def show(result: Result) -> str:
    command = " ".join(result.args[1:])
    return f"`chipclear {command}` exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def not_crashed(result: Result, code: int) -> None:
    assert result.returncode not in CRASH_SIGNALS, (
        f"the CLI did its work, then crashed with signal {-result.returncode} at interpreter exit "
        f"instead of exiting {code} (see test_cli_exits_cleanly_after_temporal_calls)\n{show(result)}"
    )


def ok(result: Result) -> Result:
    not_crashed(result, 0)
    assert result.returncode == 0, show(result)
    assert "Traceback" not in result.stderr, show(result)
    return result


def refused(result: Result, *needles: str, code: int = 1) -> Result:
    """The documented failure: exit `code`, one `error:` sentence naming the problem, no traceback."""
    not_crashed(result, code)
    assert result.returncode == code, show(result)
    assert "Traceback" not in result.stderr, show(result)
    for needle in needles:
        assert needle in flat(result.stderr), f"{needle!r} not in stderr\n{show(result)}"
    return result


def parallel(
    env: dict[str, str], commands: Sequence[Sequence[str | Path]], workers: int = 3, *, fresh: bool = False
) -> list[Result]:
    """Independent CLI calls side by side."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda args: chipclear(env, *args, fresh=fresh), commands))


def as_json(result: Result) -> Any:
    ok(result)
    return json.loads(result.stdout)


# -- processes --------------------------------------------------------------------------------------
def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def end_pid(pid: int, within: float = 15.0) -> None:
    """End one process this module started (a dev server under `chipclear server`), by its id."""
    if not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + within
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def reap(process: subprocess.Popen[bytes], dev_servers: list[int]) -> None:
    """A test's `chipclear` process and the dev servers it started, ended whatever the test left."""
    if process.poll() is None:
        process.kill()
        process.wait()
    for pid in dev_servers:
        end_pid(pid)


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def policy_text() -> str:
    """The bundled default (manual gates, its durations), under a version of our own.

    Allocation batches are switched off: these tests follow a request through the three gates alone.
    """
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    text, count = re.subn(r'(?m)^version = ".*"', f'version = "{TEST_POLICY_VERSION}"', text)
    assert count == 1, "the bundled default policy has no top-level version line"
    return re.sub(r"(?m)^allocate_from_batches\s*=\s*true", "allocate_from_batches = false", text)


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    server: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    worker_log: Path
    task_queue: str

    def run(self, *args: str | Path) -> Result:
        return chipclear(self.env, *args)

    @property
    def events_db(self) -> Path:
        return self.home / "events.db"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with open_stack(tmp_path_factory.mktemp("chipclear-home"), policy_text()) as running:
        yield running


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory: pytest.TempPathFactory, postgres: Cluster) -> Iterator[Stack]:
    """The same stack with its event store on PostgreSQL, migrated by `chipclear store migrate`."""
    url = postgres.new_schema()
    migrated = ok(chipclear(hermetic_env(CHIPCLEAR_EVENT_STORE=url), "store", "migrate"))
    assert "applied 1:" in migrated.stdout and "applied 2: buyer caps" in migrated.stdout
    assert "schema version 2, up to date" in flat(migrated.stdout)
    home = tmp_path_factory.mktemp("chipclear-pg-home")
    with open_stack(
        home, policy_text(), CHIPCLEAR_EVENT_STORE=url, CHIPCLEAR_HEALTH_PORT=str(free_port())
    ) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def any_stack(request: pytest.FixtureRequest) -> Stack:
    stack: Stack = request.getfixturevalue("stack" if request.param == "sqlite" else "pg_stack")
    return stack


def start_server(home: Path, attempts: int = 3) -> tuple[subprocess.Popen[bytes], int]:
    """`chipclear server` on free ports, listening. A port found free can be taken by another process
    before the server binds it; then the server exits saying so, and it is started on new ports."""
    for _ in range(attempts):
        port, ui_port = free_port(), free_port()
        command = [str(CHIPCLEAR), "server", "--port", str(port), "--ui-port", str(ui_port)]
        command += ["--db", str(home / "temporal.db")]
        log = home / "server.log"
        with log.open("wb") as out:
            env = hermetic_env(CHIPCLEAR_HOME=str(home))
            server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while server.poll() is None and not (accepts(port) and accepts(ui_port)):
            assert time.monotonic() < deadline, (
                "the dev server did not listen within 60 s\n" + log.read_text()
            )
            time.sleep(0.2)
        if server.poll() is None:
            return server, port
        if "address already in use" not in log.read_text():
            raise AssertionError("the dev server stopped:\n" + log.read_text())
    raise AssertionError(f"no free ports for the dev server in {attempts} attempts")


@contextmanager
def open_stack(home: Path, policy_toml: str, **settings: str) -> Iterator[Stack]:
    """A dev server (`chipclear server`) and a worker (`chipclear worker`) under `policy_toml`.

    `settings` are more environment variables for every process (another event store, a health port).
    """
    keys.install(home)  # as `chipclear keys new` would for each person the policy names, and the recorder
    policy = home / "policy.toml"
    policy.write_text(policy_toml, encoding="utf-8")
    task_queue = f"cli-test-{uuid.uuid4().hex[:10]}"
    server, port = start_server(home)
    env = hermetic_env(
        TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        CHIPCLEAR_HOME=str(home),
        CHIPCLEAR_TASK_QUEUE=task_queue,
        CHIPCLEAR_POLICY=str(policy),
        CHIPCLEAR_LOG_FORMAT="json",
        # Logged in as chen, a compliance officer the policy registers: the CLI's default actor.
        LOGNAME="chen",
        USER="chen",
        **settings,
    )
    worker_log = home / "worker.log"
    with worker_log.open("wb") as worker_err:
        worker = subprocess.Popen(
            [str(CHIPCLEAR), "worker"], env=env, stdout=subprocess.DEVNULL, stderr=worker_err
        )
    dev_servers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not any(r.get("event") == "worker started" for r in log_events(worker_log)):
            assert server.poll() is None, (home / "server.log").read_text()
            assert worker.poll() is None, worker_log.read_text()
            assert time.monotonic() < deadline, "no `worker started` within 60 s\n" + worker_log.read_text()
            time.sleep(0.2)
        assert accepts(port)
        dev_servers = children_of(server.pid)
        started = next(r for r in log_events(worker_log) if r.get("event") == "worker started")
        assert started["task_queue"] == task_queue
        assert started["policy_version"] == TEST_POLICY_VERSION
        yield Stack(home, env, server, worker, worker_log, task_queue)

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0, worker_log.read_text()
        assert any(r.get("event") == "worker stopped" for r in log_events(worker_log)), worker_log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        dev_servers = dev_servers or children_of(server.pid)
        stop(server)
        for pid in dev_servers:  # SIGTERM leaves them running: test_bug_server_stops_its_dev_server_…
            end_pid(pid)


# -- request files and ids --------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def request_file(directory: Path, request_id: str, **changes: Any) -> Path:
    """examples/bytedance.yaml under a request id of this test's own, with `changes` applied."""
    document = yaml.safe_load(EXAMPLE_REQUEST.read_text(encoding="utf-8"))
    document["request_id"] = request_id
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = document
        for key in parents:
            target = target[key]
        target[leaf] = value
    path = directory / f"{request_id}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def stored_version(stack: Stack, request_id: str) -> int:
    """The request's last stored version, read straight from the event store file (0: nothing)."""
    if not stack.events_db.exists():
        return 0
    with closing(sqlite3.connect(f"file:{stack.events_db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT MAX(version) FROM events WHERE stream_id = ?", (request_id,)).fetchone()
    return int(row[0] or 0)


def submitted(stack: Stack, directory: Path, prefix: str, **changes: Any) -> str:
    """A fresh request (the example, with `changes`), submitted and stored (waiting at us-export)."""
    request_id = new_id(prefix)
    result = ok(stack.run("submit", request_file(directory, request_id, **changes)))
    assert request_id in flat(result.stdout) and "us_export_review" in result.stdout, show(result)
    deadline = time.monotonic() + 20
    # Version 2 follows RequestSubmitted: EvidenceAdded under the default policy (EvidenceRejected once
    # the example's invoices count for an earlier request). GateOpened is in the same atomic append.
    while stored_version(stack, request_id) < 2:
        assert time.monotonic() < deadline, f"{request_id} was never stored"
        time.sleep(0.05)
    return request_id


# -- the main flow ----------------------------------------------------------------------------------
def test_request_through_all_three_gates(any_stack: Stack, tmp_path: Path) -> None:
    """The core flow, with the worker's event store on SQLite and on PostgreSQL."""
    stack = any_stack
    request_id = new_id("flow")
    path = request_file(tmp_path, request_id)

    first = ok(stack.run("submit", path))
    assert f"submitted {request_id}" in flat(first.stdout), show(first)
    assert "status: us_export_review" in flat(first.stdout), show(first)

    again = ok(stack.run("submit", path))
    assert "already submitted" in flat(again.stdout), show(again)
    assert request_id in flat(again.stdout), show(again)

    (tmp_path / "changed").mkdir()
    changed = request_file(tmp_path / "changed", request_id, units=59_999)
    refused(stack.run("submit", changed), request_id, "different content")

    doc = as_json(stack.run("status", request_id, "--json"))
    assert doc["request_id"] == request_id
    assert doc["status"] == "us_export_review"
    assert doc["gate"] == "us-export"
    assert doc["units_requested"] == 60_000
    assert doc["units_approved"] is None
    assert doc["policy_version"] == TEST_POLICY_VERSION
    assert doc["licence_id"] is None

    us = ok(
        stack.run(
            "decide", request_id, "--gate", "us-export", "--reviewer", "alice", "--approve",
            "--units", "50000", "--condition", "KYC on the consignee", "--condition", "no re-export",
        )
    )  # fmt: skip
    assert "cn_import_review" in flat(us.stdout), show(us)
    cn = ok(stack.run("decide", request_id, "--gate", "cn-import", "--reviewer", "wang", "--approve"))
    assert "domestic_quota_review" in flat(cn.stdout), show(cn)
    evidence = ok(stack.run("evidence", request_id, EXAMPLE_EVIDENCE))
    assert "EvidenceAdded" in flat(evidence.stdout), show(evidence)
    quota = ok(stack.run("decide", request_id, "--gate", "domestic-quota", "--reviewer", "li", "--approve"))
    assert "status licensed" in flat(quota.stdout), show(quota)

    doc = as_json(stack.run("status", request_id, "--json"))
    assert doc["status"] == "licensed"
    assert doc["gate"] is None
    assert doc["licence_id"] == f"LIC-{request_id}"
    assert doc["units_requested"] == 60_000
    assert doc["units_approved"] == 50_000
    # The policy's standing export conditions come first, then the officer's own.
    standing = list(us_export.GATE.section(load_policy("default")).default_conditions)
    assert doc["conditions"] == [*standing, "KYC on the consignee", "no re-export"]
    assert doc["evidence_records"] == 3  # two filed with the request, one added
    assert doc["policy_version"] == TEST_POLICY_VERSION
    assert {gate: record["decided_by"] for gate, record in doc["gates"].items()} == {
        "us-export": "alice",
        "cn-import": "wang",
        "domestic-quota": "li",
    }

    # Read-only from here on: ask everything at once.
    events_, verified, verified_json, everything, licensed = parallel(
        stack.env,
        [
            ("events", request_id, "--json"),
            ("audit", "verify"),
            ("audit", "verify", "--json"),
            ("list", "--json"),
            ("list", "--status", "licensed", "--json"),
        ],
    )
    events = as_json(events_)
    assert [set(event) for event in events] == [EVENT_KEYS] * len(events)
    assert [event["version"] for event in events] == list(range(1, len(events) + 1))
    positions = [event["position"] for event in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert {event["stream_id"] for event in events} == {request_id}
    assert len({event["event_id"] for event in events}) == len(events)
    assert all(earlier["hash"] == later["prev_hash"] for earlier, later in pairwise(events))
    assert [event["recorded_at"] for event in events] == sorted(event["recorded_at"] for event in events)
    assert {event["policy_version"] for event in events} == {TEST_POLICY_VERSION}
    types = [event["type"] for event in events]
    # The request's own procurement records are judged one by one: both count.
    assert types[:4] == ["RequestSubmitted", "EvidenceAdded", "GateOpened", "PartiesScreened"]
    assert events[1]["data"]["records"] == events[0]["data"]["request"]["domestic_procurement"]
    assert types[-2:] == ["GateApproved", "LicenseIssued"]
    assert types.count("GateApproved") == 3 and types.count("EvidenceAdded") == 2
    assert events[0]["data"]["request"]["request_id"] == request_id
    approvals = [event for event in events if event["type"] == "GateApproved"]
    assert [(a["data"]["gate"], a["actor"]) for a in approvals] == [
        ("us-export", "alice"),
        ("cn-import", "wang"),
        ("domestic-quota", "li"),
    ]
    assert approvals[0]["data"]["units_approved"] == 50_000
    # Each approval keeps the reviewer's signed act; the submission chen's (logged in, registered).
    assert [a["act"]["reviewer"] for a in approvals] == ["alice", "wang", "li"]
    assert all(a["act"]["signature"]["key"].startswith("ed25519:") for a in approvals)
    assert events[0]["act"]["actor"] == "chen" and events[0]["actor"] == "chen"
    assert [e["act"] for e in events if e["actor"] in ("policy", "allocation-ledger")] == [None] * len(
        [e for e in events if e["actor"] in ("policy", "allocation-ledger")]
    )

    assert "intact" in ok(verified).stdout, show(verified)
    report = as_json(verified_json)
    assert report["ok"] is True and report["breaks"] == []
    assert report["events_checked"] >= len(events)

    rows = {row["request_id"]: row for row in as_json(everything)}
    assert rows[request_id]["status"] == "licensed"
    assert rows[request_id]["units_approved"] == 50_000
    licensed_rows = as_json(licensed)
    assert request_id in {row["request_id"] for row in licensed_rows}
    assert {row["status"] for row in licensed_rows} == {"licensed"}


# -- refusals ---------------------------------------------------------------------------------------
def test_rule_refusals_exit_1_and_record_nothing(stack: Stack, tmp_path: Path) -> None:
    request_id = submitted(stack, tmp_path, "refuse")
    before = as_json(stack.run("events", request_id, "--json"))

    wrong_gate, not_allowed, too_many = parallel(
        stack.env,
        [
            ("decide", request_id, "--gate", "cn-import", "--reviewer", "wang", "--approve"),
            ("decide", request_id, "--gate", "us-export", "--reviewer", "chen", "--approve"),
            ("decide", request_id, "--gate", "us-export", "--reviewer", "alice", "--approve",
             "--units", "70000"),
        ],
    )  # fmt: skip
    refused(wrong_gate, "not at gate cn-import")
    refused(not_allowed, "reviewer 'chen' may not decide gate us-export", "alice")
    refused(too_many, "units: 70000 exceeds the 60000 units")

    after = as_json(stack.run("events", request_id, "--json"))
    assert after == before
    assert stored_version(stack, request_id) == len(before)


def test_nobody_acts_as_another_and_one_person_decides_one_gate(stack: Stack, tmp_path: Path) -> None:
    """The attacks of a CLI user: claim a reviewer with another's key, a person with no key at all, the
    system's own name; then a reviewer who decided one gate tries the next. Each is refused, named."""
    # A buyer of its own: other tests' approvals for ByteDance count against the same buyer cap.
    request_id = submitted(stack, tmp_path, "claim", buyer__name=f"Claim Test Buyer {uuid.uuid4().hex[:8]}")
    before = as_json(stack.run("events", request_id, "--json"))
    wangs_key = str(stack.home / "keys" / "wang.key")
    as_alice, keyless, as_policy = parallel(
        stack.env,
        [
            ("decide", request_id, "--gate", "us-export", "--reviewer", "alice", "--approve",
             "--key", wangs_key),
            ("decide", request_id, "--gate", "us-export", "--reviewer", "mallory", "--approve"),
            ("withdraw", request_id, "--reason", "as the system", "--actor", "policy", "--key", wangs_key),
        ],
    )  # fmt: skip
    refused(as_alice, "signed with a key that is not alice's")
    refused(keyless, "mallory.key", "no key file", code=2)
    refused(as_policy, "'policy' is reserved for the system's own acts")
    assert as_json(stack.run("events", request_id, "--json")) == before

    ok(stack.run("decide", request_id, "--gate", "us-export", "--reviewer", "alice", "--approve"))
    cn = ok(stack.run("decide", request_id, "--gate", "cn-import", "--reviewer", "wang", "--approve"))
    assert "domestic_quota_review" in flat(cn.stdout), show(cn)
    twice = stack.run("decide", request_id, "--gate", "domestic-quota", "--reviewer", "wang", "--approve")
    refused(twice, "'wang' may not decide gate domestic-quota")  # not his gate under the bundled policy
    events = as_json(stack.run("events", request_id, "--json"))
    approvals = [e for e in events if e["type"] == "GateApproved"]
    assert [a["actor"] for a in approvals] == ["alice", "wang"]
    verified = ok(stack.run("audit", "verify"))
    assert "intact" in verified.stdout, show(verified)


def test_a_submission_signed_with_anothers_key_records_nothing_and_the_id_stays_free(
    stack: Stack, tmp_path: Path
) -> None:
    request_id = new_id("forged-submit")
    path = request_file(tmp_path, request_id)
    wangs_key = stack.home / "keys" / "wang.key"
    refused(
        stack.run("submit", path, "--key", wangs_key),  # chen (logged in) signs with wang's key
        "submission refused, nothing recorded",
        "not chen's",
    )
    assert stored_version(stack, request_id) == 0
    # Signed properly, the same request id is taken up as if the forgery had never been sent.
    result = ok(stack.run("submit", path))
    assert "us_export_review" in flat(result.stdout), show(result)
    ok(stack.run("withdraw", request_id, "--reason", "test over"))


INVALID_REQUESTS: dict[str, tuple[dict[str, Any] | str | None, list[str]]] = {
    # name: (changes to the example, or raw file text, or None for no file; what stderr must say)
    "country": ({"buyer__country": "China"}, ["buyer.country:", "'China'"]),
    "zero-units": ({"units": 0}, ["units: Input should be greater than or equal to 1"]),
    "unknown-field": ({"colour": "green"}, ["colour: Extra inputs are not permitted"]),
    "missing-file": (None, ["no such file"]),
    "bad-yaml": ("request_id: {rid}\nbuyer: [unclosed\n", ["not valid YAML at line 3"]),
}


def test_invalid_request_files_exit_2_and_start_nothing(stack: Stack, tmp_path: Path) -> None:
    cases = []
    for name, (spec, needles) in INVALID_REQUESTS.items():
        request_id = new_id(f"invalid-{name}")
        path = tmp_path / f"{request_id}.yaml"
        if isinstance(spec, dict):
            path = request_file(tmp_path, request_id, **spec)
        elif isinstance(spec, str):
            path.write_text(spec.format(rid=request_id), encoding="utf-8")
        cases.append((name, request_id, path, needles))

    submits = parallel(stack.env, [("submit", path) for _, _, path, _ in cases])
    for (_name, _, path, needles), result in zip(cases, submits, strict=True):
        refused(result, path.name, *needles, code=2)
        assert result.stdout == "", show(result)
        assert len(result.stderr.strip().splitlines()) == 1

    lookups = parallel(
        stack.env,
        [(command, request_id) for _, request_id, _, _ in cases for command in ("status", "events")],
    )
    for result in lookups:
        refused(result, result.args[2])
    assert all(stored_version(stack, request_id) == 0 for _, request_id, _, _ in cases)


def test_invalid_options_exit_2_and_record_nothing(stack: Stack, tmp_path: Path) -> None:
    request_id = submitted(stack, tmp_path, "options")
    before = stored_version(stack, request_id)
    decide = ("decide", request_id, "--reviewer", "alice")
    both, neither, no_reason, blank_reason, bad_gate, bad_status, bad_units = parallel(
        stack.env,
        [
            (*decide, "--gate", "us-export", "--approve", "--deny", "--reason", "no"),
            (*decide, "--gate", "us-export"),
            (*decide, "--gate", "us-export", "--deny"),
            (*decide, "--gate", "us-export", "--deny", "--reason", "   "),
            (*decide, "--gate", "nonsense", "--approve"),
            ("list", "--status", "nonsense"),
            (*decide, "--gate", "us-export", "--approve", "--units", "0"),
        ],
    )
    refused(both, "--approve / --deny", code=2)
    refused(neither, "--approve / --deny", code=2)
    refused(no_reason, "--reason", code=2)
    refused(blank_reason, "--reason", code=2)
    refused(bad_gate, "--gate", "nonsense", code=2)
    refused(bad_status, "--status", "nonsense", code=2)
    refused(bad_units, "--units", code=2)
    assert stored_version(stack, request_id) == before
    assert as_json(stack.run("status", request_id, "--json"))["status"] == "us_export_review"


# -- withdrawal -------------------------------------------------------------------------------------
def test_withdrawn_request_is_final(stack: Stack, tmp_path: Path) -> None:
    request_id = submitted(stack, tmp_path, "withdraw")
    result = ok(stack.run("withdraw", request_id, "--reason", "the data centre was sold"))
    assert "withdrawn" in flat(result.stdout), show(result)

    doc = as_json(stack.run("status", request_id, "--json"))
    assert doc["status"] == "withdrawn"
    assert doc["outcome_reason"] == "the data centre was sold"
    version = stored_version(stack, request_id)

    late = stack.run("decide", request_id, "--gate", "us-export", "--reviewer", "alice", "--approve")
    refused(late, request_id, "final")
    assert stored_version(stack, request_id) == version
    events = as_json(stack.run("events", request_id, "--json"))
    assert events[-1]["type"] == "RequestWithdrawn"


# -- domestic evidence and the licence ---------------------------------------------------------------
def write_csv(path: Path, *rows: str) -> Path:
    path.write_text(
        "\n".join(["vendor,product,units,invoice,invoice_date,data_center,po_number", *rows]) + "\n"
    )
    return path


def test_evidence_from_csv_is_judged_record_by_record_then_the_licence(stack: Stack, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    request_id = new_id("evidence")
    foreign = {"vendor": "NVIDIA", "product": "H20", "units": 10_000, "invoice": f"NV-{tag}-0"}
    path = request_file(
        tmp_path,
        request_id,
        units=10_000,
        buyer__name=f"Evidence Buyer {tag}",
        domestic_procurement=[foreign],
    )
    submitted_out = ok(stack.run("submit", path))
    assert f"not counted: invoice 'NV-{tag}-0': vendor 'NVIDIA' is not a domestic vendor" in flat(
        submitted_out.stdout
    ), show(submitted_out)
    wait_for_gate = time.monotonic() + 20
    while "PartiesScreened" not in {e["type"] for e in as_json(stack.run("events", request_id, "--json"))}:
        assert time.monotonic() < wait_for_gate, f"{request_id} was never screened"
        time.sleep(0.1)
    # Square brackets in a condition are text, not rich markup: the licence must print them.
    condition = "[third-party lab] review of each shipment"
    us = ("decide", request_id, "--gate", "us-export", "--reviewer", "alice", "--approve")
    refused(stack.run(*us, "--condition", " "), "conditions.0", code=2)
    ok(stack.run(*us, "--condition", condition))
    ok(stack.run("decide", request_id, "--gate", "cn-import", "--reviewer", "wang", "--approve"))

    # Bad input: every bad row named by its line, exit 2, nothing sent.
    bad = write_csv(tmp_path / "bad.csv", f"Huawei,Ascend 910C,0,HW-{tag}-0,,,", "Huawei,Ascend 910C,5,,,,")
    refused(stack.run("evidence", request_id, bad), "row 2, units", "row 3, invoice", code=2)
    # Records that do not count are reported one by one; those that do become events.
    mixed = write_csv(
        tmp_path / "mixed.csv",
        f"Huawei,Ascend 910C,4000,HW-{tag}-1,2026-01-05,Wuhu Compute Cluster 3,PO-1",
        f"NVIDIA,H20,3000,NV-{tag}-1,2026-01-05,,PO-2",
        f"Cambricon,MLU590,2000,CB-{tag}-1,2098-01-01,,PO-3",
    )
    sent = ok(stack.run("evidence", request_id, mixed))
    text = flat(sent.stdout)
    assert "EvidenceAdded, EvidenceRejected, DomesticQuotaAssessed" in text, show(sent)
    assert f"not counted: invoice 'NV-{tag}-1': vendor 'NVIDIA' is not a domestic vendor" in text, show(sent)
    assert f"not counted: invoice 'CB-{tag}-1': invoice_date 2098-01-01 is in the future" in text, show(sent)
    status = ok(stack.run("status", request_id))
    assert "shortfall 6000" in flat(status.stdout), show(status)
    assert "waiting for evidence of 6000 more domestic units until" in flat(status.stdout), show(status)
    doc = as_json(stack.run("status", request_id, "--json"))
    assert doc["domestic_quota"]["domestic_units"] == 4_000 and len(doc["rejected_evidence"]) == 3

    # Nothing that counts: refused before anything is recorded; the same invoice twice is one invoice.
    before = stored_version(stack, request_id)
    none = write_csv(tmp_path / "none.csv", f"Huawei,Ascend 910C,4000,HW {tag} 1,,,")
    refused(stack.run("evidence", request_id, none), "no record counts", "already submitted for this request")
    assert stored_version(stack, request_id) == before
    refused(
        stack.run("decide", request_id, "--gate", "domestic-quota", "--reviewer", "li", "--approve"),
        "domestic quota not met",
        "short by 6000",
    )
    rest = write_csv(tmp_path / "rest.csv", f"Hygon,DCU K100,6000,HY-{tag}-1,2026-02-01,,")
    ok(stack.run("evidence", request_id, rest))
    ok(stack.run("decide", request_id, "--gate", "domestic-quota", "--reviewer", "li", "--approve"))

    licence = ok(stack.run("licence", request_id))
    assert f"licence LIC-{request_id}" in flat(licence.stdout), show(licence)
    issued = as_json(stack.run("licence", request_id, "--json"))
    assert issued["units"] == 10_000 and issued["holder"] == f"Evidence Buyer {tag}"
    valid_from, valid_until = (issued[key][:10] for key in ("issued_at", "valid_until"))
    assert int(valid_until[:4]) - int(valid_from[:4]) == 4 and valid_until[4:] == valid_from[4:]
    assert issued["conditions"] == [
        *us_export.GATE.section(load_policy("default")).default_conditions,
        condition,
    ]
    assert condition in licence.stdout, show(licence)
    events = as_json(stack.run("events", request_id, "--json"))
    [added, *_] = [e for e in events if e["type"] == "EvidenceAdded"]
    assert added["data"]["records"][0]["po_number"] == "PO-1"  # extra columns travel with the record
    refused(
        stack.run("licence", submitted(stack, tmp_path, "unlicensed")), "has no licence", "us_export_review"
    )


# -- the audit ----------------------------------------------------------------------------------------
def test_audit_verify_finds_a_tampered_event(stack: Stack, tmp_path: Path) -> None:
    request_id = submitted(stack, tmp_path, "tamper")
    # A consistent copy of the live store (WAL and all); only the copy is tampered with.
    copy = tmp_path / "tampered" / "events.db"
    copy.parent.mkdir()
    with (
        closing(sqlite3.connect(f"file:{stack.events_db}?mode=ro", uri=True)) as source,
        closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
    env = stack.env | {"CHIPCLEAR_EVENT_STORE": f"sqlite:///{copy}"}
    intact = ok(chipclear(env, "audit", "verify"))
    assert "intact" in intact.stdout, show(intact)

    conn = sqlite3.connect(copy)
    try:
        conn.execute("DROP TRIGGER events_append_only_update")
        conn.execute("DROP TRIGGER events_append_only_delete")
        cursor = conn.execute(
            "UPDATE events SET data = replace(data, '60000', '90000') "
            "WHERE stream_id = ? AND version = 1 AND data LIKE '%60000%'",
            (request_id,),
        )
        assert cursor.rowcount == 1
        conn.commit()
    finally:
        conn.close()

    broken, report = parallel(env, [("audit", "verify"), ("audit", "verify", "--json")])
    refused(broken, request_id, "version 1")
    assert report.returncode == 1, show(report)
    document = json.loads(report.stdout)
    assert document["ok"] is False
    assert [(b["stream_id"], b["version"]) for b in document["breaks"]] == [(request_id, 1)]

    ok(stack.run("audit", "verify"))  # the live store is untouched


# -- allocation batches -----------------------------------------------------------------------------
def test_batches_open_list_and_show(stack: Stack) -> None:
    batch = new_id("B")
    opened = ok(
        stack.run(
            "batch", "open", "--id", batch, "--units", "400000",
            "--priority", "ByteDance,Alibaba,Tencent", "--per-company-cap", "150000",
            "--eligible", "priority", "--actor", "wang", "--json",
        )
    )  # fmt: skip
    # A batch is opened by an import reviewer: chen (logged in) is none, and nothing is opened.
    refused(
        stack.run("batch", "open", "--id", new_id("B"), "--units", "5"),
        "'chen' may not open allocation batches",
    )
    assert json.loads(opened.stdout)["capacity"] == 400_000
    listed = json.loads(ok(stack.run("batch", "list", "--json")).stdout)
    row = next(b for b in listed["batches"] if b["batch_id"] == batch)
    assert (row["capacity"], row["allocated"], row["free"]) == (400_000, 0, 400_000)
    assert row["priority"] == ["ByteDance", "Alibaba", "Tencent"] and row["eligible"] == "priority"
    shown = json.loads(ok(stack.run("batch", "show", batch, "--json")).stdout)
    assert shown["allocations"] == [] and shown["per_company_cap"] == 150_000
    refused(stack.run("batch", "open", "--id", batch, "--units", "5", "--actor", "wang"), "already open")
    refused(stack.run("batch", "open", "--id", "bad id", "--units", "0"), "batch_id", "capacity", code=2)
    refused(stack.run("batch", "show", "no-such-batch"), "no batch", code=1)


# -- showcase ---------------------------------------------------------------------------------------
def test_demo(stack: Stack) -> None:
    result = ok(stack.run("demo"))
    out = flat(result.stdout)
    for word in ("ByteDance", "denied", "licensed"):
        assert word in out, show(result)


# -- without the server -----------------------------------------------------------------------------
def test_status_from_the_event_store_when_the_server_is_down(stack: Stack, tmp_path: Path) -> None:
    request_id = submitted(stack, tmp_path, "offline")
    nobody = free_port()
    assert not accepts(nobody)
    env = stack.env | {"TEMPORAL_ADDRESS": f"127.0.0.1:{nobody}"}
    status, submit = parallel(
        env, [("status", request_id, "--json"), ("submit", request_file(tmp_path, new_id("offline")))]
    )
    doc = as_json(status)
    assert doc["source"] == "event-store"
    assert doc["request_id"] == request_id and doc["status"] == "us_export_review"
    refused(submit, "cannot reach the Temporal server", f"127.0.0.1:{nobody}")
    assert len(submit.stderr.strip().splitlines()) == 1, show(submit)


def test_status_from_the_workflow_when_the_event_store_is_down(stack: Stack, tmp_path: Path) -> None:
    """Issue 16: the store unreachable (here a PostgreSQL URL nobody serves), a running request's state
    still comes from its workflow, which Temporal holds, and stderr says why; an unknown one exits 1."""
    request_id = submitted(stack, tmp_path, "store-down")
    nobody = free_port()
    env = stack.env | {"CHIPCLEAR_EVENT_STORE": f"postgresql://chipclear@127.0.0.1:{nobody}/events"}
    status, unknown = parallel(env, [("status", request_id, "--json"), ("status", new_id("never"))])
    doc = as_json(status)
    assert doc["source"] == "workflow"
    assert doc["request_id"] == request_id and doc["status"] == "us_export_review"
    assert "cannot reach the PostgreSQL event store" in flat(status.stderr)
    assert "Temporal holds" in flat(status.stderr)
    refused(unknown, "cannot reach the PostgreSQL event store")


def test_without_a_worker_status_reads_the_event_store_and_submit_says_starting(tmp_path: Path) -> None:
    """The server is up, the worker gone: `status` answers from the event store, never a traceback, and
    `submit` starts the workflow and says it waits for a worker, within seconds.

    At first the server lets a query time out; once it has seen no poller for a while (about 15 s on
    the dev server) it refuses the query instead (FAILED_PRECONDITION, "no poller seen for task queue
    recently"). `status` is asked at both times.
    """
    with open_stack(tmp_path, policy_text()) as own:
        request_id = submitted(own, tmp_path, "no-worker")
        own.worker.send_signal(signal.SIGTERM)
        assert own.worker.wait(timeout=20) == 0, own.worker_log.read_text()
        stopped = time.monotonic()
        for after in (0, 22):
            time.sleep(max(0.0, stopped + after - time.monotonic()))
            doc = as_json(own.run("status", request_id, "--json"))
            assert doc["source"] == "event-store" and doc["status"] == "us_export_review", after
            if after == 0:
                late = ok(own.run("submit", request_file(tmp_path, new_id("no-worker-late"))))
                assert "status: starting (no worker has taken it up yet" in flat(late.stdout), show(late)


# -- process hygiene -----------------------------------------------------------------------------
def test_cli_exits_cleanly_after_temporal_calls(stack: Stack, tmp_path: Path) -> None:
    """A refused `decide` must exit 1, every time, not abort after printing its error.

    Without care a command that talked to Temporal can die at interpreter exit with SIGABRT: the
    client's Rust runtime threads still run while CPython finalizes (temporalio/sdk-python#300). The
    entry point flushes and leaves with os._exit(code); this race-prone case is repeated to prove it.
    """
    request_id = submitted(stack, tmp_path, "crash")
    attempts = 30
    results = parallel(
        stack.env,
        [("decide", request_id, "--gate", "us-export", "--reviewer", "chen", "--approve")] * attempts,
        workers=4,
        fresh=True,  # the interpreter's own exit is what is tested
    )
    assert all("may not decide" in r.stderr for r in results)
    crashed = [r for r in results if r.returncode != 1]
    assert not crashed, [(r.returncode, r.stderr[-500:]) for r in crashed]


def test_server_stops_its_dev_server_on_sigterm(tmp_path: Path) -> None:
    """`chipclear server` stopped with SIGTERM (kill, systemd, docker stop) must not leave its dev server.

    Otherwise the `temporal server start-dev` child would live on (re-parented to init), holding the
    port and the database.
    """
    port, ui_port = free_port(), free_port()
    env = hermetic_env(CHIPCLEAR_HOME=str(tmp_path))
    cmd = [str(CHIPCLEAR), "server", "--port", str(port), "--ui-port", str(ui_port)]
    cmd += ["--db", str(tmp_path / "temporal.db")]
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    dev_servers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not (dev_servers := children_of(server.pid)) or not accepts(port):
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the dev server did not listen within 30 s"
            time.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        deadline = time.monotonic() + 3  # stop() gives the dev server 15 s; it needs about one
        while any(alive(pid) for pid in dev_servers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in dev_servers if alive(pid)]
        assert not left, f"dev server {left} outlived `chipclear server`; port {port} open: {accepts(port)}"
    finally:
        reap(server, dev_servers)


# -- moving the record between backends ---------------------------------------------------------------
def test_export_from_sqlite_import_into_postgresql_verifies_and_every_status_agrees(
    stack: Stack, postgres: Cluster, tmp_path: Path
) -> None:
    """The move an operator makes from one machine to a cluster: everything this module's tests stored."""
    submitted(stack, tmp_path, "moved")  # at least one request of this test's own, waiting at us-export
    requests = [row["request_id"] for row in as_json(stack.run("list", "--json"))]
    assert requests
    export = tmp_path / "record.jsonl"
    exported = ok(stack.run("store", "export", "--format", "jsonl", "--output", export))
    assert f"to {export}" in flat(exported.stderr)

    # The auditor's machine: the same policy (the keys it trusts), a home of its own.
    target_home = tmp_path / "target-home"
    keys.install(target_home)
    target = hermetic_env(
        CHIPCLEAR_EVENT_STORE=postgres.new_schema(),
        CHIPCLEAR_HOME=str(target_home),
        CHIPCLEAR_POLICY=stack.env["CHIPCLEAR_POLICY"],
    )
    ok(chipclear(target, "store", "migrate"))
    imported = ok(chipclear(target, "store", "import", export))
    assert "every chain, seal and signed act verified" in flat(imported.stdout), show(imported)
    source_report = as_json(stack.run("audit", "verify", "--json"))
    target_report = as_json(chipclear(target, "audit", "verify", "--json"))
    # The export carries the record, not the lab reports kept beside it: the auditor's home is told which
    # reports the shipments name that it does not hold (every one the source keeps), and nothing else differs.
    kept = sorted(path.name for path in (stack.home / "files" / "sha256").glob("*/*"))
    assert source_report.pop("lab_reports_not_kept_here") == []
    assert sorted(set(target_report.pop("lab_reports_not_kept_here"))) == kept
    assert target_report == source_report and target_report["ok"] is True
    assert as_json(chipclear(target, "list", "--json")) == as_json(stack.run("list", "--json"))

    # `status` with no server to ask reads the event store: the same answer from either backend.
    nobody = {"TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    commands = [("status", request_id, "--json") for request_id in requests]
    from_sqlite = parallel(stack.env | nobody, commands, workers=4)
    from_postgresql = parallel(target | nobody, commands, workers=4)
    for request_id, old, new in zip(requests, from_sqlite, from_postgresql, strict=True):
        assert as_json(new) == as_json(old), request_id
        assert as_json(new)["source"] == "event-store"


def test_worker_on_postgresql_answers_its_probes(pg_stack: Stack) -> None:
    import urllib.request

    port = pg_stack.env["CHIPCLEAR_HEALTH_PORT"]
    for path, detail in (("/healthz", "alive"), ("/readyz", "polling, event store reachable")):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            assert answer.status == 200
            assert json.loads(answer.read()) == {"status": "ok", "detail": detail}


def test_worker_refuses_an_unmigrated_postgresql_store(postgres: Cluster, tmp_path: Path) -> None:
    env = hermetic_env(
        CHIPCLEAR_EVENT_STORE=postgres.new_schema(),
        CHIPCLEAR_HOME=str(tmp_path),
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",  # never reached: the store is checked first
    )
    keys.install(tmp_path)  # the reviewers' keys and the recorder's: the schema is what is wrong
    refused(chipclear(env, "worker"), "schema is at version 0", "chipclear store migrate")
