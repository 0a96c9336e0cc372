"""The screening list in force, prepared for matching: the newest one loaded into the store, else the
bundled sample.

A worker keeps the prepared index in memory and prepares it again only when a new list is loaded. A
CLI call cannot keep anything, and preparing the full Consolidated Screening List takes seconds, so
`IndexCache` keeps the prepared tables on disk in a SQLite file named for the list's checksum and the
matcher's code: a `screening check` reads the few rows its names need. The file is derived data: it is
built from the list as the store verifies it, rebuilt whenever it is missing or unreadable, and never
what a request's screening is recorded from (the worker screens from memory).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from importlib import resources
from json.encoder import encode_basestring_ascii
from pathlib import Path

from chipclear.domain.screening import ScreeningIndex, ScreeningList, ScreeningListInfo, bundled_list
from chipclear.domain.screening.index import Card, MemoryTables, Name, no_collection
from chipclear.store.protocol import ScreeningLists

# The matcher's own source: a cache built by other code is never read (its words could differ).
_MATCHER_MODULES = ("normalise.py", "score.py", "index.py")
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE words (word TEXT PRIMARY KEY, entries INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE keys (first TEXT PRIMARY KEY, chunk BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE near (key TEXT PRIMARY KEY, words TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE names (id INTEGER PRIMARY KEY, owner INTEGER, text TEXT, words TEXT, folds TEXT, optional TEXT);
CREATE TABLE cards (id INTEGER PRIMARY KEY, name TEXT, source TEXT, entry_id TEXT, entity_number TEXT,
                    type TEXT, programs TEXT, countries TEXT);
"""
# The inverted index's keys, in order, this many to a row ({key: [name, …]} as compact JSON, under the
# chunk's first key): a few thousand rows to write, not a third of a million (key, name) pairs. JSON,
# not marshal or pickle: a file read back is only ever data, whoever wrote it.
_CHUNK = 64


def _json_strings(items: tuple[str, ...]) -> str:
    """`json.dumps` of a tuple of strings, without its per-call cost (a hundred thousand calls a load)."""
    return "[" + ",".join(map(encode_basestring_ascii, items)) + "]"


def matcher_fingerprint() -> str:
    """sha256 of the matcher's source and the cache's schema, first 12 hex digits."""
    digest = hashlib.sha256()
    package = resources.files("chipclear.domain.screening")
    for module in _MATCHER_MODULES:
        digest.update((package / module).read_bytes())
    digest.update(_SCHEMA.encode())  # and the cache's own layout: a file of another layout is not read
    return digest.hexdigest()[:12]


def _chunks(keys: dict[str, list[int]]) -> Iterable[tuple[str, bytes]]:
    order = sorted(keys)
    for start in range(0, len(order), _CHUNK):
        chunk = order[start : start + _CHUNK]
        yield chunk[0], json.dumps({key: keys[key] for key in chunk}, separators=(",", ":")).encode()


class DiskTables:
    """The `Tables` of a prepared list, read from its cache file row by row as names need them."""

    def __init__(self, path: Path, info: ScreeningListInfo) -> None:
        self.info = info
        # Read-only and immutable: the file is replaced whole, never changed in place.
        self._db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        (entries,) = self._db.execute("SELECT value FROM meta WHERE key = 'entries'").fetchone()
        self.entries = int(entries)

    def _rows(self, sql: str, values: Iterable[object]) -> list[tuple[object, ...]]:
        values = list(values)
        rows: list[tuple[object, ...]] = []
        for start in range(0, len(values), 500):  # SQLite's limit on bound parameters
            chunk = values[start : start + 500]
            rows += self._db.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
        return rows

    def using(self, words: Iterable[str]) -> dict[str, int]:
        rows = self._rows("SELECT word, entries FROM words WHERE word IN ({})", words)
        return {str(word): int(str(entries)) for word, entries in rows}

    def names_for(self, keys: Iterable[str]) -> set[int]:
        chunks: dict[str, dict[str, list[int]]] = {}
        found: set[int] = set()
        for key in keys:
            row = self._db.execute(
                "SELECT first, chunk FROM keys WHERE first <= ? ORDER BY first DESC LIMIT 1", (key,)
            ).fetchone()
            if row is None:
                continue
            first, packed = row
            if first not in chunks:
                chunk = json.loads(packed)
                if not isinstance(chunk, dict):
                    raise ValueError(f"screening cache: chunk {first!r} is not a table of keys")
                chunks[first] = chunk
            found.update(chunks[first].get(key, ()))
        return found

    def near(self, keys: Iterable[str]) -> set[str]:
        rows = self._rows("SELECT words FROM near WHERE key IN ({})", keys)
        return {word for (words,) in rows for word in str(words).split(" ")}

    def names(self, numbers: Iterable[int]) -> dict[int, Name]:
        rows = self._rows(
            "SELECT id, owner, text, words, folds, optional FROM names WHERE id IN ({})", numbers
        )
        return {
            int(str(id_)): Name(
                int(str(owner)),
                str(text),
                tuple(str(words).split(" ")),
                tuple(json.loads(str(folds))),
                frozenset(str(optional).split()),
            )
            for id_, owner, text, words, folds, optional in rows
        }

    def cards(self, numbers: Iterable[int]) -> dict[int, Card]:
        rows = self._rows(
            "SELECT id, name, source, entry_id, entity_number, type, programs, countries FROM cards "
            "WHERE id IN ({})",
            numbers,
        )
        return {
            int(str(row[0])): Card(
                str(row[1]),
                str(row[2]),
                None if row[3] is None else str(row[3]),
                None if row[4] is None else str(row[4]),
                None if row[5] is None else str(row[5]),
                tuple(json.loads(str(row[6]))),
                tuple(json.loads(str(row[7]))),
            )
            for row in rows
        }


class IndexCache:
    """Prepared lists on disk, one SQLite file per list checksum and matcher version."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, info: ScreeningListInfo) -> Path:
        return self.directory / f"screening-{info.sha256[:24]}-{matcher_fingerprint()}.sqlite"

    def open(self, info: ScreeningListInfo) -> ScreeningIndex | None:
        """The cached index of the list `info` names, or None if there is none (or it is unreadable)."""
        path = self.path(info)
        if not path.is_file():
            return None
        try:
            tables = DiskTables(path, info)
        except (sqlite3.Error, TypeError, ValueError):
            return None
        return ScreeningIndex(tables)

    def write(self, tables: MemoryTables) -> Path:
        """Write `tables` to the cache, atomically: a concurrent reader sees the whole file or none."""
        with no_collection():  # hundreds of thousands of rows made and dropped, none in a cycle
            return self._write(tables)

    def _write(self, tables: MemoryTables) -> Path:
        path = self.path(tables.info)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.unlink(missing_ok=True)
        db = sqlite3.connect(partial)
        try:
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.executescript(_SCHEMA)
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("entries", str(tables.entries)), ("info", tables.info.model_dump_json())],
            )
            db.executemany("INSERT INTO words VALUES (?, ?)", tables.word_use.items())
            db.executemany(
                "INSERT INTO keys VALUES (?, ?)",
                _chunks(tables.keys),
            )
            db.executemany(
                "INSERT INTO near VALUES (?, ?)",
                ((key, " ".join(words)) for key, words in tables.near_words.items()),
            )
            db.executemany(
                "INSERT INTO names VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (
                        n,
                        name.owner,
                        name.text,
                        " ".join(name.words),
                        _json_strings(name.folds),
                        " ".join(name.optional),
                    )
                    for n, name in enumerate(tables.name_list)
                ),
            )
            db.executemany(
                "INSERT INTO cards VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        n,
                        c.name,
                        c.source,
                        c.id,
                        c.entity_number,
                        c.type,
                        _json_strings(c.programs),
                        _json_strings(c.countries),
                    )
                    for n, c in enumerate(tables.card_list)
                ),
            )
            db.commit()
        finally:
            db.close()
        os.replace(partial, path)
        return path


class CurrentList:
    """Keeps one prepared index per list version: a full list is parsed once, not per request.

    With a `cache`, an index is opened from disk when one was prepared before (by any process), and
    written there when this process prepares it."""

    def __init__(self, store: ScreeningLists, cache: IndexCache | None = None) -> None:
        self.store = store
        self.cache = cache
        self._index: ScreeningIndex | None = None
        self._lock = threading.Lock()

    def index(self) -> ScreeningIndex:
        with self._lock:
            current = self.store.current_screening_info()
            if current is None:
                # No list loaded yet: the sample bundled with the package, named as such in every event.
                if self._index is None or self._index.info.loaded_at is not None:
                    self._index = self._prepared(None)
            elif self._index is None or current.version != self._index.info.version:
                self._index = self._prepared(current)
            return self._index

    def _prepared(self, info: ScreeningListInfo | None) -> ScreeningIndex:
        sample = bundled_list() if info is None else None
        wanted = sample.info if sample is not None else info
        assert wanted is not None
        if self.cache is not None:
            cached = self.cache.open(wanted)
            if cached is not None and cached.info.sha256 == wanted.sha256:
                return cached
        screening_list = sample if sample is not None else self.store.screening_list(wanted)
        return self.prepare(screening_list)

    def prepare(self, screening_list: ScreeningList) -> ScreeningIndex:
        """Index `screening_list` in memory, and keep it in the cache for the next process."""
        tables = MemoryTables(screening_list)
        if self.cache is not None:
            # A cache that cannot be written only costs the next call the time to prepare the list.
            with contextlib.suppress(OSError, sqlite3.Error):
                self.cache.write(tables)
        return ScreeningIndex(tables)
