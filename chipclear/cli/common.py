"""What every CLI command shares: settings, the event store, running a coroutine, error handling."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable, Coroutine
from functools import partial, wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from rich.text import Text

from chipclear import client as ops
from chipclear import keys
from chipclear.cli import output
from chipclear.cli.files import InvalidInput
from chipclear.codec import CodecKeyError
from chipclear.config import ConfigError, Settings
from chipclear.domain.errors import DomainError
from chipclear.domain.limits import cut, one_sentence
from chipclear.domain.policy import PolicyError, describe_validation_error
from chipclear.keys import KeyFileError
from chipclear.projections import open_event_store
from chipclear.store.factory import StoreURLError
from chipclear.store.migrations import SchemaError
from chipclear.store.protocol import CannotSeal, ConcurrencyError, EventStore, StoreUnavailable
from chipclear.store.sql import StoreNotEmpty
from chipclear.store.transfer import InvalidExport
from chipclear.temporal import ServerUnavailable

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
    # Text, not markup: messages quote policy sections like [reviewers] that rich would swallow.
    output.errors.print(
        Text.assemble(("error: ", "bold red"), one_sentence(message)), highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


def handles_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Turn expected failures into one clear sentence and the documented exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except (
            InvalidInput,
            PolicyError,
            StoreURLError,
            CodecKeyError,
            ConfigError,
            InvalidExport,
            KeyFileError,
        ) as exc:
            fail(str(exc), 2)
        except ValidationError as exc:
            # An option that breaks a command's rules (an over-long answer, an empty condition).
            fail(describe_validation_error(exc), 2)
        except (
            ServerUnavailable,
            StoreUnavailable,
            SchemaError,
            StoreNotEmpty,
            ConcurrencyError,
            CannotSeal,
        ) as exc:
            fail(str(exc), 1)
        except (ops.NotFound, ops.Rejected, ops.Conflict, ops.NotAnswered, DomainError) as exc:
            fail(str(exc), 1)

    return wrapper


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def settings() -> Settings:
    return Settings.from_env()


def store(*, create: bool = False) -> EventStore:
    """The event store. Only a command that writes (`create=True`) may make a new SQLite one: a read
    from the wrong place must say so (exit 1), not answer from an empty store it just created."""
    current = settings()
    if not create and (missing := current.missing_store()) is not None:
        raise ops.NotFound(missing)
    # Events are sealed with the recorder key when stored (`screening load` appends one); the key file
    # is read only if something is appended, so reading commands never need it.
    return open_event_store(current.event_store_url).seal_with(
        partial(keys.load_private, keys.recorder_key_file(current.home))
    )


# A person's name, as every command records it (chipclear.domain.commands).
MAX_PERSON = 100


def signing_key(person: str, key_file: Path | None) -> Ed25519PrivateKey:
    """The key that signs `person`'s act: --key, else $CHIPCLEAR_KEY_FILE, else the home's NAME.key."""
    if not person.strip() or len(person) > MAX_PERSON:
        raise InvalidInput(f"--actor: {cut(person)} is not a name of 1 to {MAX_PERSON} characters")
    return keys.load_private(keys.person_key_file(person, settings().home, key_file))


def actor_default() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
