"""`chipclear screening load` and `check` with the real Consolidated Screening List: the load prepares
the index once (cached under $CHIPCLEAR_HOME/cache), and every `check` after it answers from the
cache with the words and folds that carried each hit. No Temporal server: lists live in the store.

One full load (about ten seconds on a busy 2-core machine) and three checks.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from chipclear.domain.screening.csl import read_entries
from chipclear.store.screening_tables import entries_json
from tests import keys
from tests.cli.test_cli import Result, as_json, chipclear, flat, hermetic_env, ok, refused, show
from tests.store.test_screening_cache import UNREADABLE_RUNS, mixed_text

CSL = Path(__file__).resolve().parents[1] / "data" / "csl-2026-07-31.csv.xz"
# `chipclear` as its console script runs it, saying on stderr each time it forks (an audit hook).
FORKING = """
import sys
sys.addaudithook(lambda event, _: event == "os.fork" and print("audit: os.fork", file=sys.stderr, flush=True))
sys.argv[0] = "chipclear"
from chipclear.cli.main import main
main()
"""


# What a child started by `screening load` meets when its disk is full as it writes its part.
CHILD_CANNOT_WRITE = """
import os
import chipclear.store.screening as screening

parent, write = os.getpid(), screening.write_part

def broken(path, part):
    if os.getpid() == parent:  # this process may still write the cache
        return write(path, part)
    raise OSError("no space left on device")

screening.write_part = broken
"""


def forking(env: dict[str, str], *args: str | Path, before: str = "") -> tuple[Result, int]:
    """A `chipclear` call (after the code `before`), and how many child processes it started."""
    result = subprocess.run(
        [sys.executable, "-c", before + FORKING, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, result.stderr.count("audit: os.fork")


def cache_state(env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """The files of the home's cache, each with its inode and mtime: what a load that writes nothing
    leaves exactly as it was."""
    cache = Path(env["CHIPCLEAR_HOME"]) / "cache"
    return {file.name: (file.stat().st_ino, file.stat().st_mtime_ns) for file in cache.iterdir()}


@pytest.fixture(scope="module")
def loaded_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("screening") / "home"
    keys.install(home)
    env = hermetic_env(CHIPCLEAR_HOME=str(home))
    csv_file = home.parent / "consolidated.csv"
    with lzma.open(CSL, "rt", encoding="utf-8") as packed:
        csv_file.write_text(packed.read(), encoding="utf-8")
    run, forks = forking(env, "screening", "load", csv_file, "--actor", "alice", "--json")
    loaded = as_json(run)
    assert loaded["loaded"] is True and loaded["entries"] == 25_921
    assert forks == 2, show(run)  # a child for each part of the cache
    return env


def test_the_load_prepares_the_index_for_every_later_check(loaded_home: dict[str, str]) -> None:
    cache = Path(loaded_home["CHIPCLEAR_HOME"]) / "cache"
    [cached] = list(cache.glob("screening-*.sqlite"))
    # Prepared by two processes, a part of the list each (the whole list's entries between them).
    with closing(sqlite3.connect(cached)) as db:
        parts = db.execute("SELECT file, first_entry FROM parts ORDER BY part").fetchall()
    assert len(parts) == 2 and parts[0][1] == 0 and 0 < parts[1][1] < 25_921
    assert sorted(cache.iterdir()) == sorted([cached, *(cache / file for file, _ in parts)])


def test_the_list_is_stored_as_the_file_reads(loaded_home: dict[str, str]) -> None:
    """Read by the children, a run of rows each, the list is stored exactly as the whole file parsed
    here dumps it, and its ScreeningListLoaded hashes those bytes."""
    home = Path(loaded_home["CHIPCLEAR_HOME"])
    text = (home.parent / "consolidated.csv").read_text(encoding="utf-8")
    with closing(sqlite3.connect(home / "events.db")) as db:
        [(data, entries, names)] = db.execute("SELECT data, entries, names FROM screening_lists").fetchall()
    parsed = read_entries(text)
    assert data == entries_json(parsed) and entries == len(parsed) == 25_921 and names == 57_167
    [event] = as_json(chipclear(loaded_home, "events", "screening-lists", "--json"))
    assert event["data"]["entries_sha256"] == hashlib.sha256(data.encode()).hexdigest()


def test_a_bad_file_read_by_the_children_loads_nothing(loaded_home: dict[str, str], tmp_path: Path) -> None:
    """The children read the file and find it no list: the load parses it whole and says where (exit 2),
    and leaves the list in force and the cache as they were."""
    before = cache_state(loaded_home)
    bad = tmp_path / "bad.csv"
    bad.write_text(UNREADABLE_RUNS["no-name"], encoding="utf-8")
    run, forks = forking(loaded_home, "screening", "load", bad, "--actor", "alice")
    refused(run, f"{bad}: row 32, column name: must not be empty", code=2)
    assert forks == 2 and cache_state(loaded_home) == before
    [version] = as_json(chipclear(loaded_home, "screening", "versions", "--json"))
    assert version["entries"] == 25_921


def test_a_file_only_read_whole_is_loaded_and_prepared(tmp_path: Path) -> None:
    """A stray quote puts the children's cut inside a quoted field: their runs are refused, the file
    read whole is a list, and the load stores it and prepares its index itself."""
    home = tmp_path / "home"
    keys.install(home)
    env = hermetic_env(CHIPCLEAR_HOME=str(home))
    stray = tmp_path / "stray.csv"
    stray.write_text(UNREADABLE_RUNS["stray-quote"], encoding="utf-8")
    run, forks = forking(env, "screening", "load", stray, "--actor", "alice", "--json")
    assert as_json(run)["entries"] == 40 and forks == 2, show(run)
    [cached] = list((home / "cache").glob("screening-*.sqlite"))
    with closing(sqlite3.connect(cached)) as db:
        assert db.execute("SELECT count(*) FROM parts").fetchone() == (1,)  # prepared in one process
    found = as_json(chipclear(env, "screening", "check", "Acme1 Quantum", "--json"))
    assert [match["entry_id"] for match in found["matches"]] == ["x1"]


def test_a_load_whose_children_fail_prepares_the_index_itself(tmp_path: Path) -> None:
    """The children read the list, then cannot write their parts: the list is stored as they read it,
    and the load prepares its index itself (each child's traceback on stderr, the trace of why)."""
    home = tmp_path / "home"
    keys.install(home)
    env = hermetic_env(CHIPCLEAR_HOME=str(home))
    listed = tmp_path / "list.csv"
    listed.write_text(mixed_text(), encoding="utf-8")
    run, forks = forking(
        env, "screening", "load", listed, "--actor", "alice", "--json", before=CHILD_CANNOT_WRITE
    )
    # The children's tracebacks, the one trace of why they failed: no other.
    assert run.returncode == 0 and json.loads(run.stdout)["loaded"] is True and forks == 2, show(run)
    assert run.stderr.count("Traceback") == run.stderr.count("OSError: no space left on device") == 2, show(
        run
    )
    [cached] = list((home / "cache").glob("screening-*.sqlite"))
    with closing(sqlite3.connect(cached)) as db:
        assert db.execute("SELECT count(*) FROM parts").fetchone() == (1,)  # prepared in one process
    found = as_json(chipclear(env, "screening", "check", "Sunway Microelectronics", "--json"))
    assert {match["entry_name"] for match in found["matches"]} == {"Sunway Microelectronics"}


def test_loading_the_same_list_again_prepares_nothing(loaded_home: dict[str, str]) -> None:
    """The list in force loaded again: unchanged, and its cache (written by the first load) neither
    prepared again by children nor rewritten."""
    before = cache_state(loaded_home)
    csv_file = Path(loaded_home["CHIPCLEAR_HOME"]).parent / "consolidated.csv"
    run, forks = forking(loaded_home, "screening", "load", csv_file, "--actor", "alice", "--json")
    assert as_json(run)["loaded"] is False and forks == 0, show(run)
    assert cache_state(loaded_home) == before and len(before) == 3  # the cache file and its two parts


def test_a_load_that_will_be_refused_prepares_nothing(loaded_home: dict[str, str]) -> None:
    """A list no cache holds yet, loaded by a reviewer of another gate: refused, and no child started
    to prepare it."""
    before = cache_state(loaded_home)
    csv_file = Path(loaded_home["CHIPCLEAR_HOME"]).parent / "consolidated.csv"
    shorter = csv_file.with_name("shorter.csv")
    shorter.write_text(csv_file.read_text(encoding="utf-8").rstrip("\n").rpartition("\n")[0] + "\n")
    run, forks = forking(loaded_home, "screening", "load", shorter, "--actor", "wang")
    refused(run, "'wang' may not load screening lists", "us-export")
    assert forks == 0 and cache_state(loaded_home) == before


def test_check_explains_each_hit(loaded_home: dict[str, str]) -> None:
    names = ("Hu\u0430wei Technologies", "中科曙光", "Baidu Technology Co., Ltd.", "Sug\u200bon")
    found = as_json(chipclear(loaded_home, "screening", "check", *names, "--json"))
    assert found["list_version"].startswith("csl-") and found["threshold"] == 90
    by_name: dict[str, list[dict[str, object]]] = {}
    for match in found["matches"]:
        by_name.setdefault(match["party_name"], []).append(match)
    huawei = next(m for m in by_name[names[0]] if m["entry_id"] == "csl-snapshot-03334")
    assert huawei["tokens"] == ["huawei", "technology"] and huawei["score"] == 100
    assert huawei["folds"] == ["homoglyph: Cyrillic '\u0430' read as 'a'"]
    [sugon] = by_name[names[1]]
    assert (sugon["entry_name"], sugon["matched_name"]) == ("Sugon", "Zhongke Shuguang")
    assert sugon["folds"] == ["pinyin of 中科曙光"]
    assert names[2] not in by_name  # "TECHNOLOGY LLC" is one generic word: no hit
    assert {m["entry_id"] for m in by_name[names[3]]} == {"csl-snapshot-00063", "csl-snapshot-05699"}
    assert found["parties"][3] == {"name": names[3], "suspicious": ["zero-width U+200B removed"]}


def test_check_in_a_table(loaded_home: dict[str, str]) -> None:
    table = ok(chipclear(loaded_home, "screening", "check", "Sug\u200bon", "Moonshot AI"))
    text = flat(table.stdout)
    assert "suspicious: Sug\\u200bon: zero-width U+200B removed" in text, show(table)
    assert "2 match(es): Sug\\u200bon" in text, show(table)
    assert "why" in text and "on sugon;" in text, show(table)  # the why column, wrapped in its cell
    assert "clear: Moonshot AI" in text, show(table)


def test_a_country_that_is_no_code_is_bad_input(loaded_home: dict[str, str]) -> None:
    refused(chipclear(loaded_home, "screening", "check", "Sugon", "--country", "China"), "--country", code=2)
    elsewhere = as_json(
        chipclear(
            loaded_home, "screening", "check", "Huawei Technologies Costa Rica", "--country", "CN", "--json"
        )
    )
    # Its exact name scores 100 where the party's country is not known; listed in CR only, 3% lower.
    [costa_rica] = [m for m in elsewhere["matches"] if m["entry_name"] == "Huawei Technologies Costa Rica SA"]
    assert costa_rica["score"] == 97.0
    assert "listed in CR, party in CN" in costa_rica["folds"]
