"""The screening list in force, prepared for matching: the newest one loaded into the store, else the
bundled sample.

A worker keeps the prepared index in memory and prepares it again only when a new list is loaded. A
CLI call cannot keep anything, and preparing the full Consolidated Screening List takes seconds, so
`IndexCache` keeps the prepared tables on disk in SQLite files named for the list's checksum and the
matcher's code: a `screening check` reads the few rows its names need. The files are derived data:
built from the list as the store verifies it (or, by `screening load`, from the file it is parsed
from, in parts: `Preparing`), rebuilt whenever missing or unreadable, and never what a request's
screening is recorded from (the worker screens from memory).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import os
import re
import signal
import sqlite3
import sys
import threading
import traceback
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import NoReturn

from chipclear.domain.screening import (
    ScreeningIndex,
    ScreeningList,
    ScreeningListError,
    ScreeningListInfo,
    bundled_list,
)
from chipclear.domain.screening.csl import names_in, read_entries, split_csl
from chipclear.domain.screening.index import (
    Card,
    MemoryTables,
    Name,
    Part,
    fold_part,
    near_words,
    no_collection,
)
from chipclear.domain.screening.score import Weights
from chipclear.store.screening_tables import ListsInForce, entries_json, joined_entries_json

# The matcher's own source: a cache built by other code is never read (its words could differ).
_MATCHER_MODULES = ("normalise.py", "score.py", "index.py")
# A cache is a file for the whole list (how many entries use each word, the rare words' near keys,
# and its parts) and a file for each part: a run of the list's entries folded and indexed among
# themselves (`Part`), its entries and names numbered from 0 (`parts` says where each run starts in
# the whole list). A list prepared in one process has one part; `screening load` has as many as it
# runs processes, and copies nothing from them.
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE words (word TEXT PRIMARY KEY, entries INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE near (key TEXT PRIMARY KEY, words TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE parts (part INTEGER PRIMARY KEY, file TEXT NOT NULL, first_entry INTEGER NOT NULL,
                    first_name INTEGER NOT NULL);
"""
_PART_SCHEMA = """
CREATE TABLE keys (first TEXT PRIMARY KEY, keys TEXT NOT NULL, counts BLOB NOT NULL, names BLOB NOT NULL)
    WITHOUT ROWID;
CREATE TABLE names (id INTEGER PRIMARY KEY, owner INTEGER, text TEXT, words TEXT, folds TEXT, optional TEXT);
CREATE TABLE cards (id INTEGER PRIMARY KEY, name TEXT, source TEXT, entry_id TEXT, entity_number TEXT,
                    type TEXT, programs TEXT, countries TEXT);
"""
# The inverted index's keys, in order, this many to a row (under the chunk's first key): thousands of
# rows to write, not a third of a million (key, name) pairs, and a chunk small enough to decode for
# each key a name is looked up by, in each part. A row holds its keys (no key has a space), how many
# names each has, and their names one key after the other: numbers packed as unsigned 32-bit
# little-endian integers, which a load writes without turning a fifth of a million into text. Only
# numbers and text, never marshal or pickle: a file read back is only ever data, whoever wrote it.
_CHUNK = 32
_UINT32 = next(code for code in "IL" if array(code).itemsize == 4)
# Parts a load prepares at once, a process each: the machines it runs on have two cores or more, and
# each part costs every later `screening check` a chunk more to read a key.
PARTS = 2


def _json_strings(items: tuple[str, ...]) -> str:
    """`json.dumps` of a tuple of strings, without its per-call cost (a hundred thousand calls a load)."""
    return "[" + ",".join(map(encode_basestring_ascii, items)) + "]"


def matcher_fingerprint() -> str:
    """sha256 of the matcher's source and the cache's schema, first 12 hex digits."""
    digest = hashlib.sha256()
    package = resources.files("chipclear.domain.screening")
    for module in _MATCHER_MODULES:
        digest.update((package / module).read_bytes())
    # And the cache's own layout: a file of another layout is not read.
    digest.update(f"{_SCHEMA}{_PART_SCHEMA}{_CHUNK} uint32-le".encode())
    return digest.hexdigest()[:12]


def _packed(numbers: Iterable[int]) -> bytes:
    packed = array(_UINT32, numbers)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpacked(blob: bytes) -> array[int]:
    numbers = array(_UINT32)
    numbers.frombytes(blob)  # ValueError if it is no whole number of them
    if sys.byteorder == "big":
        numbers.byteswap()
    return numbers


def _chunks(keys: dict[str, list[int]]) -> Iterator[tuple[str, str, bytes, bytes]]:
    """The rows of the `keys` table for the inverted index `keys`."""
    order = sorted(keys)
    for start in range(0, len(order), _CHUNK):
        chunk = order[start : start + _CHUNK]
        names = list(map(keys.__getitem__, chunk))
        yield (
            chunk[0],
            " ".join(chunk),
            _packed(map(len, names)),
            _packed(itertools.chain.from_iterable(names)),
        )


def _chunk_read(first: str, keys: str, counts: bytes, names: bytes) -> dict[str, array[int]]:
    """A row of the `keys` table read back: each of its keys' names."""
    words, sizes, numbers = keys.split(" "), _unpacked(counts), _unpacked(names)
    if len(words) != len(sizes) or sum(sizes) != len(numbers):
        raise ValueError(f"screening cache: chunk {first!r} is not a table of keys")
    table: dict[str, array[int]] = {}
    at = 0
    for word, size in zip(words, sizes, strict=True):
        table[word] = numbers[at : at + size]
        at += size
    return table


def _uri(path: Path) -> str:
    """A cache file, read-only and immutable: it is replaced whole, never changed in place."""
    return f"file:{path}?mode=ro&immutable=1"


@dataclass(frozen=True)
class _PartFile:
    """A part of a cached list, as attached: its schema name, and the numbers its first entry and
    first name have in the whole list."""

    schema: str
    first_entry: int
    first_name: int


class DiskTables:
    """The `Tables` of a prepared list, read from its cache files row by row as names need them."""

    def __init__(self, path: Path, info: ScreeningListInfo) -> None:
        self.info = info
        self._db = sqlite3.connect(_uri(path), uri=True, check_same_thread=False)
        try:
            (entries,) = self._db.execute("SELECT value FROM meta WHERE key = 'entries'").fetchone()
            self.entries = int(entries)
            self._parts: list[_PartFile] = []
            for number, file, first_entry, first_name in self._db.execute(
                "SELECT part, file, first_entry, first_name FROM parts ORDER BY part"
            ).fetchall():
                schema = f"part{int(number)}"
                self._db.execute(f"ATTACH DATABASE ? AS {schema}", (_uri(path.with_name(str(file))),))
                self._parts.append(_PartFile(schema, int(first_entry), int(first_name)))
            if not self._parts:
                raise ValueError(f"screening cache {path.name} has no parts")
        except BaseException:  # a part missing, none, a meta table of another shape: nothing kept open
            self._db.close()
            raise
        # A key's chunk in every part, in one statement: the last chunk starting at or before it.
        self._chunk_sql = " UNION ALL ".join(
            f"SELECT * FROM (SELECT {number}, first, keys, counts, names FROM {part.schema}.keys "
            "WHERE first <= ?1 "
            "ORDER BY first DESC LIMIT 1)"
            for number, part in enumerate(self._parts)
        )

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
        chunks: dict[tuple[int, str], dict[str, array[int]]] = {}
        found: set[int] = set()
        for key in keys:
            for number, first, *row in self._db.execute(self._chunk_sql, (key,)).fetchall():
                chunk = chunks.get((number, first))
                if chunk is None:
                    chunk = chunks[number, first] = _chunk_read(first, *row)
                start = self._parts[number].first_name
                found.update(start + name for name in chunk.get(key, ()))
        return found

    def near(self, keys: Iterable[str]) -> set[str]:
        rows = self._rows("SELECT words FROM near WHERE key IN ({})", keys)
        return {word for (words,) in rows for word in str(words).split(" ")}

    def _by_part(
        self, numbers: Iterable[int], first: Callable[[_PartFile], int]
    ) -> Iterator[tuple[_PartFile, list[int]]]:
        """`numbers` (of entries or of names, as `first` says) by part, numbered within the part."""
        numbers = sorted(numbers)
        starts = [first(part) for part in self._parts]
        for part, start, stop in zip(self._parts, starts, [*starts[1:], sys.maxsize], strict=True):
            if within := [number - start for number in numbers if start <= number < stop]:
                yield part, within

    def names(self, numbers: Iterable[int]) -> dict[int, Name]:
        found: dict[int, Name] = {}
        for part, within in self._by_part(numbers, lambda part: part.first_name):
            for id_, owner, text, words, folds, optional in self._rows(
                f"SELECT id, owner, text, words, folds, optional FROM {part.schema}.names WHERE id IN ({{}})",
                within,
            ):
                found[part.first_name + int(str(id_))] = Name(
                    part.first_entry + int(str(owner)),
                    str(text),
                    tuple(str(words).split(" ")),
                    tuple(json.loads(str(folds))),
                    frozenset(str(optional).split()),
                )
        return found

    def cards(self, numbers: Iterable[int]) -> dict[int, Card]:
        found: dict[int, Card] = {}
        for part, within in self._by_part(numbers, lambda part: part.first_entry):
            for row in self._rows(
                "SELECT id, name, source, entry_id, entity_number, type, programs, countries "
                f"FROM {part.schema}.cards WHERE id IN ({{}})",
                within,
            ):
                found[part.first_entry + int(str(row[0]))] = Card(
                    str(row[1]),
                    str(row[2]),
                    None if row[3] is None else str(row[3]),
                    None if row[4] is None else str(row[4]),
                    None if row[5] is None else str(row[5]),
                    tuple(json.loads(str(row[6]))),
                    tuple(json.loads(str(row[7]))),
                )
        return found


@contextlib.contextmanager
def _new_file(path: Path, schema: str) -> Iterator[sqlite3.Connection]:
    """A new SQLite file at `path` with `schema`, in one transaction, committed and closed on leaving,
    removed on an error. Written once and only read after: no journal, no syncs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.executescript(schema)
        db.execute("BEGIN")
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.close()
        path.unlink(missing_ok=True)
        raise
    db.close()


@dataclass(frozen=True)
class PartSummary:
    """What the whole list's file needs of a part: its counts of entries and names, and how many of its
    entries use each word, words in the order the part first uses them."""

    entries: int
    names: int
    word_use: dict[str, int]

    @classmethod
    def of(cls, part: Part) -> PartSummary:
        return cls(len(part.cards), len(part.names), part.word_use)

    def dumps(self) -> str:
        """Three lines: the counts, the words and how many entries use each (no word has a space):
        tens of thousands of them, written and read without a JSON value each."""
        uses = " ".join(map(str, self.word_use.values()))
        return f"{self.entries} {self.names}\n{' '.join(self.word_use)}\n{uses}"

    @classmethod
    def loads(cls, text: str) -> PartSummary:
        counts, words, uses = text.split("\n")
        entries, names = map(int, counts.split())
        return cls(entries, names, dict(zip(words.split(), map(int, uses.split()), strict=True)))


def write_part(path: Path, part: Part) -> None:
    """Write `part` to a file of its own at `path`, for `IndexCache.describe`."""
    with no_collection(), _new_file(path, _PART_SCHEMA) as db:
        db.executemany("INSERT INTO keys VALUES (?, ?, ?, ?)", _chunks(part.keys))
        db.executemany(
            "INSERT INTO names VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    n,
                    name.owner,
                    name.text,
                    " ".join(name.words),
                    _json_strings(name.folds) if name.folds else "[]",  # most names: none
                    " ".join(name.optional) if name.optional else "",
                )
                for n, name in enumerate(part.names)
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
                for n, c in enumerate(part.cards)
            ),
        )


class IndexCache:
    """Prepared lists on disk, one cache per list checksum and matcher version."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, list_: ScreeningListInfo | str) -> Path:
        """The cache of a list (its info, or its checksum): the file naming its parts."""
        sha256 = list_ if isinstance(list_, str) else list_.sha256
        return self.directory / f"screening-{sha256[:24]}-{matcher_fingerprint()}.sqlite"

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

    def part_paths(self, sha256: str, parts: int) -> list[Path]:
        """The names the parts of the list with checksum `sha256`, cut in `parts`, are published under
        (each written first under a `temporary` name of its own). Named for the cache file and the
        cut, not at random: a part's content is all decided by the list and the cut, so the same cache
        written again replaces its parts (a reader that has one open keeps reading the same rows) and
        never leaves another set beside them."""
        path = self.path(sha256)
        return [path.with_name(f"{path.name}.{parts}-{number}") for number in range(parts)]

    def write(self, tables: MemoryTables) -> Path:
        """Write `tables` to the cache (one part), atomically: a concurrent reader sees all or nothing."""
        [path] = self.part_paths(tables.info.sha256, 1)
        written, described = temporary(path), None
        whole = Part(tables.card_list, tables.name_list, tables.keys, tables.word_use)
        write_part(written, whole)
        try:
            described = self.describe(tables.info, [(path, PartSummary.of(whole))])
            return self.publish(tables.info, described, [(written, path)])
        except BaseException:
            for file in (written, described):
                if file is not None:
                    with contextlib.suppress(OSError):
                        file.unlink(missing_ok=True)
            raise

    def describe(self, info: ScreeningListInfo, parts: list[tuple[Path, PartSummary]]) -> Path:
        """The whole list's file for the parts of the list `info` (in order), under a name of its own
        until `publish`: how many entries use each word (their parts' counts added up: no entry is in
        two parts), the rare words' near keys, and each part's file. ValueError if the parts do not
        have the list's entries."""
        word_use: dict[str, int] = {}
        rows: list[tuple[int, str, int, int]] = []
        entries = names = 0
        for number, (file, summary) in enumerate(parts):
            rows.append((number, file.name, entries, names))
            entries, names = entries + summary.entries, names + summary.names
            for word, count in summary.word_use.items():
                word_use[word] = word_use.get(word, 0) + count
        if entries != info.entries:
            raise ValueError(f"the parts have {entries} entries, the list {info.entries}")
        weights = Weights(word_use, entries)
        partial = temporary(self.path(info))
        with no_collection(), _new_file(partial, _SCHEMA) as db:
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("entries", str(entries)), ("info", info.model_dump_json())],
            )
            db.executemany("INSERT INTO words VALUES (?, ?)", word_use.items())
            rare = near_words(word for word in word_use if weights.rare(word))
            db.executemany(
                "INSERT INTO near VALUES (?, ?)", ((key, " ".join(words)) for key, words in rare.items())
            )
            db.executemany("INSERT INTO parts VALUES (?, ?, ?, ?)", rows)
        return partial

    def publish(self, info: ScreeningListInfo, described: Path, parts: list[tuple[Path, Path]]) -> Path:
        """Make the file `describe` wrote the cache of the list `info`, atomically, with its `parts`:
        each written at a temporary name, and moved to the name `part_paths` gave it. The parts of a
        cache of the list cut otherwise before are removed."""
        path = self.path(info)
        for written, part in parts:
            os.replace(written, part)
        os.replace(described, path)
        named = {part.name for _, part in parts}
        stale = re.compile(re.escape(path.name) + r"\.\d+-\d+")
        for file in path.parent.iterdir():
            if stale.fullmatch(file.name) and file.name not in named:
                # A reader that has it open reads on; one that had read the file naming it but not yet
                # opened it finds it missing, and prepares the list again (as for any unreadable cache).
                with contextlib.suppress(OSError):
                    file.unlink(missing_ok=True)
        return path


def temporary(path: Path) -> Path:
    """A name of its own beside `path`, to write what is then moved there: two processes writing the
    same file never write to the same one."""
    return path.with_name(f"{path.name}.{uuid.uuid4().hex[:16]}.tmp")


class CurrentList:
    """Keeps one prepared index per list version: a full list is parsed once, not per request.

    With a `cache`, an index is opened from disk when one was prepared before (by any process), and
    written there when this process prepares it."""

    def __init__(self, store: ListsInForce, cache: IndexCache | None = None) -> None:
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


@dataclass(frozen=True)
class ReadRuns:
    """The list as the children read it, a run of the file's rows each: its entries as the store keeps
    them (`entries_json`), and how many entries and names it has."""

    entries_json: str
    entries: int
    names: int


class Preparing:
    """A list's cache prepared by child processes while this one goes on (storing the list): the file
    cut into as many runs of rows, each child reading, folding and indexing one and writing it as a
    part of the cache. The file is read once, by the children: each first hands back its run's
    entries as the store keeps them (`read`), so this process stores the list without parsing it;
    then a summary of its part (`PartSummary`), so that this process writes the whole list's file
    while the children write their parts; `finish` then only waits for them and publishes."""

    def __init__(self, cache: IndexCache, sha256: str) -> None:
        self.cache, self.sha256 = cache, sha256
        self.children: list[int] = []  # not waited for yet
        self.failed = False
        self.parts: list[Path] = []  # the parts' names once published
        # Where the children write them, and beside each its run's entries and its summary.
        self.written: list[Path] = []
        # A pipe from each child: a byte once its run is read (or could not be), one once summed up.
        self.ready: list[int] = []
        self.runs: ReadRuns | None = None  # once `read`

    @classmethod
    def start(cls, cache: IndexCache, text: str, sha256: str, parts: int = PARTS) -> Preparing | None:
        """Start preparing the list `text` holds (its checksum `sha256`): the children started, or
        None where forking is not safe: no `os.fork`, or another thread runs (a PostgreSQL store's
        pool), whose locks a child could inherit held."""
        if not hasattr(os, "fork") or threading.active_count() > 1:
            return None
        preparing = cls(cache, sha256)
        pieces = split_csl(text, parts)
        preparing.parts = cache.part_paths(sha256, len(pieces))
        preparing.written = [temporary(part) for part in preparing.parts]
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            for path, piece in zip(preparing.written, pieces, strict=True):
                ready, done = os.pipe()
                try:
                    child = os.fork()
                except OSError:
                    os.close(ready)
                    os.close(done)
                    raise
                if child == 0:  # the child writes its part and leaves, running nothing of the parent's
                    os.close(ready)
                    _prepare_part(piece, path, done)
                os.close(done)
                preparing.ready.append(ready)
                preparing.children.append(child)
        except OSError:  # no process to spare: whatever started is stopped, and nothing published
            preparing.stop()
            return None
        return preparing

    def read(self) -> ReadRuns | None:
        """Wait until every child has read its run of rows: the list's entries as stored, with their
        counts; or None if a child could not read its run (the file is no list, or a cut fell inside
        a quoted field after a stray quote): then the whole file must be parsed, which says what is
        wrong with it, if anything, and these children's parts are not the list's."""
        if self.runs is None and not self.failed:
            dumped, entries, names = [], 0, 0
            for ready, path in zip(self.ready, self.written, strict=True):
                if os.read(ready, 1) != _READ:  # b"" if the child died
                    self.failed = True
                    return None
                run = _read_path(path)
                counts, _, text = run.read_text(encoding="utf-8").partition("\n")
                run.unlink()
                dumped.append(text)
                run_entries, run_names = map(int, counts.split())
                entries, names = entries + run_entries, names + run_names
            self.runs = ReadRuns(joined_entries_json(dumped), entries, names)
        return self.runs

    def finish(self, info: ScreeningListInfo) -> bool:
        """Wait for every child, and publish their parts as the cache of `info`, the list as stored:
        True once published, False if a child failed or the parts do not have the list's entries
        (then whoever needs the index prepares it)."""
        assert info.sha256 == self.sha256, "the list prepared is the list stored"
        described = None
        # A cache that cannot be written only costs the next call the time to prepare the list.
        with contextlib.suppress(OSError, sqlite3.Error, ValueError):
            if self.read() is None:  # what each child says first, if not heard yet
                raise OSError("a child could not read its run of rows")
            summaries = [
                self._summary(ready, path) for ready, path in zip(self.ready, self.written, strict=True)
            ]
            self._close_pipes()
            described = self.cache.describe(info, list(zip(self.parts, summaries, strict=True)))
            if self._reaped():
                self.cache.publish(info, described, list(zip(self.written, self.parts, strict=True)))
                self.written = []  # the cache's now
                return True
        if described is not None:
            described.unlink(missing_ok=True)
        self.stop()
        return False

    def stop(self) -> None:
        """Stop every child still working (the list was refused, or is no list), and remove what
        they wrote. Safe to call again, and after `finish`."""
        for child in self.children:  # not waited for yet, so still this process's child
            os.kill(child, signal.SIGKILL)
        self._reaped()
        for path in self.written:
            for file in (path, _read_path(path), _summary_path(path)):
                with contextlib.suppress(OSError):
                    file.unlink(missing_ok=True)
        self._close_pipes()

    def _close_pipes(self) -> None:
        while self.ready:
            os.close(self.ready.pop())

    @staticmethod
    def _summary(ready: int, path: Path) -> PartSummary:
        """The summary of the part at `path`, once its child has written it (OSError if it died first)."""
        if not os.read(ready, 1):
            raise OSError(f"the child writing {path.name} ended before summing it up")
        summary = _summary_path(path)
        text = summary.read_text()
        summary.unlink()
        return PartSummary.loads(text)

    def _reaped(self) -> bool:
        """Wait for the children not waited for yet: True if each child wrote its part."""
        while self.children:
            _, status = os.waitpid(self.children.pop(), 0)
            if os.waitstatus_to_exitcode(status) != 0:
                self.failed = True
        return not self.failed


def _summary_path(part: Path) -> Path:
    return part.with_name(f"{part.name}.summary")


def _read_path(part: Path) -> Path:
    return part.with_name(f"{part.name}.entries")


# What a child says on its pipe once its run is read, or that it could not read it.
_READ, _UNREADABLE = b"r", b"!"


def _prepare_part(piece: str, path: Path, done: int) -> NoReturn:
    """In a child: read `piece` (a CSV text) and leave its entries as stored beside `path`, fold and
    index them and leave the part's summary, saying each on the pipe `done` once written; write the
    part at `path`, and leave (exit status 0 if all was written; else the traceback on stderr, the one
    trace of what went wrong). A run that is no CSL leaves quietly: the parent parses the whole file
    and says why."""
    code = 1
    gc.disable()  # it makes no cycle, and leaves without freeing what it made
    try:
        try:
            entries = read_entries(piece)
        except ScreeningListError:
            os.write(done, _UNREADABLE)
            os._exit(2)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Each written whole before the byte on the pipe says so: read only after that byte.
        _read_path(path).write_text(f"{len(entries)} {names_in(entries)}\n{entries_json(entries)}", "utf-8")
        os.write(done, _READ)
        part = fold_part(entries)
        _summary_path(path).write_text(PartSummary.of(part).dumps())
        os.write(done, b".")
        write_part(path, part)
        code = 0
    except BaseException:
        with contextlib.suppress(BaseException):
            print(f"chipclear: preparing the screening cache's part {path.name} failed:", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
    finally:
        os._exit(code)
