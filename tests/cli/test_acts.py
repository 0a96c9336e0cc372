"""`common.acts`: a command states a person's act once (`act: Act` or `signing: Signing`) and typer
still sees --actor, --key and --json, with the same names, defaults and help as before. No server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from chipclear.cli.common import Act, Signing, acts, handles_errors
from chipclear.cli.main import app

# The commands that record a person's act, as docs/cli.md lists their options.
WITH_ACTOR = {
    "submit",
    "evidence",
    "withdraw",
    "respond",
    "ship",
    "suspend-licence",
    "reinstate-licence",
    "exporter us-shipments",
    "batch open",
    "screening load",
}
SIGNED_BY_REVIEWER = {"decide", "clear-hold"}


def commands() -> dict[str, Any]:
    """Every chipclear command by its full name (`batch open`), each lazy one imported."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        group = getattr(command, "commands", None)
        if group is None:
            found[" ".join(path)] = command
            return
        for name in list(group):
            walk(group[name], [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_every_act_command_lists_the_options_of_an_act_last() -> None:
    everything = commands()
    assert set(everything) >= WITH_ACTOR | SIGNED_BY_REVIEWER
    for name, command in everything.items():
        options = {opt: param for param in command.params for opt in param.opts}
        last = [param.opts for param in command.params[-3:]]
        if name in WITH_ACTOR:
            assert last == [["--actor"], ["--key"], ["--json"]], name
        elif name in SIGNED_BY_REVIEWER:
            assert "--actor" not in options and last[1:] == [["--key"], ["--json"]], name
        else:
            assert "--actor" not in options and "--key" not in options, name
            continue
        assert options["--key"].default is None and options["--json"].default is False, name
        assert options["--key"].help.startswith("Your private key file, to sign the act"), name
        assert options["--json"].help == "Print JSON for programs.", name
        if "--actor" in options:
            assert options["--actor"].default is None, name
            assert options["--actor"].help.startswith("Who acts, as recorded on the event"), name


def tiny_app(command: Any) -> typer.Typer:
    tiny = typer.Typer(add_completion=False)
    tiny.command()(command)
    return tiny


def test_an_act_is_resolved_once_before_the_command_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "chen")
    seen: list[tuple[str, bool, Act]] = []

    @handles_errors
    @acts
    def record(act: Act, what: str, loud: Annotated[bool, typer.Option("--loud")] = False) -> None:
        """Record something."""
        seen.append((what, loud, act))

    runner = CliRunner()
    tiny = tiny_app(record)
    given = runner.invoke(tiny, ["thing", "--loud", "--actor", "wang", "--key", "k.key", "--json"])
    assert given.exit_code == 0, given.output
    assert seen.pop() == ("thing", True, Act(key_file=Path("k.key"), json=True, actor="wang"))
    for default in (["other"], ["other", "--actor", ""]):  # an empty name is the login name, as before
        assert runner.invoke(tiny, default).exit_code == 0
        assert seen.pop() == ("other", False, Act(key_file=None, json=False, actor="chen"))
    help_text = runner.invoke(tiny, ["--help"]).output
    assert help_text.index("--loud") < help_text.index("--actor") < help_text.index("--key")
    assert help_text.index("--key") < help_text.index("--json")
    assert record.__name__ == "record" and record.__doc__ == "Record something."


def test_signing_gives_key_and_json_but_no_actor() -> None:
    seen: list[Signing] = []

    @acts
    def decide(signing: Signing, reviewer: Annotated[str, typer.Option()]) -> None:
        seen.append(signing)

    runner = CliRunner()
    tiny = tiny_app(decide)
    assert runner.invoke(tiny, ["--reviewer", "wang", "--json"]).exit_code == 0
    assert seen == [Signing(key_file=None, json=True)] and not isinstance(seen[0], Act)
    refused = runner.invoke(tiny, ["--reviewer", "wang", "--actor", "chen"])
    assert refused.exit_code == 2 and "No such option" in refused.output


def test_acts_refuses_a_command_it_cannot_serve() -> None:
    def no_act(request_id: str) -> None: ...

    def two(act: Act, signing: Signing) -> None: ...

    def clash(act: Act, key: str) -> None: ...

    with pytest.raises(TypeError, match="one parameter annotated Act or Signing"):
        acts(no_act)
    with pytest.raises(TypeError, match="one parameter annotated Act or Signing"):
        acts(two)
    with pytest.raises(TypeError, match="adds key itself"):
        acts(clash)
