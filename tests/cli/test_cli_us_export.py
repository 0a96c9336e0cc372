"""The us-export gate end to end through the `chipclear` command: screening lists, held requests, the
buyer cap, questions to the applicant and escalation, against a real server, worker and event store.

The stack here runs the bundled default policy with a three-second review SLA, so escalation happens
within a test; allocation batches are off as in test_cli.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest

from chipclear.domain.screening import ScreeningList, bundled_list, parse_csl
from chipclear.projections import PROJECTIONS, open_event_store
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys
from tests.cli.test_cli import (
    TEST_POLICY_VERSION,
    Stack,
    as_json,
    chipclear,
    flat,
    hermetic_env,
    new_id,
    ok,
    open_stack,
    policy_text,
    refused,
    request_file,
    show,
    submitted,
)
from tests.log_events import log_events
from tests.store.support import RECORDER

REVIEW_SLA = "PT3S"
SAMPLE_HEADER = (
    (Path(__file__).resolve().parents[2] / "chipclear" / "data" / "screening-sample.csv")
    .read_text(encoding="utf-8")
    .splitlines()[0]
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    text, count = re.subn(r'(?m)^review_sla = ".*?"', f'review_sla = "{REVIEW_SLA}"', policy_text())
    assert count == 1, "the bundled default policy has no review_sla line"
    with open_stack(tmp_path_factory.mktemp("chipclear-us-export"), text) as running:
        yield running


def event_types(stack: Stack, request_id: str) -> list[str]:
    return [event["type"] for event in as_json(stack.run("events", request_id, "--json"))]


def wait_until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not reached within {within} s: {what}"
        time.sleep(0.2)


def screened(stack: Stack, request_id: str) -> bool:
    """The request's PartiesScreened event is stored (read straight from the event store file)."""
    if not stack.events_db.exists():
        return False
    with closing(sqlite3.connect(f"file:{stack.events_db}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT 1 FROM events WHERE stream_id = ? AND type = 'PartiesScreened'", (request_id,)
        ).fetchone()
    return row is not None


def escalation_logged(stack: Stack, request_id: str) -> bool:
    return any(
        str(record.get("event", "")).startswith("review SLA passed")
        and record.get("request_id") == request_id
        for record in log_events(stack.worker_log)
    )


# -- screening lists ----------------------------------------------------------------------------------
def csl(*rows: str) -> str:
    return "\n".join([SAMPLE_HEADER, *rows]) + "\n"


def csl_row(number: str, name: str, alt_names: str = "") -> str:
    """A row in the sample's column order: _id, source, entity_number, type, programs, name, …"""
    columns = SAMPLE_HEADER.split(",")
    values = dict.fromkeys(columns, "")
    values |= {
        "_id": number,
        "source": "Entity List (EL) - Bureau of Industry and Security",
        "entity_number": number,
        "type": "Entity",
        "name": name,
        "alt_names": alt_names,
    }
    return ",".join(f'"{values[column]}"' for column in columns)


BAD_LISTS = {
    # name: (file text, what stderr must say)
    "no-name-column": ("source,entity_number\nEL,1\n", ["missing column(s) name"]),
    "empty-name": (csl(csl_row("1", "Acme Trading"), csl_row("2", "")), ["row 3, column name"]),
    "header-only": (csl(), ["no entries"]),
    "empty": ("", ["empty"]),
    "extra-fields": (csl(csl_row("1", "Acme Trading") + ',"surplus"'), ["row 2", "more fields"]),
}


def test_screening_load_check_and_versions(tmp_path: Path, stack: Stack) -> None:
    # Lists live in the event store only: a store of this test's own leaves the stack's list alone.
    env = stack.env | {"CHIPCLEAR_HOME": str(tmp_path / "home")}
    keys.install(tmp_path / "home")  # the recorder's key (this CLI seals its loads) and each person's
    # Reading never creates a store: without one, exit 1 naming where it should be.
    for read in (("screening", "versions"), ("screening", "check", "HUAWEI TECHNOLOGIES CO LTD")):
        refused(chipclear(env, *read), f"no event store at {tmp_path / 'home' / 'events.db'}")
    open_event_store(f"sqlite:///{tmp_path / 'home' / 'events.db'}").close()  # as a worker makes it

    none = ok(chipclear(env, "screening", "versions"))
    assert "no list loaded" in flat(none.stdout) and bundled_list().info.version in none.stdout, show(none)
    sample_hit = as_json(chipclear(env, "screening", "check", "HUAWEI TECHNOLOGIES CO LTD", "--json"))
    assert sample_hit["list_version"].startswith("sample-")
    assert [m["entry_name"] for m in sample_hit["matches"]] == ["Huawei Technologies Co., Ltd."]

    for name, (text, needles) in BAD_LISTS.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text, encoding="utf-8")
        refused(chipclear(env, "screening", "load", path), path.name, *needles, code=2)
    refused(chipclear(env, "screening", "load", tmp_path / "missing.csv"), "no such file", code=2)
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(csl(csl_row("1", "Müller Export GmbH")).encode("latin-1"))
    refused(chipclear(env, "screening", "load", latin), "UTF-8", code=2)
    # Nothing of any bad file was kept: no list, no event.
    assert as_json(chipclear(env, "screening", "versions", "--json")) == []
    refused(chipclear(env, "events", "screening-lists"), "no events")

    good = tmp_path / "consolidated.csv"
    good.write_text(
        csl(
            csl_row("EL-1", "Acme Restricted Trading Co., Ltd.", "Acme Trading; 艾克米贸易有限公司"),
            csl_row("EL-2", "Northwind Avionics Limited"),
        ),
        encoding="utf-8",
    )
    # A load is an us-export reviewer's signed act: chen (logged in) may not; nor may alice with wang's key.
    refused(chipclear(env, "screening", "load", good), "'chen' may not load screening lists", "us-export")
    wangs_key = tmp_path / "home" / "keys" / "wang.key"
    refused(
        chipclear(env, "screening", "load", good, "--actor", "alice", "--key", wangs_key),
        "signed with a key that is not alice's",
    )
    assert as_json(chipclear(env, "screening", "versions", "--json")) == []
    load = ("screening", "load", good, "--source", "trade.gov CSL", "--actor", "alice", "--json")
    loaded = as_json(chipclear(env, *load))
    assert loaded["loaded"] is True and loaded["entries"] == 2 and loaded["names"] == 4
    assert loaded["source"] == "trade.gov CSL"
    assert loaded["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert loaded["version"].startswith(f"csl-{loaded['sha256'][:12]}-")
    again = ok(chipclear(env, "screening", "load", good, "--actor", "alice"))
    assert "unchanged" in flat(again.stdout), show(again)

    versions = as_json(chipclear(env, "screening", "versions", "--json"))
    assert [v["version"] for v in versions] == [loaded["version"]]
    check = as_json(
        chipclear(
            env, "screening", "check", "ACME TRADING CO", "Huawei Technologies", "Acne Tradition", "--json"
        )
    )
    assert check["list_version"] == loaded["version"]
    # The loaded list replaces the sample: Huawei is not on it, and a near-miss stays clear.
    assert {(m["party_name"], m["entry_name"]) for m in check["matches"]} == {
        ("ACME TRADING CO", "Acme Restricted Trading Co., Ltd.")
    }
    table = ok(chipclear(env, "screening", "check", "Acme Trading", "ByteDance Ltd."))
    assert "1 match(es): Acme Trading" in flat(table.stdout), show(table)
    assert "clear: ByteDance Ltd." in flat(table.stdout), show(table)

    events = as_json(chipclear(env, "events", "screening-lists", "--json"))
    assert [e["type"] for e in events] == ["ScreeningListLoaded"]
    assert events[0]["data"]["version"] == loaded["version"]
    ok(chipclear(env, "audit", "verify"))


def seeded_home(tmp_path: Path, entries: int) -> tuple[dict[str, str], SQLiteEventStore, ScreeningList]:
    """A home whose event store has a list of `entries` entries in force, stored as a worker stores
    events (sealed by the recorder), and the environment that points `chipclear` at it."""
    home = tmp_path / "home"
    keys.install(home)  # the CLI seals what it loads with the home's recorder key; alice signs the load
    events = SQLiteEventStore(home / "events.db", projections=PROJECTIONS, recorder=RECORDER)
    rows = [csl_row(f"EL-{n}", f"Restricted Trading No. {n} Ltd.") for n in range(1, entries + 1)]
    in_force = parse_csl(csl(*rows), source="trade.gov CSL", loaded_at=datetime.now(UTC))
    assert events.save_screening_list(in_force, by="ops")
    return hermetic_env(CHIPCLEAR_HOME=str(home)), events, in_force


def test_a_far_smaller_list_is_refused(tmp_path: Path) -> None:
    """A truncated download or the wrong file would clear everyone the missing entries hold."""
    env, events, in_force = seeded_home(tmp_path, entries=4)
    one, bad = tmp_path / "one.csv", tmp_path / "bad.csv"
    one.write_text(csl(csl_row("EL-1", "Restricted Trading No. 1 Ltd.")), encoding="utf-8")
    refused(
        chipclear(env, "screening", "load", one),
        f"{one} has 1 entry where the list in force ({in_force.info.version}) has 4, so nothing was loaded",
        "--replace-smaller",
    )
    # A file that does not parse is refused as before (exit 2), before sizes are compared.
    bad.write_text(csl(csl_row("EL-1", "")), encoding="utf-8")
    refused(chipclear(env, "screening", "load", bad), "row 2, column name", code=2)
    versions = as_json(chipclear(env, "screening", "versions", "--json"))
    assert [v["version"] for v in versions] == [in_force.info.version]
    assert events.current_screening_list() == in_force
    events.close()


def test_a_one_row_list_replaces_a_two_row_list_only_when_asked(tmp_path: Path) -> None:
    env, events, in_force = seeded_home(tmp_path, entries=2)
    one = tmp_path / "one.csv"
    one.write_text(csl(csl_row("EL-9", "Northwind Avionics Limited")), encoding="utf-8")
    refused(chipclear(env, "screening", "load", one), "has 1 entry where the list in force", "has 2")
    loaded = as_json(
        chipclear(env, "screening", "load", one, "--replace-smaller", "--actor", "alice", "--json")
    )
    assert loaded["loaded"] is True and loaded["entries"] == 1
    versions = as_json(chipclear(env, "screening", "versions", "--json"))
    assert [v["version"] for v in versions] == [loaded["version"], in_force.info.version]
    events.close()


def test_screening_refuses_when_the_list_in_force_is_missing(tmp_path: Path) -> None:
    """Deleting the newest row must not put an older list back in force: screening names the list."""
    env, events, _ = seeded_home(tmp_path, entries=2)
    rows = [csl_row(f"EL-{n}", f"Restricted Trading No. {n} Ltd.") for n in range(1, 4)]
    second = parse_csl(csl(*rows), source="trade.gov CSL", loaded_at=datetime.now(UTC))
    assert events.save_screening_list(second, by="ops")
    with closing(sqlite3.connect(events.path)) as conn, conn:
        conn.execute("DELETE FROM screening_lists WHERE version = ?", (second.info.version,))
    refused(
        chipclear(env, "screening", "check", "Restricted Trading No. 1", "--threshold", "90"),
        f"the screening list in force, {second.info.version}",
        "missing from the screening_lists table",
    )
    # Its size is still known from the record, so the shrink guard still compares with it.
    one = tmp_path / "one.csv"
    one.write_text(csl(csl_row("EL-1", "Restricted Trading No. 1 Ltd.")), encoding="utf-8")
    refused(chipclear(env, "screening", "load", one), f"({second.info.version}) has 3")
    events.close()


def test_a_screened_party_is_held_until_an_officer_gives_a_reason(stack: Stack, tmp_path: Path) -> None:
    request_id = new_id("held")
    path = request_file(tmp_path, request_id, buyer__name="Sugon Information Industry Co. Ltd.", units=5_000)
    ok(stack.run("submit", path))
    wait_until(partial(screened, stack, request_id), "submission and screening stored")

    status = ok(stack.run("status", request_id))
    assert "HOLD screening: 1 match(es)" in flat(status.stdout), show(status)
    assert "'Sugon'" in status.stdout, show(status)
    doc = as_json(stack.run("status", request_id, "--json"))
    assert doc["on_hold"] is True and "held" in doc["flags"]
    assert doc["screening"]["matches"][0]["entry_name"] == "Sugon"
    held = as_json(stack.run("list", "--held", "--json"))
    assert request_id in {row["request_id"] for row in held}
    assert all("held" in row["flags"] for row in held)

    approve = ("decide", request_id, "--gate", "us-export", "--reviewer", "alice", "--approve")
    refused(stack.run(*approve), "held by restricted-party screening", "written reason", "Sugon")
    # Nothing recorded (the three-second review SLA may have escalated it meanwhile: time, not her).
    assert set(event_types(stack, request_id)) <= {
        "RequestSubmitted",
        "EvidenceAdded",
        "GateOpened",
        "PartiesScreened",
        "ReviewEscalated",
    }
    result = ok(stack.run(*approve, "--reason", "counsel confirmed a different, unlisted Sugon entity"))
    assert "cn_import_review" in flat(result.stdout), show(result)
    events = as_json(stack.run("events", request_id, "--json"))
    approved = next(e for e in events if e["type"] == "GateApproved")
    assert approved["data"]["note"] == "counsel confirmed a different, unlisted Sugon entity"
    assert approved["actor"] == "alice"
    assert request_id not in {row["request_id"] for row in as_json(stack.run("list", "--held", "--json"))}


def test_buyer_cap_refusal_names_the_headroom(stack: Stack, tmp_path: Path) -> None:
    buyer = f"Kuaishou Technology {new_id('buyer')}"
    first, second = (
        request_file(tmp_path, new_id(f"cap{n}"), buyer__name=buyer, units=60_000) for n in (1, 2)
    )
    ids = [path.stem for path in (first, second)]
    for path in (first, second):
        ok(stack.run("submit", path))
    for request_id in ids:
        wait_until(partial(screened, stack, request_id), f"{request_id} stored")
    decide = ("--gate", "us-export", "--reviewer", "alice", "--approve")
    ok(stack.run("decide", ids[0], *decide))
    refused(
        stack.run("decide", ids[1], *decide), "remaining headroom of 15000", "max_units_per_buyer = 75000"
    )
    assert "GateApproved" not in event_types(stack, ids[1])
    ok(stack.run("decide", ids[1], *decide, "--units", "15000"))
    doc = as_json(stack.run("status", ids[1], "--json"))
    assert doc["buyer_claim"]["units"] == 15_000 and doc["buyer_claim"]["approved_before"] == 60_000

    # The same requests through Temporal's visibility store, by the search attributes they upsert.
    def visible() -> list[dict[str, object]]:
        found: list[dict[str, object]] = as_json(
            stack.run("list", "--gate", "cn-import", "--buyer", buyer, "--json")
        )
        return found

    wait_until(lambda: len(visible()) == 2, "both requests visible at cn-import")
    assert {(row["request_id"], row["units"], row["status"]) for row in visible()} == {
        (ids[0], 60_000, "cn_import_review"),
        (ids[1], 15_000, "cn_import_review"),
    }
    big = as_json(stack.run("list", "--buyer", buyer, "--query", "ChipclearUnits > 20000", "--json"))
    assert [row["request_id"] for row in big] == [ids[0]]
    # The table shows each value under its own heading (wide enough not to wrap a cell).
    table = ok(
        chipclear(
            stack.env | {"COLUMNS": "250"}, "list", "--buyer", buyer, "--query", "ChipclearUnits > 20000"
        )
    )
    lines = table.stdout.splitlines()
    [header] = [row.strip("┃ ").split("┃") for row in lines if row.startswith("┃")]
    [line] = [row.strip("│ ").split("│") for row in lines if row.startswith("│") and ids[0] in row]
    header, line = [cell.strip() for cell in header], [cell.strip() for cell in line]
    shown = dict(zip(header, line, strict=True))
    # The columns of `list` itself: visibility finds the rows, the projection fills them in.
    assert len(shown.pop("updated")) == 19, shown
    assert shown == {
        "request": ids[0],
        "status": "cn_import_review",
        "gate": "cn-import",
        "flags": "",
        "buyer": buyer,
        "requested": "60000",
        "approved": "60000",
        "policy": TEST_POLICY_VERSION,
    }
    refused(stack.run("list", "--query", "ChipclearUnits >>> 1"), "--query", code=2)
    setup = ok(stack.run("setup"))
    assert "already registered" in flat(setup.stdout), show(setup)

    # The buyer's cap as the store holds it, however the buyer's name is written.
    cap = as_json(stack.run("buyer-cap", buyer.upper(), "--json"))
    assert (cap["cap"], cap["approved"], cap["headroom"]) == (75_000, 75_000, 0)
    assert cap["claims"] == {ids[0]: 60_000, ids[1]: 15_000} and cap["released"] == {}
    shown_cap = flat(ok(stack.run("buyer-cap", buyer)).stdout)
    assert f"{buyer}: 75,000 of 75,000 approved, 0 left" in shown_cap
    assert f"{ids[1]}: 15,000 units approved" in shown_cap
    ok(stack.run("withdraw", ids[0], "--reason", "test over"))
    wait_until(
        lambda: as_json(stack.run("buyer-cap", buyer, "--json"))["released"] == {ids[0]: 60_000},
        "the withdrawn request's units given back",
    )
    assert "ended unlicensed, 60,000 units given back" in flat(ok(stack.run("buyer-cap", buyer)).stdout)
    refused(stack.run("buyer-cap", "Nobody At All Ltd."), "no request of buyer 'Nobody At All Ltd.'", code=1)
    ok(stack.run("withdraw", ids[1], "--reason", "test over"))


def test_request_info_respond_and_escalation(stack: Stack, tmp_path: Path) -> None:
    request_id = submitted(stack, tmp_path, "info")
    decide = ("decide", request_id, "--gate", "us-export", "--reviewer", "alice")
    refused(stack.run(*decide, "--approve", "--request-info", "why?"), "--request-info", code=2)
    refused(stack.run(*decide, "--request-info", "   "), "--request-info", code=2)

    asked = ok(stack.run(*decide, "--request-info", "Send the end-user certificate for Wuhu Cluster 3"))
    assert "InformationRequested" in flat(asked.stdout), show(asked)
    status = ok(stack.run("status", request_id))
    assert "waiting for the applicant" in flat(status.stdout), show(status)
    waiting = as_json(stack.run("list", "--awaiting-applicant", "--json"))
    assert request_id in {row["request_id"] for row in waiting}
    refused(stack.run(*decide, "--approve"), "waiting for the applicant's answer")

    certificate = tmp_path / "end-user-certificate.pdf"
    certificate.write_bytes(b"%PDF-1.7 signed end-user certificate")
    refused(stack.run("respond", request_id, "--text", "attached", "--file", tmp_path / "nope.pdf"), code=2)
    refused(stack.run("respond", request_id, "--text", "  "), "--text", code=2)
    refused(stack.run("respond", request_id, "--text", "x" * 2001), "text:", "2000 characters", code=2)
    assert "InformationProvided" not in event_types(stack, request_id)
    answered = ok(stack.run("respond", request_id, "--text", "Certificate attached", "--file", certificate))
    assert "InformationProvided" in flat(answered.stdout), show(answered)
    refused(stack.run("respond", request_id, "--text", "once more"), "nothing to answer")

    doc = as_json(stack.run("status", request_id, "--json"))
    assert doc["open_question"] is None
    [exchange] = doc["correspondence"]
    assert exchange["answer"] == "Certificate attached"
    assert exchange["attachments"] == [
        {
            "name": certificate.name,
            "size": certificate.stat().st_size,
            "sha256": hashlib.sha256(certificate.read_bytes()).hexdigest(),
        }
    ]

    # The three-second review SLA has passed by now (the clock stopped while the applicant answered).
    wait_until(lambda: "ReviewEscalated" in event_types(stack, request_id), "escalation")
    # …and the worker said so in its log, with the request's id as a field.
    wait_until(partial(escalation_logged, stack, request_id), "escalation logged")
    escalated = as_json(stack.run("list", "--escalated", "--json"))
    assert request_id in {row["request_id"] for row in escalated}
    assert all("escalated" in row["flags"] for row in escalated)
    listing = ok(stack.run("list", "--escalated"))
    assert request_id in listing.stdout, show(listing)
    status = ok(stack.run("status", request_id))
    assert "ESCALATED" in status.stdout, show(status)
    with closing(sqlite3.connect(f"file:{stack.events_db}?mode=ro", uri=True)) as conn:
        flags = conn.execute("SELECT flags FROM requests WHERE request_id = ?", (request_id,)).fetchone()
    assert flags == ("escalated",)

    ok(stack.run(*decide, "--approve", "--units", "1000"))
    assert request_id not in {
        row["request_id"] for row in as_json(stack.run("list", "--escalated", "--json"))
    }
    ok(stack.run("withdraw", request_id, "--reason", "test over"))
