"""Pick a backend from `CHIPCLEAR_EVENT_STORE`-style URLs."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from chipclear.store.protocol import EventStore
from chipclear.store.sqlite import SQLiteEventStore


class StoreURLError(ValueError):
    pass


def open_store(url: str) -> EventStore:
    """`sqlite:///relative.db`, `sqlite:////absolute.db`, optional `?synchronous=normal`."""
    if url.startswith("sqlite:///"):
        path, _, query = url.removeprefix("sqlite:///").partition("?")
        if not path:
            raise StoreURLError(f"CHIPCLEAR_EVENT_STORE: {url!r} names no database file")
        options = parse_qs(query)
        synchronous = options.get("synchronous", ["full"])[0]
        if synchronous.lower() not in {"full", "normal", "extra"}:
            raise StoreURLError(
                f"CHIPCLEAR_EVENT_STORE: synchronous={synchronous!r} (allowed: full, normal, extra)"
            )
        return SQLiteEventStore(path, synchronous=synchronous)
    scheme = urlsplit(url).scheme or url
    raise StoreURLError(
        f"CHIPCLEAR_EVENT_STORE: unsupported scheme {scheme!r} in {url!r} (allowed: sqlite:///PATH)"
    )
