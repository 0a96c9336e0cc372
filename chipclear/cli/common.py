"""What every CLI command shares: settings, the event store, running a coroutine, error handling,
and the options of a person's act (`acts`).

Imported by every command, so it imports nothing heavy at module level (docs/performance.md, "CLI
start-up"): the store, the domain and Temporal are imported inside the functions that use them.
"""

from __future__ import annotations

import getpass
import inspect
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar, cast, get_type_hints

import typer
from rich.text import Text

from chipclear.cli import output
from chipclear.client_errors import NotFound
from chipclear.config import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from chipclear.store.protocol import EventStore

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]
ActorOption = Annotated[
    str | None, typer.Option(help="Who acts, as recorded on the event (default: your login name).")
]
KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="Your private key file, to sign the act (default: $CHIPCLEAR_KEY_FILE, else "
        "$CHIPCLEAR_HOME/keys/NAME.key for the person named).",
    ),
]

P = ParamSpec("P")
T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    """One sentence on stderr and the exit code: 2 for bad input, 1 for a refused or failed action.

    Every message passes here, so this is where it is made one line of at most MAX_MESSAGE characters:
    a 50 MB value or a 1 MB name in a message is cut, never echoed whole."""
    from chipclear.domain.limits import one_sentence

    # Text, not markup: messages quote policy sections like [reviewers] that rich would swallow.
    output.errors.print(
        Text.assemble(("error: ", "bold red"), one_sentence(message)), highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


# The failures a command expects, and their exit codes: 2 for bad input (a ValidationError, an option
# that breaks a command's rules, is described field by field), 1 for a refused or failed action.
# Named by module and class rather than imported: a command that never opened the store must not pay
# for importing it to tell its errors apart, and a class can only have been raised once its module is
# loaded (`raised_as`). A new failure is a line here; order matters only for subclasses.
EXPECTED: tuple[tuple[str, str, int], ...] = (
    ("chipclear.domain.input_gate", "InputRefused", 2),  # = chipclear.cli.files.InvalidInput
    ("chipclear.domain.policy", "PolicyError", 2),
    ("chipclear.store.urls", "StoreURLError", 2),
    ("chipclear.codec", "CodecKeyError", 2),
    ("chipclear.config", "ConfigError", 2),
    ("chipclear.store.transfer", "InvalidExport", 2),
    ("chipclear.keys", "KeyFileError", 2),
    ("chipclear.bench_report", "NoReportBlock", 2),
    ("pydantic_core", "ValidationError", 2),
    ("chipclear.temporal", "ServerUnavailable", 1),
    ("chipclear.store.errors", "StoreUnavailable", 1),
    ("chipclear.store.migrations", "SchemaError", 1),
    ("chipclear.store.errors", "StoreNotEmpty", 1),
    ("chipclear.store.errors", "ConcurrencyError", 1),
    ("chipclear.store.errors", "CannotSeal", 1),
    ("chipclear.client_errors", "NotFound", 1),
    ("chipclear.client_errors", "Rejected", 1),
    ("chipclear.client_errors", "Conflict", 1),
    ("chipclear.client_errors", "NotAnswered", 1),
    ("chipclear.domain.errors", "DomainError", 1),
)


def raised_as(exc: BaseException, module: str, name: str) -> bool:
    """Whether `exc` is a `module.name`, without importing `module`: unloaded, it raised nothing."""
    kind = getattr(sys.modules.get(module), name, None)
    return isinstance(kind, type) and isinstance(exc, kind)


def expected(exc: BaseException) -> tuple[str, str, int] | None:
    """The first line of `EXPECTED` that `exc` is, or None: a failure no command expects."""
    return next((line for line in EXPECTED if raised_as(exc, line[0], line[1])), None)


def handles_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Turn expected failures into one clear sentence and the documented exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            line = expected(exc)
            if line is None:
                raise  # typer's own exits and usage errors, and the unexpected (chipclear.cli.main.main)
            module, _, code = line
            if module == "pydantic_core":
                from pydantic import ValidationError

                from chipclear.domain.policy import describe_validation_error

                fail(describe_validation_error(cast(ValidationError, exc)), code)
            fail(str(exc), code)

    return wrapper


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    import asyncio

    return asyncio.run(coroutine)


def settings() -> Settings:
    return Settings.from_env()


def store(*, create: bool = False) -> EventStore:
    """The event store. Only a command that writes (`create=True`) may make a new SQLite one: a read
    from the wrong place must say so (exit 1), not answer from an empty store it just created."""
    from functools import partial

    from chipclear import keys
    from chipclear.projections import open_event_store

    current = settings()
    if not create and (missing := current.missing_store()) is not None:
        raise NotFound(missing)
    # Events are sealed with the recorder key when stored (`screening load` appends one); the key file
    # is read only if something is appended, so reading commands never need it.
    return open_event_store(current.event_store_url).seal_with(
        partial(keys.load_private, keys.recorder_key_file(current.home))
    )


# A person's name, as every command records it (chipclear.domain.commands).
MAX_PERSON = 100


def signing_key(person: str, key_file: Path | None) -> Ed25519PrivateKey:
    """The key that signs `person`'s act: --key, else $CHIPCLEAR_KEY_FILE, else the home's NAME.key."""
    from chipclear import keys
    from chipclear.cli.files import InvalidInput
    from chipclear.domain.limits import cut

    if not person.strip() or len(person) > MAX_PERSON:
        raise InvalidInput(f"--actor: {cut(person)} is not a name of 1 to {MAX_PERSON} characters")
    return keys.load_private(keys.person_key_file(person, settings().home, key_file))


def actor_default() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


@dataclass(frozen=True)
class Signing:
    """How a person's act is signed and shown: the key file given (--key) and whether to print JSON
    (--json). A command whose person is named by an option of its own (`decide --reviewer`) takes
    them as one parameter, `signing: Signing`, and `acts` gives it the two options."""

    key_file: Path | None
    json: bool

    def key(self, person: str) -> Ed25519PrivateKey:
        """The key that signs `person`'s act (`signing_key`): exit 2 if it cannot be read."""
        return signing_key(person, self.key_file)


@dataclass(frozen=True)
class Act(Signing):
    """A person's act: who acts (--actor, else the login name), their key file and --json, as one
    parameter `act: Act` that `acts` gives the three options."""

    actor: str


# The options of a person's act, by the parameter name typer calls the command with; each command
# lists them last, in this order. An `Act` takes all three, a `Signing` all but --actor.
ACT_OPTIONS = (
    inspect.Parameter("actor", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ActorOption),
    inspect.Parameter("key", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=KeyOption),
    inspect.Parameter("json_", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOption),
)


def acts(command: Callable[..., T]) -> Callable[..., T]:
    """Give `command` the options of a person's act in place of its parameter annotated `Act` (--actor,
    --key, --json) or `Signing` (--key, --json), and call it with them resolved, the actor once.

    typer reads a command's options from `inspect.signature(command, eval_str=True)`, which returns a
    `__signature__` as it is, and `typing.get_type_hints(command)`: the wrapper sets both, with the
    command's own parameters first and their annotations evaluated."""
    hints = get_type_hints(command, include_extras=True)
    signature = inspect.signature(command)
    found = [name for name in signature.parameters if hints.get(name) in (Act, Signing)]
    if len(found) != 1:
        raise TypeError(f"{command.__name__}: @acts needs one parameter annotated Act or Signing")
    name, kind = found[0], hints[found[0]]
    options = ACT_OPTIONS if kind is Act else ACT_OPTIONS[1:]
    if clash := {option.name for option in options} & set(signature.parameters):
        raise TypeError(f"{command.__name__}: @acts adds {', '.join(sorted(clash))} itself")
    own = [
        parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
        for parameter in signature.parameters.values()
        if parameter.name != name
    ]

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        key_file, as_json = kwargs.pop("key"), kwargs.pop("json_")
        if kind is Act:
            actor = kwargs.pop("actor") or actor_default()
            kwargs[name] = Act(key_file=key_file, json=as_json, actor=actor)
        else:
            kwargs[name] = Signing(key_file=key_file, json=as_json)
        return command(*args, **kwargs)

    parameters = [*own, *options]
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters, return_annotation=hints.get("return", signature.return_annotation)
    )
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters} | {
        "return": hints.get("return", None)
    }
    return wrapper
