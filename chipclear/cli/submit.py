"""`chipclear submit` of many requests at once: files, directories of them, CSV order books.

chipclear/bulk.py reads and submits; this module shows it. On a terminal a progress bar counts the
requests and each refusal is printed above it as it comes; piped, each request gets one plain line, in
the order given, whatever order they finish in. Then a summary. `--json` prints one document with the
counts and every outcome instead. Exit 0 when every request went in or was in already, 2 when any was
refused (the others still went in), 1 when the server or the store failed some.

Heavy modules (the Temporal client, rich's progress) are imported inside the functions: `chipclear
--help` and single-file `submit` never pay for them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from rich.progress import Progress, TaskID
    from rich.text import Text
    from temporalio.client import Client

    from chipclear.bulk import BulkReport, Outcome
    from chipclear.cli.common import Act
    from chipclear.config import Settings
    from chipclear.store.protocol import EventStore

# Requests started at once unless told: enough to keep a dev server busy, far below what it queues.
DEFAULT_CONCURRENCY = 16
MAX_CONCURRENCY = 64


def submission_key(act: Act, current: Settings) -> Ed25519PrivateKey | None:
    """The key that signs `act.actor`'s submissions: a person the policy registers signs each one, as
    does anyone who gives --key; anyone else's is recorded under the name given, with no authority."""
    from chipclear.domain.policy import load_policy

    registered = load_policy(current.policy, home=current.home).person(act.actor) is not None
    return act.key(act.actor) if registered or act.key_file is not None else None


def submit_many(paths: list[Path], *, concurrency: int, act: Act) -> None:
    """Read every path, then start every request, at most `concurrency` at once (see chipclear/bulk.py)."""
    from chipclear import bulk
    from chipclear.cli import output
    from chipclear.cli.common import run, settings, store
    from chipclear.temporal import connect

    pending = bulk.read_paths(paths)  # more than the bound in all: exit 2 before anything starts
    current = settings()
    private = submission_key(act, current)  # as a single `submit` signs
    show = _Shown(len(pending), terminal=output.console.is_terminal and not act.json, quiet=act.json)

    async def connection() -> tuple[Client, EventStore]:
        return await connect(), store()

    async def go() -> list[Outcome]:
        with show:
            return await bulk.submit_all(
                connection,
                pending,
                concurrency=concurrency,
                task_queue=current.task_queue,
                actor=act.actor,
                key=private,
                report=show.heard,
            )

    started = time.monotonic()
    outcomes = run(go())
    report = bulk.BulkReport.of(outcomes, concurrency=concurrency, seconds=time.monotonic() - started)
    if act.json:
        output.print_json(report.model_dump(mode="json"))
    else:
        output.console.print(_summary(report), highlight=False)
    _exit_for(report, json_=act.json)


def _exit_for(report: BulkReport, *, json_: bool) -> None:
    from chipclear.cli.common import fail

    where = "in the JSON's outcomes" if json_ else "named above"
    went_in = report.submitted + report.already_submitted
    if report.refused:
        others = f"the other {went_in} went in" if went_in else "nothing went in"
        fail(
            f"{report.refused} of {report.total} refused, {where}; {others}: fix those and run the same "
            "command again (what went in is skipped)",
            2,
        )
    if report.failed:
        fail(
            f"{report.failed} of {report.total} not submitted: the server or the event store did not answer "
            f"({where}); run the same command again (what went in is skipped)",
            1,
        )


def _summary(report: BulkReport) -> str:
    counts = [
        f"{report.submitted} submitted",
        f"{report.already_submitted} already submitted",
        f"{report.refused} refused",
        *([f"{report.failed} failed"] if report.failed else []),
    ]
    rate = f" ({report.total / report.seconds:.0f} a second)" if report.seconds >= 1 else ""
    return f"done: {', '.join(counts)}, of {report.total} in {report.seconds:.1f} s{rate}"


def line(outcome: Outcome) -> Text:
    """One request's line, plain text (names and reasons may hold brackets rich would read as markup)."""
    from rich.text import Text

    from chipclear.domain.limits import one_sentence

    if outcome.outcome == "refused":
        return Text.assemble(
            ("refused", "bold red"), f" {outcome.source}: {one_sentence(outcome.reason or '')}"
        )
    if outcome.outcome == "failed":
        return Text.assemble(
            ("failed", "bold red"),
            f" {outcome.request_id} ({outcome.source}): {one_sentence(outcome.reason or '')}",
        )
    kind = ("submitted", "green") if outcome.outcome == "submitted" else ("already submitted", "yellow")
    note = f": {outcome.reason}" if outcome.reason else ""
    return Text.assemble(kind, f" {outcome.request_id} ({outcome.source}){note}")


class _Shown:
    """Where outcomes go as they are heard: a progress bar on a terminal (refusals printed above it),
    else plain lines in the order given (an outcome waits until those before it are printed)."""

    def __init__(self, total: int, *, terminal: bool, quiet: bool) -> None:
        self.total, self.terminal, self.quiet = total, terminal, quiet
        self.waiting: dict[int, Outcome] = {}
        self.next = 0
        self.counts = {"submitted": 0, "already_submitted": 0, "refused": 0, "failed": 0}
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> _Shown:
        if self.terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from chipclear.cli import output

            progress = Progress(
                TextColumn("submitting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=output.console,
            )
            self.task = progress.add_task(self._counts(), total=self.total)
            progress.start()
            self.progress = progress
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def heard(self, number: int, outcome: Outcome) -> None:
        from chipclear.cli import output

        self.counts[outcome.outcome] += 1
        if self.quiet:
            return
        if self.progress is not None and self.task is not None:
            if outcome.outcome in ("refused", "failed"):
                self.progress.console.print(line(outcome), highlight=False)
            self.progress.update(self.task, advance=1, description=self._counts())
            return
        self.waiting[number] = outcome
        while self.next in self.waiting:
            output.console.print(line(self.waiting.pop(self.next)), highlight=False)
            self.next += 1

    def _counts(self) -> str:
        done = [
            f"{self.counts['submitted']} submitted",
            f"{self.counts['already_submitted']} already",
            f"{self.counts['refused']} refused",
        ]
        if self.counts["failed"]:
            done.append(f"{self.counts['failed']} failed")
        return ", ".join(done)
