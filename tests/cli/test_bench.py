"""`chipclear bench` runs end to end, on a throwaway SQLite store or on the event store it is given."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import closing
from pathlib import Path

from chipclear.bench import _process_cpu
from chipclear.bench_report import BEGIN, END
from chipclear.domain.models import Status
from chipclear.projections import list_requests
from chipclear.store.factory import open_store
from tests.cli.test_cli import CHIPCLEAR, accepts, alive, children_of, chipclear, hermetic_env, ok, reap


def test_bench_on_a_postgresql_event_store_records_every_request_and_writes_the_docs(
    pg_url: str, tmp_path: Path
) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nBefore.\n\n{BEGIN}\nold figures\n{END}\n\nAfter.\n", encoding="utf-8")
    result = ok(
        chipclear(
            hermetic_env(),
            "bench", "-n", "4", "--concurrency", "4", "--no-allocation", "--event-store", pg_url,
            "--write-docs", str(doc), "--json",
        )
    )  # fmt: skip
    report = json.loads(result.stdout)  # stdout is the JSON alone
    assert report["event_store"] == "postgresql" and report["allocation"] is False
    assert {row["workflows"] for row in report["results"].values()} == {4}
    assert all(row["per_second"] > 0 for row in report["results"].values())
    # CPU per workflow, the worker's process and the dev server's: what a throughput gap is made of.
    assert all(row["worker_cpu_ms"] > 0 and row["server_cpu_ms"] > 0 for row in report["results"].values())
    with closing(open_store(pg_url)) as store:
        requests = list_requests(store)
        assert len(requests) >= 4 and {row.status for row in requests} == {Status.LICENSED}  # + warm-up
        assert store.verify().ok
    # The run's figures, the machine and the date, in the generated block alone.
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Performance\n\nBefore.\n\n" + BEGIN) and text.endswith(END + "\n\nAfter.\n")
    assert "old figures" not in text and f"{os.cpu_count()} cores" in text and "load average" in text
    assert f"**{report['ratio_vs_regular']}**" in text and "postgresql event store" in text
    assert text.count("| bare: 3 regular activities | 4 |") == 1
    assert "| worker CPU ms | server CPU ms |" in text


def test_a_processs_cpu_seconds_are_read_from_proc() -> None:
    before = _process_cpu(os.getpid())
    assert before is not None and _process_cpu(None) is None
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn 0.3 s of CPU in this process
        pass
    after = _process_cpu(os.getpid())
    assert after is not None and 0.2 <= after - before <= 2.0
    assert _process_cpu(2**22 + 12345) is None  # no such process


def test_bench_refuses_a_docs_file_without_its_block_before_running(tmp_path: Path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n", encoding="utf-8")
    result = chipclear(hermetic_env(), "bench", "--write-docs", str(doc))
    assert result.returncode == 2 and "has no block for the bench to write" in result.stderr
    assert "Traceback" not in result.stderr and doc.read_text(encoding="utf-8") == "# Notes\n"


def test_bench_whose_worker_cannot_start_says_why_instead_of_waiting(tmp_path: Path) -> None:
    # Nothing listens on port 1: the worker fails to open its store before it is ever ready.
    url = "postgresql://nobody@127.0.0.1:1/none"
    result = chipclear(hermetic_env(), "bench", "-n", "1", "--concurrency", "1", "--event-store", url)
    assert result.returncode == 1 and "cannot reach the PostgreSQL event store" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_stopped_with_sigterm_stops_its_dev_server_and_says_so(tmp_path: Path) -> None:
    """A bench ended by SIGTERM (a `timeout`, a cancelled CI job) takes the Ctrl-C path: its throwaway dev
    server stops with it and its files go, instead of a server left running, orphaned, on the run's
    leftover workflows; exit 130 and one sentence, no traceback."""
    cmd = [str(CHIPCLEAR), "bench", "-n", "10000", "--concurrency", "20", "--json"]
    with (tmp_path / "stderr").open("wb") as err:
        bench = subprocess.Popen(cmd, env=hermetic_env(), stdout=subprocess.PIPE, stderr=err)
    dev_servers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None or not accepts(port):
            assert bench.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "the bench's dev server did not listen within 60 s"
            dev_servers = children_of(bench.pid)
            for pid in dev_servers:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"--port" in args:
                    port = int(args[args.index(b"--port") + 1])
                    home = Path(args[args.index(b"--db-filename") + 1].decode()).parent
            time.sleep(0.2)
        time.sleep(3)  # requests under way
        bench.send_signal(signal.SIGTERM)
        out, _ = bench.communicate(timeout=60)
        stderr = (tmp_path / "stderr").read_text()
        assert bench.returncode == 130, stderr
        assert "bench stopped before it finished" in stderr and "Traceback" not in stderr
        assert out == b""  # no half a report
        assert not any(alive(pid) for pid in dev_servers), f"dev server outlived the bench; port {port}"
        assert not home.exists()  # the run's throwaway server database and event store went with it
    finally:
        reap(bench, dev_servers)


def test_bench_refuses_more_requests_than_a_batch_holds_naming_the_option() -> None:
    result = chipclear(hermetic_env(), "bench", "-n", "100000")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--requests" in result.stderr and "10000" in result.stderr
