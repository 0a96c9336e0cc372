"""Pick a backend from `CHIPCLEAR_EVENT_STORE`-style URLs."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from typing import Any, TypedDict, Unpack
from urllib.parse import parse_qs

from chipclear.config import SQLITE_SYNCHRONOUS
from chipclear.domain.limits import cut_text
from chipclear.store.projection import Projection
from chipclear.store.protocol import EventStore
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.store.trust import RecorderKey
from chipclear.store.upcasting import Upcasters
from chipclear.store.urls import StoreURLError, redact

__all__ = ["StoreURLError", "open_store"]


ALLOWED = "sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


SQLITE_MAGIC = b"SQLite format 3\x00"
# The kernel's own file systems: no database file can live there, whatever the permissions say.
NOT_FOR_FILES = ("/proc", "/sys")


def _sqlite_file(path: str) -> None:
    """A SQLite store is a regular file holding a SQLite database, or nothing yet: anything else (a
    directory, /dev/null, a file under /proc, a text file) is named here, before SQLite fails on it
    with a driver error that says only "disk I/O error" or "file is not a database"."""
    shown = cut_text(path)
    try:
        resolved = os.path.realpath(path)
    except (OSError, ValueError) as exc:
        raise StoreURLError(f"CHIPCLEAR_EVENT_STORE: {shown} cannot be used ({exc})") from None
    if any(resolved == top or resolved.startswith(top + "/") for top in NOT_FOR_FILES):
        top = next(t for t in NOT_FOR_FILES if resolved == t or resolved.startswith(t + "/"))
        raise StoreURLError(
            f"CHIPCLEAR_EVENT_STORE: {shown} is under {top}, where no database file can be kept; "
            "name a file on a real disk"
        )
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return  # a new store: SQLite makes it (or the caller says there is none)
    except OSError as exc:
        raise StoreURLError(
            f"CHIPCLEAR_EVENT_STORE: {shown} cannot be used ({exc.strerror or exc})"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise StoreURLError(
            f"CHIPCLEAR_EVENT_STORE: {shown} is not a regular file; name a SQLite database file"
        )
    if info.st_size == 0:
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreURLError(
            f"CHIPCLEAR_EVENT_STORE: {shown} cannot be read ({exc.strerror or exc})"
        ) from None
    if head != SQLITE_MAGIC:
        raise StoreURLError(
            f"CHIPCLEAR_EVENT_STORE: {shown} is not a SQLite database (it does not start with the SQLite "
            "header); name the event store's file, or a new file to make one"
        )


class StoreOptions(TypedDict, total=False):
    """What every backend takes alike, passed on as given (each backend has the same defaults: no
    projection, the standard upcasters, no recorder key)."""

    projections: Iterable[Projection[Any]]
    upcasters: Upcasters
    recorder: RecorderKey | None


def open_store(url: str, *, require_schema: bool = True, **shared: Unpack[StoreOptions]) -> EventStore:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` (optional `?synchronous=normal`), or
    `postgresql://user@host:5432/db` with libpq's options and `pool_min_size`/`pool_max_size`.

    A PostgreSQL store must be migrated (`chipclear store migrate`) before workers use it; SQLite
    migrates itself when opened. `require_schema=False` opens either as it is, for the migration.
    `projections` are kept inline with every append (chipclear.projections.open_event_store passes
    the request projection); `upcasters` bring old stored event shapes up to date on read.
    `recorder`: the key that seals every appended event (or a function that loads it at the first
    append); without one the store reads, audits and imports, and refuses to append (CannotSeal).
    """
    if url.startswith("sqlite:///"):
        path, _, query = url.removeprefix("sqlite:///").partition("?")
        if not path:
            raise StoreURLError(f"CHIPCLEAR_EVENT_STORE: {redact(url)!r} names no database file")
        _sqlite_file(path)
        options = parse_qs(query)
        synchronous = options.get("synchronous", ["full"])[0]
        if synchronous.lower() not in SQLITE_SYNCHRONOUS:
            raise StoreURLError(
                f"CHIPCLEAR_EVENT_STORE: synchronous={synchronous!r} (allowed: full, normal, extra)"
            )
        return SQLiteEventStore(path, synchronous=synchronous, migrate=require_schema, **shared)
    # Every message below quotes the URL redacted, never as given: `user:secret@host/db`, without its
    # scheme, would otherwise be printed whole, password and all.
    scheme, separator, _ = url.partition("://")
    if not separator or not SCHEME.fullmatch(scheme):
        raise StoreURLError(f"CHIPCLEAR_EVENT_STORE: {redact(url)!r} has no scheme:// (allowed: {ALLOWED})")
    if scheme in {"postgresql", "postgres"}:
        from chipclear.store.postgres import PostgresEventStore

        return PostgresEventStore(url, require_schema=require_schema, **shared)
    raise StoreURLError(
        f"CHIPCLEAR_EVENT_STORE: unsupported scheme {scheme!r} in {redact(url)!r} (allowed: {ALLOWED})"
    )
