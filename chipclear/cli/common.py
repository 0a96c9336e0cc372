"""What every CLI command shares: settings, the event store, running a coroutine, error handling."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.text import Text

from chipclear import client as ops
from chipclear.cli import output
from chipclear.cli.files import InvalidInput
from chipclear.codec import CodecKeyError
from chipclear.config import ConfigError, Settings
from chipclear.domain.policy import PolicyError, describe_validation_error
from chipclear.projections import open_event_store
from chipclear.store.factory import StoreURLError
from chipclear.store.migrations import SchemaError
from chipclear.store.protocol import ConcurrencyError, EventStore, StoreUnavailable
from chipclear.store.sql import StoreNotEmpty
from chipclear.store.transfer import InvalidExport
from chipclear.temporal import ServerUnavailable

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]
ActorOption = Annotated[
    str | None, typer.Option(help="Who acts, as recorded on the event (default: your login name).")
]

P = ParamSpec("P")
T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    # Text, not markup: messages quote policy sections like [reviewers] that rich would swallow.
    output.errors.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handles_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Turn expected failures into one clear sentence and the documented exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except (InvalidInput, PolicyError, StoreURLError, CodecKeyError, ConfigError, InvalidExport) as exc:
            fail(str(exc), 2)
        except ValidationError as exc:
            # An option that breaks a command's rules (an over-long answer, an empty condition).
            fail(describe_validation_error(exc), 2)
        except (ServerUnavailable, StoreUnavailable, SchemaError, StoreNotEmpty, ConcurrencyError) as exc:
            fail(str(exc), 1)
        except (ops.NotFound, ops.Rejected, ops.Conflict, ops.NotAnswered) as exc:
            fail(str(exc), 1)

    return wrapper


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def settings() -> Settings:
    return Settings.from_env()


def store() -> EventStore:
    return open_event_store(settings().event_store_url)


def actor_default() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
