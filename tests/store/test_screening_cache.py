"""The prepared index on disk: a list prepared in parts, each run of the file's rows read, folded and
indexed in a process of its own (as `screening load` does), is cached as exactly the tables of the
whole list prepared at once, and answers alike.

No event store: the cache is derived from the list's file alone.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from importlib import resources
from pathlib import Path

import pytest

from chipclear.domain.screening import (
    SAMPLE_LIST,
    ScreenedParty,
    ScreeningEntry,
    ScreeningList,
    ScreeningListError,
    parse_csl,
)
from chipclear.domain.screening.csl import checksum, read_entries, split_csl
from chipclear.domain.screening.index import MemoryTables, ScreeningIndex, fold_part, near_words
from chipclear.store.screening import DiskTables, IndexCache, PartSummary, temporary, write_part
from tests.domain.test_screening import ACME_ROWS, EL, LOADED_AT, SDN, csl_text


def mixed_text() -> str:
    """The bundled sample (Chinese script, brackets, aliases) and more: names repeated across
    entries, words shared by entries far apart, vessels (never indexed), quoted line breaks and
    quotes, blank lines, an entry of one name."""
    sample = (resources.files("chipclear") / "data" / SAMPLE_LIST).read_text(encoding="utf-8")
    more = csl_text(
        {"source": EL, "name": "Sunway Microelectronics", "alt_names": "Sun Way Micro Electronics"},
        {"source": SDN, "name": "HORIZON", "type": "Vessel", "alt_names": "Horizon Star"},
        *ACME_ROWS,
        {"source": EL, "name": 'Horizon "Quantum" Trading (Shenzhen) Co., Ltd. (HQT)'},
        {"source": SDN, "name": "Zhong Ke Shu Guang", "addresses": "1 Road,\nHefei\n\nCN; 2 Street, CN"},
        {"source": EL, "name": "Dawning Information Industry", "alt_names": 'Sugon; "Dawning"'},
    )
    header, _, rows = more.partition("\n")
    assert sample.startswith(header)  # one header for both
    return sample + "\n" + rows + "\n" + sample.partition("\n")[2]


def mixed_list() -> ScreeningList:
    return parse_csl(mixed_text(), source="mixed", loaded_at=LOADED_AT)


def in_parts(cache: IndexCache, text: str, parts: int) -> tuple[Path, int]:
    """What `Preparing` does, one part after the other in this process: the cache and its parts."""
    pieces = split_csl(text, parts)
    paths = cache.part_paths(checksum(text), len(pieces))
    summaries, written = [], []
    for path, piece in zip(paths, pieces, strict=True):
        part = fold_part(read_entries(piece))
        summaries.append(PartSummary.loads(PartSummary.of(part).dumps()))  # as a child leaves it
        written.append((temporary(path), path))
        write_part(written[-1][0], part)
    info = parse_csl(text, source="mixed", loaded_at=LOADED_AT).info
    described = cache.describe(info, list(zip(paths, summaries, strict=True)))
    return cache.publish(info, described, written), len(pieces)


def parts_named(path: Path) -> list[Path]:
    """The part files the cache file at `path` names."""
    with closing(sqlite3.connect(path)) as db:
        return [path.with_name(file) for (file,) in db.execute("SELECT file FROM parts ORDER BY part")]


def same_tables(disk: DiskTables, memory: MemoryTables) -> None:
    assert disk.entries == memory.entries
    assert disk.names(range(len(memory.name_list) + 3)) == dict(enumerate(memory.name_list))
    assert disk.cards(range(memory.entries + 3)) == dict(enumerate(memory.card_list))
    for key, names in memory.keys.items():
        assert disk.names_for([key]) == set(names), key
    assert disk.names_for(["nosuchword", "aaa", "zzzz"]) == set()
    assert disk.using([*memory.word_use, "nosuchword"]) == memory.word_use
    # Every near key of every word, rare or not: only the rare words are filed.
    for key in near_words(memory.word_use):
        assert disk.near([key]) == memory.near([key]), key
    assert disk.near(memory.near_words) == {word for words in memory.near_words.values() for word in words}


def cache_files(directory: Path) -> list[Path]:
    """The cache files in `directory` (a temporary file left over would be among them)."""
    return sorted(directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_a_list_prepared_in_parts_is_cached_as_the_whole_list(tmp_path: Path, parts: int) -> None:
    screening_list = mixed_list()
    memory = MemoryTables(screening_list)
    path, written = in_parts(IndexCache(tmp_path), mixed_text(), parts)
    assert written == parts
    named = parts_named(path)
    assert len(named) == parts and cache_files(tmp_path) == sorted([path, *named])
    disk = DiskTables(path, screening_list.info)
    same_tables(disk, memory)
    whole, cached = ScreeningIndex(memory), ScreeningIndex(disk)
    for name in (
        "Sunway",
        "Sun Way Microelectronics",
        "中科曙光",
        "Acme Quantum",
        "HQT",
        "Horizon Star",
        "Huawei",
    ):
        party = ScreenedParty(role="buyer", name=name)
        assert cached.match(party, 80) == whole.match(party, 80), name


def test_the_whole_list_written_at_once_reads_the_same(tmp_path: Path) -> None:
    screening_list = mixed_list()
    memory = MemoryTables(screening_list)
    same_tables(DiskTables(IndexCache(tmp_path).write(memory), screening_list.info), memory)


def test_a_part_summed_up_reads_back_as_it_was() -> None:
    vessels = fold_part(read_entries(csl_text({"source": SDN, "name": "HORIZON", "type": "Vessel"})))
    assert vessels.word_use == {}  # no name indexed
    for part in (vessels, fold_part(mixed_list().entries)):
        summary = PartSummary.of(part)
        assert PartSummary.loads(summary.dumps()) == summary


def test_parts_that_miss_entries_are_not_published(tmp_path: Path) -> None:
    cache = IndexCache(tmp_path)
    first, _ = split_csl(mixed_text(), 2)
    part = fold_part(read_entries(first))
    with pytest.raises(ValueError, match="the parts have"):  # the first run twice
        cache.describe(mixed_list().info, [(path, PartSummary.of(part)) for path in cache.part_paths("0", 2)])


def test_a_cache_written_again_leaves_one_set_of_parts(tmp_path: Path) -> None:
    """The same list written twice, then in two parts (as a load writes it), then whole again: each
    time the cache file and the parts it names, and nothing else."""
    screening_list = mixed_list()
    memory = MemoryTables(screening_list)
    cache = IndexCache(tmp_path)
    first = cache.write(memory)
    assert cache.write(memory) == first
    assert cache_files(tmp_path) == sorted([first, *parts_named(first)]) and len(parts_named(first)) == 1
    path, _ = in_parts(cache, mixed_text(), 2)
    assert path == first and len(parts_named(path)) == 2
    assert cache_files(tmp_path) == sorted([path, *parts_named(path)])
    same_tables(DiskTables(path, screening_list.info), memory)
    cache.write(memory)
    assert cache_files(tmp_path) == sorted([path, *parts_named(path)]) and len(parts_named(path)) == 1
    same_tables(DiskTables(path, screening_list.info), memory)


def test_a_cache_that_cannot_be_described_leaves_nothing(tmp_path: Path) -> None:
    memory = MemoryTables(mixed_list())
    memory.info = memory.info.model_copy(update={"entries": memory.entries + 1})  # what no part has
    with pytest.raises(ValueError, match="the parts have"):
        IndexCache(tmp_path).write(memory)
    assert cache_files(tmp_path) == []  # the part written first is gone


def open_files(path: Path) -> list[str]:
    """What this process has open at `path`."""
    fds = Path("/proc/self/fd")
    return [fd.name for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve())]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_cache_that_cannot_be_opened_is_closed(tmp_path: Path) -> None:
    screening_list = mixed_list()
    cache = IndexCache(tmp_path)
    path = cache.write(MemoryTables(screening_list))
    [part] = parts_named(path)
    part.unlink()
    with pytest.raises(sqlite3.OperationalError) as raised:  # kept: its frames would hold the tables
        DiskTables(path, screening_list.info)
    assert raised.value is not None and open_files(path) == []
    assert cache.open(screening_list.info) is None


@pytest.mark.parametrize("parts", range(1, 9))
def test_a_file_cut_in_runs_of_rows_reads_as_the_whole(parts: int) -> None:
    text = "\ufeff" + mixed_text()
    pieces = split_csl(text, parts)
    assert 1 < len(pieces) <= parts or parts == 1
    assert [entry for piece in pieces for entry in read_entries(piece)] == read_entries(text)
    lengths = [len(piece) for piece in pieces]
    assert max(lengths) < 2 * min(lengths) or parts > 4  # about even, as rows allow


def test_a_stray_quote_never_makes_other_entries() -> None:
    """A quote inside an unquoted field is read as it is, and throws the count of quotes off: a cut can
    then fall inside a quoted field, and the run before it is refused, never read otherwise."""
    rows = [f'x{n},{EL},Acme{n} "Quantum,\n' if n == 1 else f'x{n},{EL},"Name\n{n}",\n' for n in range(40)]
    text = "_id,source,name,alt_names\n" + "".join(rows)
    whole = read_entries(text)

    def read_in_runs(parts: int) -> list[ScreeningEntry] | str:
        try:
            return [entry for piece in split_csl(text, parts) for entry in read_entries(piece)]
        except ScreeningListError as exc:
            return str(exc)

    read = {parts: read_in_runs(parts) for parts in range(2, 9)}
    refused = {parts: how for parts, how in read.items() if isinstance(how, str)}
    assert refused, "no cut fell inside a quoted field: the test shows nothing"
    assert all("not valid CSV (unexpected end of data)" in how for how in refused.values()), refused
    assert all(entries == whole for parts, entries in read.items() if parts not in refused)


PREPARE = """
import json, sys
from pathlib import Path
from chipclear.domain.screening import parse_csl
from chipclear.domain.screening.csl import checksum
from chipclear.domain.screening.csl import read_entries
from chipclear.store.screening import IndexCache, Preparing
from chipclear.store.screening_tables import entries_json

text = Path(sys.argv[1]).read_text()
cache = IndexCache(Path(sys.argv[2]))
how = sys.argv[3]
if how == "unreadable":  # a run of rows no CSL: the children say so, and prepare nothing
    preparing = Preparing.start(cache, text, checksum(text))
    print(json.dumps({"read": preparing.read() is not None}))
    preparing.stop()
    sys.exit()
info = parse_csl(text, source="mixed", loaded_at=None).info
if how == "break":  # the second part cannot be written: its child fails
    import chipclear.store.screening as screening

    def broken(path, part, write=screening.write_part):
        write(path, part)
        if ".2-1." in path.name:
            raise OSError("no space left on device")

    screening.write_part = broken
if how == "short":  # the parts do not have the list's entries
    info = info.model_copy(update={"entries": info.entries + 1})
if how == "no-fork":  # the second child cannot be started
    import os

    fds, forked, fork = len(os.listdir("/proc/self/fd")), [], os.fork

    def fork_once():
        forked.append(1)
        if len(forked) > 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return fork()

    os.fork = fork_once
    preparing = Preparing.start(cache, text, checksum(text))
    print(json.dumps({"started": preparing is not None, "leaked": len(os.listdir("/proc/self/fd")) - fds}))
    sys.exit()
for _ in range(2 if how == "twice" else 1):  # the same list prepared again: its parts replaced
    preparing = Preparing.start(cache, text, checksum(text))
    assert preparing is not None
    children = len(preparing.children)
    if how == "stop":  # the list is refused while the children work
        preparing.stop()
        finished = None
    elif how == "read":  # what the children read of the list first, as the store keeps it
        read = preparing.read()
        assert read is not None and preparing.read() is read  # once
        assert read.entries_json == entries_json(read_entries(text))
        assert (read.entries, read.names) == (info.entries, info.names)
        finished = preparing.finish(info)
    else:
        finished = preparing.finish(info)  # which waits for the children's reads first
    preparing.stop()  # again, and after finishing: nothing changes
print(json.dumps({"children": children, "finished": finished}))
"""


def prepare_in_children(
    tmp_path: Path, how: str, *, fails: bool = False, text: str | None = None
) -> dict[str, object]:
    """`Preparing` in a process of its own (this one may run threads, where it would not fork), of
    `text` (else `mixed_text()`). Nothing on stderr, unless a child `fails`: then its traceback."""
    listed = tmp_path / "list.csv"
    listed.write_text(mixed_text() if text is None else text)
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PREPARE), str(listed), str(tmp_path / "cache"), how],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    if fails:  # the one trace a child leaves of what went wrong
        assert run.stderr.startswith("chipclear: preparing the screening cache's part screening-"), run.stderr
        assert "Traceback" in run.stderr and "OSError: no space left on device" in run.stderr, run.stderr
    else:
        assert not run.stderr, run.stderr
    result: dict[str, object] = json.loads(run.stdout)
    return result


@pytest.mark.parametrize("how", ["fine", "twice", "read"])
def test_child_processes_prepare_the_cache_a_part_each(tmp_path: Path, how: str) -> None:
    assert prepare_in_children(tmp_path, how) == {"children": 2, "finished": True}
    screening_list = parse_csl(mixed_text(), source="mixed", loaded_at=None)
    path = IndexCache(tmp_path / "cache").path(screening_list.info)
    assert path.is_file() and len(parts_named(path)) == 2
    assert cache_files(tmp_path / "cache") == sorted([path, *parts_named(path)])  # nothing else
    same_tables(DiskTables(path, screening_list.info), MemoryTables(screening_list))


# A list whose second run of rows has an entry without a name; one whose cut falls inside a quoted
# field after a stray quote (the whole file reads, its first run does not: `split_csl`).
UNREADABLE_RUNS = {
    "no-name": csl_text(*({"source": EL, "name": f"Name {n}" if n != 30 else ""} for n in range(40))),
    "stray-quote": "_id,source,name,alt_names\n"
    + "".join(f'x{n},{EL},Acme{n} "Quantum,\n' if n == 1 else f'x{n},{EL},"Name\n{n}",\n' for n in range(40)),
}


@pytest.mark.parametrize("text", UNREADABLE_RUNS.values(), ids=UNREADABLE_RUNS)
def test_a_run_the_children_cannot_read_prepares_nothing(tmp_path: Path, text: str) -> None:
    """Nothing on stderr: the caller parses the whole file and says what is wrong, if anything."""
    assert prepare_in_children(tmp_path, "unreadable", text=text) == {"read": False}
    assert cache_files(tmp_path / "cache") == []
    if text == UNREADABLE_RUNS["stray-quote"]:
        assert len(read_entries(text)) == 40  # the file itself is a list


def test_a_failed_child_leaves_no_cache_and_no_part(tmp_path: Path) -> None:
    assert prepare_in_children(tmp_path, "break", fails=True) == {"children": 2, "finished": False}
    assert cache_files(tmp_path / "cache") == []


def test_parts_without_the_lists_entries_leave_no_cache_and_no_part(tmp_path: Path) -> None:
    assert prepare_in_children(tmp_path, "short") == {"children": 2, "finished": False}
    assert cache_files(tmp_path / "cache") == []


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_child_that_cannot_be_started_leaves_no_pipe_open(tmp_path: Path) -> None:
    assert prepare_in_children(tmp_path, "no-fork") == {"started": False, "leaked": 0}
    assert cache_files(tmp_path / "cache") == []


def test_stopped_children_leave_nothing(tmp_path: Path) -> None:
    assert prepare_in_children(tmp_path, "stop") == {"children": 2, "finished": None}
    assert cache_files(tmp_path / "cache") == []
