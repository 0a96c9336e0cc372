"""Sub-commands whose modules are imported only when they run.

Every `chipclear` call is a fresh interpreter, and what it imports is what a user waits for (docs/
performance.md, "CLI start-up"). So the top-level group knows each sub-command module's commands by
name and one line of help (what `chipclear --help` shows), and imports the module only when one of
them runs, or is asked for its own `--help`. Code that walks every command (the tests, the deploy
checks) still finds them all: reading `group.commands[name]` loads that one.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

# Commands are typer's own click classes (typer carries its own copy of click): typed Any here.
Command = Any


@dataclass(frozen=True)
class Lazy:
    """A sub-command by where it lives: `attribute` of `module`, either a `typer.Typer` (a group of
    commands, `chipclear audit …`) or a command function (`chipclear doctor`). `help` is its line in
    `chipclear --help`: the first line of the group's help or the function's docstring (a test checks)."""

    module: str
    attribute: str
    help: str
    hidden: bool = False

    def load(self, name: str) -> Command:
        found = getattr(importlib.import_module(self.module), self.attribute)
        if isinstance(found, typer.Typer):
            command: Command = typer.main.get_group(found)
        else:
            single = typer.Typer(add_completion=False)
            single.command(name=name, hidden=self.hidden)(found)
            command = typer.main.get_command(single)
        command.name = name
        command.hidden = self.hidden
        return command

    def stub(self, name: str) -> Command:
        """What `chipclear --help` lists for it without importing it: its name and line of help."""
        return TyperCommand(name, help=self.help, hidden=self.hidden)


class LazyCommands(MutableMapping[str, Command]):
    """A group's commands by name, in order: those built already, then the lazy ones, each imported
    the first time it is read."""

    def __init__(self, built: Mapping[str, Command], lazy: Mapping[str, Lazy]) -> None:
        self._built = dict(built)
        self._lazy = {name: where for name, where in lazy.items() if name not in self._built}
        self._order = [*self._built, *self._lazy]

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            self._built[name] = self._lazy[name].load(name)  # KeyError: no such command
        return self._built[name]

    def __setitem__(self, name: str, command: Command) -> None:
        if name not in self:
            self._order.append(name)
        self._built[name] = command
        self._lazy.pop(name, None)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._built.pop(name, None)
        self._lazy.pop(name, None)
        self._order.remove(name)

    def __contains__(self, name: object) -> bool:
        return name in self._built or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def listed(self, name: str) -> Command | None:
        """The command if it is built, else its stub: for help, which must not import anything."""
        if name in self._built:
            return self._built[name]
        where = self._lazy.get(name)
        return where.stub(name) if where is not None else None


class LazyGroup(TyperGroup):
    """The top-level group: `lazy` (set by `lazy_group`) names the sub-commands imported on use."""

    lazy: Mapping[str, Lazy] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.commands, self.lazy)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # names only: nothing is imported to list them

    def get_command(self, ctx: Any, cmd_name: str) -> Command | None:
        # Help asks for every command; only a command that runs is imported (`resolve_command`).
        commands = self.commands
        return commands.listed(cmd_name) if isinstance(commands, LazyCommands) else commands.get(cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        if args and args[0] in self.commands:
            self.commands[args[0]]  # it runs: import it now
        return super().resolve_command(ctx, args)


def lazy_group(commands: Mapping[str, Lazy]) -> type[LazyGroup]:
    """A group class for `typer.Typer(cls=…)` that adds `commands` to those defined on the app."""
    return type("LazyCommandGroup", (LazyGroup,), {"lazy": dict(commands)})
