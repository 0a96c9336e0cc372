"""Terminal safety (issue 14): what users wrote is shown escaped in every human output and log line.

ANSI escapes and bidi overrides in names reached `status`, `events` and the logs raw: a buyer's name
could clear the screen, plant a link or reorder what follows. They are shown escaped (`\\x1b`,
`\\u202e`) at the rendering boundary, while the stored data and JSON output stay exactly as written.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from rich.table import Table
from rich.text import Text

from chipclear import logs
from chipclear.cli.output import SafeConsole, row
from chipclear.devserver import free_port
from chipclear.display import is_safe, json_text, shown
from chipclear.domain.commands import Decide, Evaluate, Submit
from chipclear.projections import PROJECTIONS
from chipclear.store.sqlite import SQLiteEventStore
from tests.cli.test_cli import hermetic_env, ok, parallel
from tests.factories import make_request
from tests.store.support import MANUAL, RECORDER, Step, append_all, auditor_env, play

# What an attacker puts in a name: clear the screen, a hyperlink, a right-to-left override, a
# zero-width space, a C1 CSI, a bell.
EVIL_NAME = "Evil\x1b[2J\x1b]8;;http://x.example\x07Corp\u202eexe.txt\u200b\x9b31m"
EVIL_ACTOR = "mallory\x1b[31m\u2066"
EVIL_REASON = "denied\x1b[1A\x1b[2K\u202eforged line"
RAW = ["\x1b", "\x07", "\x9b", "\u202e", "\u2066", "\u200b"]


def raw_in(text: str) -> list[str]:
    return [char for char in RAW if char in text]


def test_shown_escapes_every_kind_and_nothing_else() -> None:
    assert shown("a\x1b[31mb") == "a\\x1b[31mb"
    assert shown("\x00\x07\x7f\x85\x9b") == "\\x00\\x07\\x7f\\x85\\x9b"
    assert (
        shown("\u202a\u202e\u2066\u2069\u200e\u200f\u061c")
        == "\\u202a\\u202e\\u2066\\u2069\\u200e\\u200f\\u061c"
    )
    assert shown("\u200b\u200c\u200d\u2060\ufeff") == "\\u200b\\u200c\\u200d\\u2060\\ufeff"
    assert shown("one\ntwo\tthree") == "one\\x0atwo\\x09three"
    assert shown("one\ntwo", lines=True) == "one\ntwo"
    # Ordinary text of every script, accents, emoji and markup brackets: untouched.
    plain = "ByteDance 字节跳动 Café 🚀 [bold] سلام \\x1b"
    assert shown(plain) == plain and is_safe(plain) and not is_safe(EVIL_NAME)


def test_json_text_is_the_same_json_and_inert() -> None:
    document = {"name": EVIL_NAME, "actor": EVIL_ACTOR, "n": [1, "\u202e"]}
    text = json_text(json.dumps(document, ensure_ascii=False))
    assert json.loads(text) == document  # exactly the same value
    assert raw_in(text) == []


def test_the_console_escapes_strings_texts_and_tables_but_keeps_styles() -> None:
    out = io.StringIO()
    console = SafeConsole(file=out, force_terminal=True, width=200, color_system="standard")
    console.print(f"[bold]{EVIL_NAME}[/]")
    console.print(Text.assemble(("by ", "dim"), (EVIL_ACTOR, "bold"), " ok"))
    table = Table("name", "why")
    table.add_row(EVIL_NAME, Text(EVIL_REASON, style="red"))  # a cell added without `row`
    row(table, EVIL_ACTOR, "multi\nline")
    console.print(table)
    printed = out.getvalue()
    assert "\x1b[1m" in printed  # rich's own styles still render
    for user_text in (EVIL_NAME, EVIL_ACTOR, EVIL_REASON):
        assert shown(user_text) in printed
    assert "\x1b[2J" not in printed and "\x1b]8" not in printed and "\x1b[1A" not in printed
    assert [char for char in raw_in(printed) if char != "\x1b"] == []
    assert "multi\\x0aline" in printed  # a value's new line cannot forge a line


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


@pytest.mark.usefixtures("restored_logging")
def test_log_lines_show_escapes_on_a_terminal_and_stay_exact_in_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure(level="INFO", json=False)
    logs.get_logger("chipclear.test").info("screened " + EVIL_NAME, buyer=EVIL_NAME, actor=EVIL_ACTOR)
    logging.getLogger("temporalio.worker").warning("from the SDK: %s", EVIL_REASON)
    console_lines = capsys.readouterr().err
    assert raw_in(console_lines) == [], console_lines
    assert shown(EVIL_NAME) in console_lines and shown(EVIL_REASON) in console_lines

    logs.configure(level="INFO", json=True)
    logs.get_logger("chipclear.test").info("screened", buyer=EVIL_NAME)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert raw_in(line) == [] and json.loads(line)["buyer"] == EVIL_NAME


@pytest.mark.usefixtures("restored_logging")
def test_a_line_forwarded_from_the_sdk_core_drops_the_cores_record_object(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure(level="INFO", json=True)
    # As temporalio.runtime forwards a core line: the record object rides along as an extra.
    logging.getLogger("temporalio.core").warning(
        "Workflow task duration exceeded", extra={"temporal_log": object()}
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "Workflow task duration exceeded" and "temporal_log" not in line


def hostile_store(path: Path) -> str:
    """A request by an actor, for a buyer, denied for a reason, each holding escapes and bidi overrides.
    Built with model_copy: stored data may predate any input gate, and must still show safely."""
    base = make_request(request_id="evil-1")
    request = base.model_copy(update={"buyer": base.buyer.model_copy(update={"name": EVIL_NAME})})
    submit = Submit(request=request).model_copy(update={"actor": EVIL_ACTOR})
    deny = Decide(gate="us-export", reviewer="alice", approve=False, reason=EVIL_REASON)
    steps: list[Step] = [
        (timedelta(0), submit),
        (timedelta(minutes=1), Evaluate(gate="us-export")),
        (timedelta(minutes=2), deny),
    ]
    with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as store:
        append_all(store, [play(MANUAL, steps)])
    return f"sqlite:///{path}"


def test_status_and_events_show_hostile_names_escaped(tmp_path: Path) -> None:
    """Issue 14: ANSI escapes and bidi overrides in names reached `status` and `events` raw."""
    url = hostile_store(tmp_path / "events.db")
    env = hermetic_env(
        CHIPCLEAR_EVENT_STORE=url, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}", **auditor_env(tmp_path)
    )
    status, status_json, events, log = (
        ok(result).stdout
        for result in parallel(
            env, [["status", "evil-1"], ["status", "evil-1", "--json"], ["events", "evil-1"], ["events"]]
        )
    )
    for printed in (status, events, log):
        assert raw_in(printed) == [], printed
        assert "\\x1b[2J" in printed or "\\x1b[31m" in printed, printed
    assert "\\u202e" in status and "forged line" in status
    as_json = json.loads(status_json)
    assert as_json["buyer"] == EVIL_NAME and as_json["outcome_reason"] == EVIL_REASON  # exact
