"""The README's tour cannot go stale: every `$ chipclear …` line of it runs here, in order, against
`chipclear up` (a real dev server and worker) in a fresh home, and each shows what the README shows.

How the README is read (its "## A tour" section, fenced blocks only):
- a line starting `$ chipclear ` is a command (a trailing `\\` joins the next line to it); the lines after
  it, up to the next command or the end of the block, are its output as the README shows it;
- the command exits 1 if its shown output starts with `error:`, else 0;
- a line `…` marks output left out. Between two such marks (and before the first, after the last) the
  shown words must appear in the real output one after another, in order; the marks allow any gap;
- words, not lines, are compared: the README may wrap a long line where the piped output does not
  (tables render alike, so their words match cell by cell). What changes from run to run is replaced
  alike on both sides: timestamps and dates, hex hashes (10 digits or more), the demo's run id;
- `~/.local/share/chipclear` in a command is the home the tour runs in, as it is a newcomer's.

Tables render at 100 columns (COLUMNS=100), the README's limit; lines that are not tables never wrap
when piped, so they compare whole. Every file a command names must be in `examples/`, or have been
written by an earlier command of the tour.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chipclear.devserver import free_port
from tests.cli import forked
from tests.cli.test_cli import (
    CHIPCLEAR,
    ROOT,
    Result,
    children_of,
    chipclear,
    end_pid,
    flat,
    hermetic_env,
    ok,
    show,
)

# The tour is some fifteen CLI processes and the demo after `up` starts: about a minute on a quiet
# machine, more than the default 120 s limit on a loaded one.
pytestmark = pytest.mark.timeout(300)

README = ROOT / "README.md"
DOCS_TOURS = (README, ROOT / "docs" / "gates.md")
NEWCOMER_HOME = "~/.local/share/chipclear"
ELIDED = "…"
WIDTH = 100

VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00|Z)?"), "<time>"),
    (re.compile(r"\d{4}-\d\d-\d\d"), "<date>"),
    (re.compile(r"\b[0-9a-f]{10,}\b…?"), "<hex>"),
    (re.compile(r"\b\d{14}\b"), "<run>"),
    (re.compile(r"\b\d{4}Q[1-4]\b"), "<quarter>"),  # the quarter the tour runs in
]


@dataclass
class Step:
    command: str
    shown: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        first = next((line for line in self.shown if line.strip()), "")
        return 1 if first.startswith("error:") else 0

    def segments(self) -> list[list[str]]:
        """The shown output cut at each `…`: each piece must appear whole, the pieces in order."""
        pieces: list[list[str]] = [[]]
        for line in self.shown:
            if line.strip() == ELIDED:
                pieces.append([])
            elif line.strip():
                pieces[-1].append(normal(line))
        return [piece for piece in pieces if piece]


def normal(line: str) -> str:
    for pattern, placeholder in VOLATILE:
        line = pattern.sub(placeholder, line)
    return " ".join(line.split())


def tour_steps(path: Path, section: str | None = "## A tour") -> list[Step]:
    text = path.read_text(encoding="utf-8")
    if section is not None:
        start = text.index(section + "\n")
        end = text.find("\n## ", start + len(section))
        text = text[start : end if end != -1 else len(text)]
    steps: list[Step] = []
    for block in re.findall(r"```text\n(.*?)```", text, flags=re.DOTALL):
        lines = block.splitlines()
        index = 0
        current: Step | None = None
        while index < len(lines):
            line = lines[index]
            if line.startswith("$ chipclear "):
                command = line[2:]
                while command.endswith("\\"):
                    index += 1
                    command = command[:-1].rstrip() + " " + lines[index].strip()
                current = Step(command)
                steps.append(current)
            elif current is not None:
                current.shown.append(line)
            index += 1
    return steps


def matches(step: Step, actual: str) -> str | None:
    """None if the shown output appears in `actual` by the rules above, else the piece that does not."""
    words = " ".join(normal(line) for line in actual.splitlines()).split()
    at = 0
    for piece in step.segments():
        wanted = " ".join(piece).split()
        for start in range(at, len(words) - len(wanted) + 1):
            if words[start : start + len(wanted)] == wanted:
                at = start + len(wanted)
                break
        else:
            return "\n".join(piece)
    return None


# -- the README itself ---------------------------------------------------------------------------
def test_the_readme_is_short_and_its_tables_fit_100_columns() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; it is for newcomers, keep it at 250"
    wide = [line for line in lines if line[:1] in "┏┃┡│└" and len(line) > WIDTH]
    assert not wide, wide


def test_every_file_a_tour_names_is_in_examples() -> None:
    named: list[str] = []
    for path in DOCS_TOURS:
        for step in tour_steps(path, section=None):
            words = shlex.split(step.command)
            written = {words[i + 1] for i, word in enumerate(words[:-1]) if word in ("-o", "--output")}
            named += [
                word
                for word in words
                if re.search(r"\.(ya?ml|csv|json|pdf|jsonl)$", word) and word not in written
            ]
    assert named, "no tour names a file?"
    allowed_elsewhere = {"checkpoint.json", "consolidated.csv"}  # written earlier in the tour; your own list
    for name in named:
        if name in allowed_elsewhere:
            continue
        assert name.startswith("examples/") and (ROOT / name).is_file(), (
            f"the tour names {name}: not in examples/"
        )


# -- running it ------------------------------------------------------------------------------------
@dataclass
class Up:
    home: Path
    env: dict[str, str]
    output: Path


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`chipclear up` in a fresh home, as a newcomer runs it, on ports of its own."""
    for _ in range(3):
        # A fresh home each attempt: an attempt that lost its port to another process has made the keys
        # already, and the next would not say so.
        home = tmp_path_factory.mktemp("tour") / "home"
        log = home.parent / "up.log"
        port, ui_port = free_port(), free_port()
        env = hermetic_env(CHIPCLEAR_HOME=str(home), COLUMNS=str(WIDTH))
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(CHIPCLEAR), "up", "--port", str(port), "--ui-port", str(ui_port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while process.poll() is None and "chipclear is up." not in log.read_text():
            assert time.monotonic() < deadline, "`chipclear up` was not up within 90 s\n" + log.read_text()
            time.sleep(0.2)
        if process.poll() is None:
            break
        assert "address already in use" in log.read_text(), log.read_text()
    else:
        raise AssertionError("no free ports for `chipclear up` in 3 attempts")
    try:
        yield Up(home, env | {"TEMPORAL_ADDRESS": f"127.0.0.1:{port}"}, log)
    finally:
        children = children_of(process.pid)
        process.send_signal(signal.SIGINT)  # Ctrl-C, as the README says
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in children:
            end_pid(pid)


def test_up_says_which_home_it_uses(up: Up) -> None:
    said = flat(up.output.read_text())
    assert f"Home {up.home} (from $CHIPCLEAR_HOME)" in said, said
    assert f"Made keys for alice, wang, li, chen, sam, recorder in {up.home / 'keys'}" in said, said


def test_the_readme_tour_runs_as_shown(up: Up, tmp_path: Path) -> None:
    """Every command of the tour, in order; each one's exit code and the lines the README shows."""
    steps = tour_steps(README)
    assert len(steps) >= 10, [step.command for step in steps]
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # run where the README's paths resolve
    home = str(up.home)
    for step in steps:
        args = [word.replace(NEWCOMER_HOME, home) for word in shlex.split(step.command)]
        assert args[0] == "chipclear"
        result = _run(up.env, tmp_path, args[1:])
        assert result.returncode == step.exit_code, f"README: $ {step.command}\n{show(result)}"
        missing = matches(step, result.stdout + result.stderr)
        assert missing is None, (
            f"README: $ {step.command}\nshows lines the real output lacks:\n{missing}\n\n{show(result)}"
        )


def _run(env: dict[str, str], cwd: Path, args: list[str]) -> Result:
    return forked.run([str(CHIPCLEAR), *args], env, timeout=180, cwd=cwd)


# -- CLI polish the tour leans on ------------------------------------------------------------------
def test_help_shows_the_policy_section_and_piped_output_is_never_wrapped(up: Up) -> None:
    env = up.env | {"COLUMNS": "80"}
    helped = ok(chipclear(env, "decide", "--help"))
    text = flat(helped.stdout.replace("│", " "))  # the help's box, wrapped inside
    assert "as in the policy's [reviewers] table. [required]" in text, helped.stdout
    # A sentence longer than 80 columns, piped: one line, as a program or a ticket wants it.
    doctor = chipclear(env, "doctor")
    long_lines = [line for line in doctor.stdout.splitlines() if len(line) > 80]
    assert long_lines, doctor.stdout  # the store's and the home's paths make these lines long
    assert all(not line.startswith(" ") for line in doctor.stdout.splitlines()), doctor.stdout
