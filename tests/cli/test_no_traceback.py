"""Every command of the CLI, sub-commands included, given bad input: never a traceback, never an exception
out of a command, never an error longer than one sentence (issue 14).

The commands are found by walking the click tree typer builds, so a command added later is covered
without editing this file. Each gets an unknown option, a value of the wrong type for each typed
parameter, and (unless it runs until stopped: server, up, bench, demo, codec-server) a hostile value for
each text or path parameter: 100,000 characters with terminal escapes, or a symbolic link loop for a path.
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from collections.abc import Iterator
from contextlib import redirect_stderr
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import typer
import typer.main
import typer.testing
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from chipclear.cli.common import handles_errors
from chipclear.cli.main import app
from chipclear.codec import data_converter, new_key, parse_keys
from chipclear.domain.limits import MAX_MESSAGE
from chipclear.projections import PROJECTIONS
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys

COMMAND = typer.main.get_command(app)
# These run until stopped once their input is good: they get only input that the parser refuses.
RUN_UNTIL_STOPPED = {"server", "up", "bench", "demo", "codec-server"}
HOSTILE_TEXT = "\x1b[31m\u202e" + "x" * 100_000
# A path no command can read or write through: a symbolic link loop in the test's own folder. Never a
# device: a command that writes a file whole (write, then rename over the target) would, run as root,
# put a regular file where /dev/zero stood.
HOSTILE_PATH = "{loop}"
# A value the parser of each kind of parameter refuses.
WRONG_TYPE = {"number": "twelve", "datetime": "yesterday", "choice": "no-such-choice"}
runner = CliRunner()


def leaves(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    commands = getattr(group, "commands", None)
    if commands is None:
        yield path, group
        return
    for name, command in commands.items():
        yield from leaves(command, (*path, name))


def kind(param: Any) -> str:
    """What a parameter takes, from the annotation typer built it from."""
    annotation = param.type_descriptor.annotation
    options = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(options) == 1:
        annotation = options[0]
    if get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    if annotation is bool:
        return "flag"
    if annotation in (int, float):
        return "number"
    if annotation is datetime:
        return "datetime"
    if annotation is Path:
        return "path"
    if get_origin(annotation) is Literal or (isinstance(annotation, type) and issubclass(annotation, Enum)):
        return "choice"
    return "text"


def filler(param: Any) -> str:
    """A plausible value for a required parameter, so that the one under test is the bad one."""
    return {"number": "5", "datetime": "2030-01-01T00:00:00+00:00", "path": HOSTILE_PATH}.get(
        kind(param), "corpus-nt-1"
    )


def invocation(path: tuple[str, ...], command: Any, bad: Any, value: str) -> list[str]:
    args: list[str] = [*path]
    for param in command.params:
        if param is not bad and not param.required:
            continue
        text = value if param is bad else filler(param)
        is_option = param.param_type_name == "option"
        args.extend([max(param.opts, key=len), text] if is_option else [text])
    return args


def cases() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for path, command in leaves(COMMAND):
        name = " ".join(path)
        found.append((f"{name} --no-such-option", [*path, "--no-such-option"]))
        for param in command.params:
            taken = kind(param)
            if taken == "flag":
                continue
            if taken in WRONG_TYPE:
                found.append(
                    (f"{name} {param.name}=wrong", invocation(path, command, param, WRONG_TYPE[taken]))
                )
            elif path[0] not in RUN_UNTIL_STOPPED:
                hostile = HOSTILE_PATH if taken == "path" else HOSTILE_TEXT
                found.append((f"{name} {param.name}=hostile", invocation(path, command, param, hostile)))
    return found


@dataclass(frozen=True)
class Stage:
    env: dict[str, str]
    loop: Path


@pytest.fixture(scope="module")
def stage(temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    patch = pytest.MonkeyPatch()
    patch.setattr(typer.testing, "_get_command", lambda _app: COMMAND)  # built once (see test_corpus)

    def worker_started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a worker would have started")

    patch.setattr("chipclear.worker.main", worker_started)
    # A command may configure logging (onto the runner's stderr, closed after it) before it refuses:
    # the session's own handlers come back afterwards.
    patch.setattr(logging.root, "handlers", logging.root.handlers[:])
    tmp = tmp_path_factory.mktemp("no-traceback")
    home = tmp / "home"
    keys.install(home)
    db = tmp / "events.db"
    SQLiteEventStore(db, projections=PROJECTIONS).close()
    loop = tmp / "loop"
    loop.symlink_to(tmp / "loop-back")
    (tmp / "loop-back").symlink_to(loop)
    yield Stage(
        {
            "CHIPCLEAR_HOME": str(home),
            "CHIPCLEAR_EVENT_STORE": f"sqlite:///{db}",
            "CHIPCLEAR_TASK_QUEUE": f"no-traceback-{uuid.uuid4().hex[:12]}",
            "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": "default",
            "CHIPCLEAR_POLICY": "",
            "CHIPCLEAR_CODEC_KEYS": "",
            "CHIPCLEAR_KEY_FILE": "",
        },
        loop,
    )
    patch.undo()


def misbehaviour(result: Result) -> str | None:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"raised {type(result.exception).__name__}: {str(result.exception)[:200]}"
    if "Traceback" in result.output:
        return "printed a traceback"
    if result.exit_code not in (0, 1, 2):
        return f"exit {result.exit_code}"
    for line in result.output.splitlines():
        if line.startswith("error:") and len(" ".join(result.output.split())) > MAX_MESSAGE + 200:
            return f"an error of {len(result.output)} characters"
    return None


def test_every_command_given_bad_input_answers_in_one_sentence_without_a_traceback(stage: Stage) -> None:
    every = cases()
    assert len({name.split(" --")[0].split(" ")[0] for name, _ in every}) >= 20  # the walk found them
    problems = []
    for name, args in every:
        result = runner.invoke(
            app, [arg.replace(HOSTILE_PATH, str(stage.loop)) for arg in args], env=stage.env
        )
        found = misbehaviour(result)
        if found:
            problems.append(f"{name}: {found}\n    {' '.join(result.output.split())[:300]}")
    assert not problems, f"{len(problems)} of {len(every)} invocations misbehaved:\n" + "\n".join(problems)


def test_a_payload_sealed_with_other_codec_keys_is_one_sentence_naming_the_keys() -> None:
    """The CLI and the worker given different CHIPCLEAR_CODEC_KEYS (or the CLI none): whatever the CLI
    decodes fails in the payload codec, which names the mismatch; the command says it and exits 2."""

    worker_keys = parse_keys(f"2026-11={new_key()}", source="worker")
    sealed = asyncio.run(data_converter(worker_keys).encode(["a request's state"]))

    @handles_errors
    def read_back(keys: str) -> None:
        asyncio.run(
            data_converter(parse_keys(keys, source="CLI") if keys else {}, refuse_sealed=True).decode(sealed)
        )

    for cli_keys in (f"2026-12={new_key()}", f"2026-11={new_key()}", ""):
        said = io.StringIO()
        with pytest.raises(typer.Exit) as exited, redirect_stderr(said):
            read_back(cli_keys)
        assert exited.value.exit_code == 2
        sentence = " ".join(said.getvalue().split())
        assert "'2026-11'" in sentence and "CHIPCLEAR_CODEC_KEYS" in sentence, sentence
        assert "Traceback" not in sentence and len(sentence) <= MAX_MESSAGE + len("error: ")
