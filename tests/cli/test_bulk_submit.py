"""Bulk submission (issue 18, item 4): `chipclear submit DIR`, `submit orders.csv`, several paths.

Against the session's real Temporal dev server, with no worker polling this module's own task queue:
submitting is starting workflows, and that is what is tested here (a single `submit` and the worker
taking requests up are tested in test_cli.py). Every workflow started here is terminated when the module
ends, so nothing of it is left running for the session's end-of-session checks. The CLI runs as a user
runs it (a subprocess, piped: plain lines), but for the progress bar, which needs a terminal.

The order book's reading rules (columns, bounds, spreadsheet row numbers) are tested without a server.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from chipclear.bulk import COLUMNS, REQUIRED_COLUMNS, Pending, read_paths
from chipclear.cli.files import InvalidInput
from chipclear.domain.limits import MAX_ORDER_CELL, MAX_ORDER_ROWS
from chipclear.domain.models import ImportRequest
from chipclear.domain.screening.csl import bundled_list
from chipclear.domain.screening.index import ScreeningIndex
from chipclear.domain.screening.models import parties_of
from chipclear.projections import PROJECTIONS
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys
from tests.cli.test_cli import EXAMPLE_REQUEST, ROOT, Result, chipclear, flat, hermetic_env, ok, show
from tests.wedge_check import on_deployment

ORDERS = ROOT / "examples" / "orders" / "orders.csv"
SUMMARY = re.compile(
    r"done: (\d+) submitted, (\d+) already submitted, (\d+) refused, of (\d+) in [\d.]+ s( \(\d+ a second\))?"
)


# -- the rig ------------------------------------------------------------------------------------------
@dataclass
class Rig:
    env: dict[str, str]
    task_queue: str

    def run(self, *args: str | Path) -> Result:
        return chipclear(self.env, *args)


@pytest.fixture(scope="module")
async def rig(
    temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Rig]:
    """A home with every test person's key and an empty store, the session's dev server, a task queue no
    worker polls. Logged in as chen, a compliance officer the bundled policy registers: every submission
    is signed with chen's key, as a real one is."""
    home = tmp_path_factory.mktemp("bulk-home")
    keys.install(home)
    SQLiteEventStore(
        home / "events.db", projections=PROJECTIONS
    ).close()  # `submit` reads it, never creates it
    task_queue = f"bulk-{uuid.uuid4().hex[:10]}"
    env = hermetic_env(
        TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        CHIPCLEAR_HOME=str(home),
        CHIPCLEAR_TASK_QUEUE=task_queue,
        LOGNAME="chen",
        USER="chen",
    )
    yield Rig(env, task_queue)
    await terminate_everything_on(temporal_env.client, task_queue)


async def terminate_everything_on(client: Client, task_queue: str) -> None:
    """End every workflow this module started (none has a worker, so none would ever end by itself)."""
    query = f"{on_deployment(task_queue)} AND ExecutionStatus = 'Running'"
    limit = asyncio.Semaphore(32)

    async def end(workflow_id: str) -> None:
        async with limit:
            await client.get_workflow_handle(workflow_id).terminate(reason="tests/cli/test_bulk_submit.py")

    for _ in range(30):  # the visibility store lists a workflow a moment after it starts
        running = [execution.id async for execution in client.list_workflows(query)]
        if not running and (await client.count_workflows(query)).count == 0:
            return
        await asyncio.gather(*(end(workflow_id) for workflow_id in running))
        await asyncio.sleep(0.5)
    raise AssertionError(f"workflows still running on {task_queue}")


def request_file(directory: Path, request_id: str, **changes: Any) -> Path:
    document = yaml.safe_load(EXAMPLE_REQUEST.read_text(encoding="utf-8"))
    document |= {"request_id": request_id, **changes}
    path = directory / f"{request_id}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def summary(result: Result) -> tuple[int, int, int, int]:
    """(submitted, already submitted, refused, total) from the last line."""
    found = SUMMARY.fullmatch(result.stdout.strip().splitlines()[-1])
    assert found, show(result)
    submitted, already, refused_, total = (int(found[n]) for n in range(1, 5))
    return submitted, already, refused_, total


def order_rows(path: Path = ORDERS) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def write_orders(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def no_traceback(result: Result) -> Result:
    assert "Traceback" not in result.stdout + result.stderr, show(result)
    return result


# -- against the dev server -----------------------------------------------------------------------------
def test_a_directory_of_500_request_files_goes_in_once(rig: Rig, tmp_path: Path) -> None:
    """500 files start 500 workflows, one plain line each in file-name order, then the summary; the same
    command again starts nothing and says every one is already submitted."""
    folder = tmp_path / "requests"
    folder.mkdir()
    run = uuid.uuid4().hex[:8]
    ids = [f"dir-{run}-{number:03d}" for number in range(500)]
    for number, request_id in enumerate(ids):
        request_file(folder, request_id, units=1_000 + number)
    (folder / "notes.txt").write_text("not a request: a directory's other files are not read")
    (folder / ".hidden.yaml").write_text("not: a request")  # an editor's or a tool's, never read
    (folder / "nested").mkdir()
    request_file(folder / "nested", f"nested-{run}")  # subdirectories are not read

    first = no_traceback(ok(rig.run("submit", folder)))
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 501, show(first)
    assert lines[:-1] == [f"submitted {request_id} ({folder / request_id}.yaml)" for request_id in ids]
    assert summary(first) == (500, 0, 0, 500)

    again = json.loads(no_traceback(ok(rig.run("submit", folder, "--json", "--concurrency", "64"))).stdout)
    assert {key: again[key] for key in ("total", "submitted", "already_submitted", "refused", "failed")} == {
        "total": 500,
        "submitted": 0,
        "already_submitted": 500,
        "refused": 0,
        "failed": 0,
    }
    assert again["concurrency"] == 64
    assert [outcome["request_id"] for outcome in again["outcomes"]] == ids
    assert {outcome["workflow_id"] for outcome in again["outcomes"]} == {f"import-{i}" for i in ids}

    async def started() -> list[WorkflowExecutionStatus | None]:
        client = await Client.connect(rig.env["TEMPORAL_ADDRESS"])
        return [
            (await client.get_workflow_handle(f"import-{request_id}").describe()).status
            for request_id in (ids[0], ids[250], ids[-1])
        ]

    assert asyncio.run(started()) == [WorkflowExecutionStatus.RUNNING] * 3


def test_the_order_book_goes_in_row_by_row(rig: Rig) -> None:
    """examples/orders/orders.csv, the order book from the news: every row a valid request, started."""
    rows = order_rows()
    result = no_traceback(ok(rig.run("submit", ORDERS.relative_to(ROOT), "--concurrency", "32")))
    lines = result.stdout.strip().splitlines()
    assert lines[:-1] == [
        f"submitted {row['request_id']} (examples/orders/orders.csv row {number})"
        for number, row in enumerate(rows, start=2)
    ], show(result)
    assert summary(result) == (len(rows), 0, 0, len(rows))


def test_a_bad_file_in_a_directory_is_named_and_the_others_go_in(rig: Rig, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    for name in ("a", "c", "e"):
        request_file(tmp_path, f"{name}-{run}")
    (tmp_path / f"b-{run}.yaml").write_text(
        EXAMPLE_REQUEST.read_text(encoding="utf-8").replace("units: 60000", "units: true")
    )
    (tmp_path / f"d-{run}.json").write_text('{"request_id": "d", ')  # cut short

    result = no_traceback(rig.run("submit", tmp_path))
    assert result.returncode == 2, show(result)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"submitted a-{run} ({tmp_path}/a-{run}.yaml)"
    assert lines[1].startswith(f"refused {tmp_path}/b-{run}.yaml: units: "), show(result)
    assert lines[2] == f"submitted c-{run} ({tmp_path}/c-{run}.yaml)"
    assert lines[3].startswith(f"refused {tmp_path}/d-{run}.json: not valid JSON"), show(result)
    assert lines[4] == f"submitted e-{run} ({tmp_path}/e-{run}.yaml)"
    assert summary(result) == (3, 0, 2, 5)
    assert flat(result.stderr) == (
        "error: 2 of 5 refused, named above; the other 3 went in: fix those and run the same command "
        "again (what went in is skipped)"
    )


def test_a_bad_row_in_an_order_book_is_named_and_the_others_go_in(rig: Rig, tmp_path: Path) -> None:
    """Row 3 is refused, naming its columns; rows 2 and 4 go in. Run again with row 2 changed: row 2 is
    refused for its different content, row 4 is already in, and the fixed row 3 goes in."""
    run = uuid.uuid4().hex[:8]
    rows = [row | {"request_id": f"row-{run}-{n}"} for n, row in enumerate(order_rows()[:3], start=2)]
    rows[1] |= {"buyer_kind": "privat", "units": "0500"}
    book = write_orders(tmp_path / "orders.csv", rows)

    result = no_traceback(rig.run("submit", book))
    assert result.returncode == 2, show(result)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"submitted row-{run}-2 ({book} row 2)"
    assert lines[1] == (
        f"refused {book} row 3: buyer_kind: Input should be 'private', 'state_owned', 'government', "
        "'military', 'critical_infrastructure' or 'university' (got 'privat'); units: Input should be a "
        "valid integer (got '0500')"
    )
    assert lines[2] == f"submitted row-{run}-4 ({book} row 4)"
    assert summary(result) == (2, 0, 1, 3)

    rows[0] |= {"units": str(int(rows[0]["units"]) - 1)}
    rows[1] |= {"buyer_kind": "private", "units": "500"}
    document = json.loads(no_traceback(rig.run("submit", write_orders(book, rows), "--json")).stdout)
    assert [(o["source"], o["outcome"]) for o in document["outcomes"]] == [
        (f"{book} row 2", "refused"),
        (f"{book} row 3", "submitted"),
        (f"{book} row 4", "already_submitted"),
    ]
    assert "already used by a request with different content" in document["outcomes"][0]["reason"]


def test_one_id_twice_in_one_run_is_sent_once(rig: Rig, tmp_path: Path) -> None:
    """The same request in a file and a row goes in once; a different request under a taken id is refused."""
    run = uuid.uuid4().hex[:8]
    copy, other = tmp_path / "copy", tmp_path / "other"
    copy.mkdir()
    other.mkdir()
    path = request_file(tmp_path, f"twice-{run}")
    same = request_file(copy, f"twice-{run}")
    changed = request_file(other, f"twice-{run}", units=59_999)

    result = no_traceback(rig.run("submit", path, same, changed, "--concurrency", "1"))
    assert result.returncode == 2, show(result)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"submitted twice-{run} ({path})"
    assert lines[1] == f"already submitted twice-{run} ({same}): the same request as {path}"
    assert lines[2].startswith(
        f"refused {changed}: request_id 'twice-{run}' is also at {path}, with different"
    )


def test_bulk_options_are_checked_before_anything_starts(rig: Rig) -> None:
    waiting = no_traceback(rig.run("submit", ROOT / "examples", "--wait"))
    assert waiting.returncode == 2 and "--wait takes one request file" in flat(waiting.stderr), show(waiting)
    too_many = no_traceback(rig.run("submit", ROOT / "examples", "--concurrency", "65"))
    assert too_many.returncode == 2 and "--concurrency" in too_many.stderr, show(too_many)


def test_a_terminal_sees_a_progress_bar(rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the requests are counted by a bar, refusals printed above it, then the summary."""
    from chipclear.cli import output
    from chipclear.cli.common import Act
    from chipclear.cli.submit import submit_many

    screen = io.StringIO()
    # Wide enough that no line wraps, however long the temporary directory's path is.
    terminal = output.SafeConsole(file=screen, force_terminal=True, width=400, color_system=None)
    monkeypatch.setattr(output, "console", terminal)
    for name, value in rig.env.items():
        if name.startswith(("TEMPORAL_", "CHIPCLEAR_")):
            monkeypatch.setenv(name, value)
    run = uuid.uuid4().hex[:8]
    for name in ("bar-a", "bar-b"):
        request_file(tmp_path, f"{name}-{run}")
    (tmp_path / "bar-c.yaml").write_text("request_id: [")

    with pytest.raises(typer.Exit) as exit_code:  # from `fail`: bar-c is refused
        submit_many([tmp_path], concurrency=4, act=Act(key_file=None, json=False, actor="chen"))
    assert exit_code.value.exit_code == 2
    shown = screen.getvalue()
    assert "submitting" in shown and "3/3" in shown, shown
    assert f"refused {tmp_path}/bar-c.yaml: not valid YAML" in shown, shown
    assert f"submitted bar-a-{run}" not in shown  # on a terminal the bar counts what went in
    assert SUMMARY.search(shown.strip().splitlines()[-1]), shown


# -- the order book as data (no server) ------------------------------------------------------------------
def test_the_order_book_is_the_one_from_the_news() -> None:
    """More than 2 million units; ByteDance, Alibaba, Tencent, JD.com and about 200 other buyers; every
    row a valid request the bundled default policy can take (US exporters, no state-funded data centre,
    no invoice counted twice) and nobody the bundled screening list names."""
    requests = [item.load() for item in read_paths([ORDERS])]
    assert len({request.request_id for request in requests}) == len(requests)
    assert sum(request.units for request in requests) > 2_000_000
    buyers = {request.buyer.name for request in requests}
    assert {"ByteDance Ltd.", "Alibaba Group Holding Ltd.", "Tencent Holdings Ltd.", "JD.com, Inc."} <= buyers
    assert len(buyers) >= 200
    assert all(request.exporter is not None and request.exporter.country == "US" for request in requests)
    assert sum(request.exporter.name == "NVIDIA Corporation" for request in requests if request.exporter) > (
        0.8 * len(requests)
    )
    assert all(request.units <= 75_000 for request in requests)  # the default max_units_per_request
    assert not any(request.data_center.state_funded for request in requests)
    invoices = [record.invoice for request in requests for record in request.domestic_procurement]
    assert len(invoices) == len(set(invoices))
    index = ScreeningIndex(bundled_list())
    assert not [match for request in requests for match in index.screen(parties_of(request), 90)]


def pending_from(tmp_path: Path, text: str, name: str = "book.csv") -> list[Pending]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return read_paths([path])


def refusal(item: Pending) -> str:
    with pytest.raises(InvalidInput) as info:
        item.load()
    return str(info.value)


HEADER = ",".join(REQUIRED_COLUMNS)
ROW = "r-1,ByteDance Ltd.,CN,private,NVIDIA Corporation,Model training,500,Wuhu AI Campus 1,Anhui"


def test_an_order_books_cells_are_read_as_a_spreadsheet_writes_them(tmp_path: Path) -> None:
    extra = "state_funded,unit_price_usd,installed_domestic,consignee_name,consignee_country,consignee_kind"
    items = pending_from(
        tmp_path,
        f"\ufeff{HEADER},{extra}\r\n"  # a byte-order mark and CRLF, as a spreadsheet saves it
        f"{ROW},FALSE,31500.50,0,Lenovo (Beijing) Co. Ltd.,CN,private\r\n"
        ",,,,\r\n\r\n"  # blank rows are skipped, and counted
        '"r-2","Tencent Holdings Ltd.",CN,private,NVIDIA Corporation,"Cloud, inference\nand search",7,DC,'
        "Guangdong,true,,,,,\r\n",
    )
    assert [item.source for item in items] == [f"{tmp_path}/book.csv row 2", f"{tmp_path}/book.csv row 5"]
    first, second = (item.load() for item in items)
    assert isinstance(first, ImportRequest)
    assert (first.units, first.unit_price_usd, first.data_center.state_funded) == (500, 31500.5, False)
    assert first.consignees[0].name == "Lenovo (Beijing) Co. Ltd." and first.end_user is None
    assert second.end_use == "Cloud, inference\nand search" and second.data_center.state_funded is True


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"{HEADER},colour\n{ROW},blue\n", "header: unknown column(s) 'colour'"),
        (f"{HEADER.replace('units,', '')}\n{ROW}\n", "header: missing column(s) units"),
        (f"{HEADER},units\n{ROW},5\n", "header: column(s) units named more than once"),
        (f"{HEADER}\n", "no rows under the header row"),
        ("", "header: the first row names the columns"),
        (f'{HEADER}\n{ROW},"unclosed\n', "not valid CSV"),
    ],
)
def test_an_order_book_that_cannot_be_read_is_refused_whole(tmp_path: Path, text: str, says: str) -> None:
    [item] = pending_from(tmp_path, text)
    assert item.source == f"{tmp_path}/book.csv"
    assert says in refusal(item)


@pytest.mark.parametrize(
    ("cells", "says"),
    [
        ({"units": "5e2"}, "units: Input should be a valid integer (got '5e2')"),
        ({"units": ""}, "units: a value is required"),
        ({"buyer_country": "ZZ"}, "buyer_country: Value error, 'ZZ' is not an ISO 3166-1"),
        ({"request_id": "a b"}, "request_id: String should match pattern"),
        (
            {"end_use": "x" * (MAX_ORDER_CELL + 1)},
            f"end_use: {MAX_ORDER_CELL + 1} characters is over the limit",
        ),
        ({"buyer_name": "Nul\x00 Ltd."}, "contains a NUL character"),
    ],
)
def test_a_bad_row_is_refused_naming_its_column(tmp_path: Path, cells: dict[str, str], says: str) -> None:
    row = dict(zip(REQUIRED_COLUMNS, ROW.split(","), strict=True)) | cells
    [item] = pending_from(tmp_path, write_csv(row))
    assert item.source == f"{tmp_path}/book.csv row 2"
    message = refusal(item)
    assert message.startswith(f"{tmp_path}/book.csv row 2: ") and says in message, message


def write_csv(*rows: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_a_row_with_more_cells_than_the_header_is_refused(tmp_path: Path) -> None:
    [item] = pending_from(tmp_path, f"{HEADER}\n{ROW},extra\n")
    assert "10 cells, more than the 9 columns of the header" in refusal(item)


def test_an_order_book_is_bounded(tmp_path: Path) -> None:
    [item] = pending_from(tmp_path, HEADER + "\n" + f"{ROW}\n" * (MAX_ORDER_ROWS + 1))
    assert f"more than {MAX_ORDER_ROWS} rows" in refusal(item)
    assert len(pending_from(tmp_path, HEADER + "\n" + f"{ROW}\n" * MAX_ORDER_ROWS)) == MAX_ORDER_ROWS


def test_a_column_fills_the_field_its_group_names() -> None:
    assert COLUMNS["request_id"] == ("request_id",)
    assert COLUMNS["consignee_kind"] == ("consignees", "0", "kind")
    assert COLUMNS["exporter_country"] == ("exporter", "country")
    assert COLUMNS["state_funded"] == ("data_center", "state_funded")
    assert COLUMNS["domestic_invoice_date"] == ("domestic_procurement", "0", "invoice_date")
    assert len(COLUMNS) == 28 and list(COLUMNS)[:2] == ["request_id", "buyer_name"]


def test_every_column_is_documented() -> None:
    """docs/cli.md describes each column an order book may have."""
    documented = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert not [column for column in COLUMNS if f"`{column}`" not in documented]
