"""What a `chipclear` call imports before it answers (issue 17): start-up is what a user waits for on every
call, so `--help` imports neither Temporal nor the client, the workflows, the domain's models or the
store, and `status` of a final request none of them either (it reads the store's row with sqlite3), nor
`list` of a SQLite store (it reads the projection's summary rows with sqlite3: chipclear.request_rows).

Seen through `python -X importtime` in a real console-script process, never timed here: the figures
live in docs/performance.md ("CLI start-up").
"""

from __future__ import annotations

import importlib
import json
import re
from contextlib import closing
from pathlib import Path

import pytest
import typer.main

from chipclear.cli import output
from chipclear.cli.common import EXPECTED
from chipclear.cli.lazy import LazyCommands
from chipclear.cli.main import SUBCOMMANDS, app
from chipclear.projections import PROJECTIONS, get_request, newest_requests
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys
from tests.cli.test_cli import Result, chipclear, hermetic_env, ok, refused, show
from tests.domain.test_screening import ACME_ROWS, csl_list
from tests.store.support import KINDS, RECORDER, append_all, scenario, scenarios

# What a call that needs none of them must not import (a prefix names a package and its modules).
HEAVY = (
    "temporalio",
    "chipclear.client",
    "workflows",
    "activities",
    "chipclear.domain",
    "chipclear.store",
    "chipclear.projections",
    "structlog",
)
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$")


def imported(result: Result) -> set[str]:
    """The modules the process imported, from `-X importtime` on its stderr."""
    return {found[1] for line in result.stderr.splitlines() if (found := IMPORTED.match(line))}


def heavy(modules: set[str], prefixes: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(name for name in modules if any(name == p or name.startswith(p + ".") for p in prefixes))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    found = tmp_path / "home"
    keys.install(found)
    return found


def traced(home: Path, *args: str) -> Result:
    return chipclear(hermetic_env(CHIPCLEAR_HOME=str(home), PYTHONPROFILEIMPORTTIME="1"), *args)


def test_help_imports_nothing_a_command_needs(home: Path) -> None:
    result = ok(traced(home, "--help"))
    modules = imported(result)
    assert "typer" in modules, show(result)  # the trace works
    assert heavy(modules, (*HEAVY, "pydantic")) == [], show(result)
    for name, lazy in SUBCOMMANDS.items():  # listed, from their line of help, without importing them
        assert lazy.module not in modules, name
        if not lazy.hidden:
            assert name in result.stdout, show(result)


def test_status_of_a_final_request_reads_the_store_row_alone(home: Path) -> None:
    done = scenario("licensed", "req-final")
    with closing(SQLiteEventStore(home / "events.db", projections=PROJECTIONS, recorder=RECORDER)) as store:
        append_all(store, [done])
        state = get_request(store, "req-final")
    assert state is not None and state.is_final
    result = ok(traced(home, "status", "req-final", "--json"))
    assert heavy(imported(result)) == [], show(result)
    document = json.loads(result.stdout)
    expected = output.state_document(state, source="event-store")
    assert document == json.loads(json.dumps(expected, default=str))
    text = ok(traced(home, "status", "req-final"))
    assert heavy(imported(text)) == [], show(text)
    assert "source: event-store" in text.stdout, show(text)


def test_list_reads_the_store_rows_alone(home: Path) -> None:
    with closing(SQLiteEventStore(home / "events.db", projections=PROJECTIONS, recorder=RECORDER)) as store:
        append_all(store, scenarios(2 * len(KINDS)))
        newest = newest_requests(store, limit=100)
        licensed = newest_requests(store, "licensed", limit=100)
    expected = json.loads(json.dumps([row.model_dump() for row in newest]))

    page = ok(traced(home, "list", "--json"))
    assert heavy(imported(page)) == [], show(page)
    assert json.loads(page.stdout) == expected
    every = ok(traced(home, "list", "--all", "--json"))
    assert heavy(imported(every)) == [] and json.loads(every.stdout) == expected, show(every)
    after = ok(
        traced(home, "list", "--status", "licensed", "--limit", "1", "--after", licensed[0].request_id)
    )
    assert heavy(imported(after)) == [], show(after)
    assert f"chipclear list --after {licensed[1].request_id}" in " ".join(after.stdout.split())
    for flags in (["--held"], ["--escalated", "--awaiting-applicant"]):
        flagged = ok(traced(home, "list", *flags, "--json"))
        assert heavy(imported(flagged)) == [] and json.loads(flagged.stdout) == [], show(flagged)
    table = ok(traced(home, "list", "--limit", "3"))
    assert heavy(imported(table)) == [], show(table)
    assert [row.request_id in table.stdout for row in newest[:4]] == [True, True, True, False]
    # A status no built-in gate has is checked by the registry, which names the known ones.
    refused(traced(home, "list", "--status", "nowhere"), "'nowhere' is not a status", "licensed", code=2)
    refused(traced(home, "list", "--after", "no-such-request"), "no such request in the event store", code=2)


# What `screening check` needs neither of: Temporal, and the events, gates and store they imply (it reads
# the policy, which list is in force, and that list's prepared index: chipclear.store.screening_tables).
NOT_FOR_A_CHECK = (
    "temporalio",
    "chipclear.client",
    "workflows",
    "structlog",
    "chipclear.domain.events",
    "chipclear.domain.gates",
    "chipclear.domain.allocation",
    "chipclear.store.protocol",
    "chipclear.store.sqlite",
)


def test_screening_check_reads_the_list_in_force_alone(home: Path) -> None:
    with closing(SQLiteEventStore(home / "events.db", projections=PROJECTIONS, recorder=RECORDER)):
        pass  # an empty store: screenings use the bundled sample list
    result = ok(traced(home, "screening", "check", "Sugon", "--json"))
    assert heavy(imported(result), NOT_FOR_A_CHECK) == [], show(result)
    assert json.loads(result.stdout)["list_version"].startswith("sample"), show(result)
    # A list loaded: the first check prepares its index from the stored entries (through the store),
    # and every later one opens it by the list the store's file says is in force.
    listed = csl_list(*ACME_ROWS)
    with closing(SQLiteEventStore(home / "events.db", projections=PROJECTIONS, recorder=RECORDER)) as store:
        assert store.save_screening_list(listed, by="ops")
    first = ok(traced(home, "screening", "check", "Acme Quantum Devices", "--json"))
    assert "chipclear.store.sqlite" in imported(first), show(first)
    again = ok(traced(home, "screening", "check", "Acme Quantum Devices", "--json"))
    assert heavy(imported(again), NOT_FOR_A_CHECK) == [], show(again)
    assert json.loads(again.stdout) == json.loads(first.stdout), show(again)
    checked = json.loads(again.stdout)
    assert checked["list_version"] == listed.info.version, show(again)
    assert [match["entry_name"] for match in checked["matches"]] == [ACME_ROWS[0]["name"]], show(again)


def test_each_lazy_command_is_listed_by_its_own_help() -> None:
    """The line `chipclear --help` shows for a lazy command is the first paragraph of its own help."""
    group = typer.main.get_command(app)
    assert isinstance(group.commands, LazyCommands)  # type: ignore[attr-defined]
    for name, lazy in SUBCOMMANDS.items():
        command = group.commands[name]  # type: ignore[attr-defined]  # imports it
        assert command.name == name and command.hidden == lazy.hidden
        if not lazy.hidden:
            first = " ".join((command.help or "").split("\n\n")[0].split())
            assert first == lazy.help, f"SUBCOMMANDS[{name!r}].help should read: {first!r}"


def test_every_expected_failure_names_an_exception_class() -> None:
    """`common.EXPECTED` names classes without importing them: a misspelt one would never match."""
    for module, name, code in EXPECTED:
        kind = getattr(importlib.import_module(module), name, None)
        assert isinstance(kind, type) and issubclass(kind, Exception), f"{module}.{name}"
        assert code in (1, 2)
