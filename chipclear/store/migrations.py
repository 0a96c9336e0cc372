"""Versioned schema migrations: each step applied once, in order, recorded in `schema_migrations`.

A store's schema is changed only by a numbered step in its backend's list, never by hand, so every
database a release meets is at a known version: `chipclear store migrate` brings it up to date, and a
worker refuses to run against a schema older or newer than the one its release was written for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SchemaError(RuntimeError):
    """The store's schema is not the one this release expects; the message says what to run."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Any], None]  # given the backend's transaction (a `Tx`)


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""
