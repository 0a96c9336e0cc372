"""`chipclear screening …`: load restricted-party lists and check names against the one in force."""

from __future__ import annotations

import gc
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from chipclear.cli import output, rescreening
from chipclear.cli.common import (
    Act,
    JsonOption,
    acts,
    fail,
    handles_errors,
    run,
    settings,
    store,
)
from chipclear.cli.files import InvalidInput, read_text
from chipclear.domain.limits import cut
from chipclear.domain.policy import Policy, load_policy
from chipclear.domain.screening import (
    DumpedList,
    ScreenedParty,
    ScreeningIndex,
    ScreeningList,
    ScreeningListError,
    parse_csl,
)
from chipclear.domain.screening.csl import checksum, list_info, read_entries
from chipclear.domain.screening.index import MemoryTables, no_collection
from chipclear.domain.screening_act import SCREENING_GATE, SCREENING_STREAM, LoadScreeningList, require_loader
from chipclear.domain.sections import US_EXPORT, UsExportSection
from chipclear.domain.signing import signed
from chipclear.store.screening import CurrentList, IndexCache, Preparing
from chipclear.store.screening_tables import (
    LOADED_FIELDS,
    ListsInForce,
    ScreeningListUnavailable,
    list_in_force,
)

if TYPE_CHECKING:
    from chipclear.store.protocol import EventStore

# A party's name in a request is at most this long (chipclear.domain.models.NonEmpty).
MAX_NAME = 200

screening_app = typer.Typer(
    help="Restricted-party screening lists (US Consolidated Screening List CSV format).",
    no_args_is_help=True,
)


@screening_app.command("load")
@handles_errors
@acts
def load(
    act: Act,
    file: Annotated[Path, typer.Argument(help="A CSL CSV file, e.g. consolidated.csv from trade.gov.")],
    source: Annotated[str | None, typer.Option(help="Where the file came from. Default: its name.")] = None,
    replace_smaller: Annotated[
        bool,
        typer.Option(
            "--replace-smaller",
            help="Load FILE even though it has fewer than half the entries of the list in force.",
        ),
    ] = False,
) -> None:
    """Make FILE the list every later screening uses; a bad file loads nothing (exit 2), nor does a list
    far smaller than the one in force unless --replace-smaller is given (exit 1).

    A signed act of an us-export reviewer, sealed with the recorder key like every stored event: run
    it where the recorder key is (a worker's host, or a dev home)."""
    try:
        _load(file, source, replace_smaller, act)
    finally:
        gc.unfreeze()  # the list `_load` kept out of the collector's passes


def _load(file: Path, source: str | None, replace_smaller: bool, act: Act) -> None:
    text = read_text(file)
    sha256 = checksum(text)
    loader = act.actor
    current = settings()
    policy = load_policy(current.policy, home=current.home)
    # The index is prepared for the next `screening check` (its cache written) by child processes, a
    # run of the file's rows each, which also read the list for this one to check and store: unless
    # it is prepared already (this list was loaded before), or the act will be refused (checked in
    # full once the file is read: the loader is no reviewer of the screening gate).
    cache = cache_of_home()
    cached = cache.path(sha256).is_file()
    preparing = None
    if not cached and policy.may_decide(loader, SCREENING_GATE):
        preparing = Preparing.start(cache, text, sha256)
    try:
        if preparing is not None:
            _import_for_storing()  # while the children read the file: it would wait for them
        listed = _read(file, text, sha256, source or file.name, preparing)
        if isinstance(listed, ScreeningList) and preparing is not None:
            preparing.stop()  # the file read whole after all: the children's parts are not its list
            preparing = None
        events = store(create=True)
        loaded = _store(events, file, listed, replace_smaller, act, policy)
        prepared = cached
        if loaded and preparing is not None:
            prepared = preparing.finish(listed.info)
    finally:
        if preparing is not None:
            preparing.stop()  # what did not finish: a refused or unchanged list, a bad file
    info = listed.info
    if loaded and not prepared:
        current_list(events).prepare(_with_entries(listed, text))
    if act.json:
        output.print_json({**info.model_dump(mode="json"), "loaded": loaded})
    elif loaded:
        output.console.print(
            f"loaded [bold]{info.version}[/]: {info.entries} entries, {info.names} names from {file}"
        )
    else:
        output.console.print(
            f"[yellow]unchanged:[/] the list in force already has checksum {info.sha256[:12]}; nothing loaded"
        )
    if loaded:
        _rescreen_after_load(info.version, quiet=act.json)


def _read(
    file: Path, text: str, sha256: str, source: str, preparing: Preparing | None
) -> ScreeningList | DumpedList:
    """The list in `text` as the children `preparing` its index read it, a run of rows each (its
    entries dumped as the store keeps them); else parsed here, whole (bad input: exit 2)."""
    loaded_at = datetime.now(UTC)
    read = preparing.read() if preparing is not None else None
    if read is not None:
        info = list_info(sha256, source=source, loaded_at=loaded_at, entries=read.entries, names=read.names)
        return DumpedList(info, read.entries_json)
    with no_collection():
        try:
            parsed = parse_csl(text, source=source, loaded_at=loaded_at, sha256=sha256)
        except ScreeningListError as exc:
            raise InvalidInput(f"{file}: {exc}") from None
        # The list stays until the command ends: kept out of the collector's passes, none walks it.
        gc.freeze()
    return parsed


def _with_entries(listed: ScreeningList | DumpedList, text: str) -> ScreeningList:
    """`listed` with its entries, for this process to prepare its index: read from `text` (the file
    the children read) if they did not prepare it after all (a child failed)."""
    if isinstance(listed, ScreeningList):
        return listed
    with no_collection():
        return ScreeningList(info=listed.info, entries=read_entries(text))


def _store(
    events: EventStore,
    file: Path,
    parsed: ScreeningList | DumpedList,
    replace_smaller: bool,
    by: Act,
    policy: Policy,
) -> bool:
    """Store `parsed` as the list in force, by the act of `by.actor` signed with their key: False if it
    is already in force, exit 1 if the act is refused (by `policy`) or the list too small."""
    info = parsed.info
    # The list in force as its newest ScreeningListLoaded records it (readable even if its row is gone).
    in_force = next(iter(events.screening_list_versions()), None)
    if in_force is not None and shrinks(in_force.entries, info.entries) and not replace_smaller:
        fail(
            f"{file} has {info.entries} {plural(info.entries, 'entry', 'entries')} where the list in force "
            f"({in_force.version}) has {in_force.entries}, so nothing was loaded: check the file, and give "
            "--replace-smaller if the list really shrank",
            1,
        )
    stream_version = len(events.read_stream(SCREENING_STREAM))
    load = LoadScreeningList(**info.model_dump(include=LOADED_FIELDS), actor=by.actor)
    load = signed(load, SCREENING_STREAM, stream_version, by.key(by.actor))
    require_loader(policy, load, stream_version)  # refused: exit 1, nothing loaded
    with no_collection():  # tens of thousands of entries written out, none in a cycle
        return events.save_screening_list(parsed, by=load)


def _import_for_storing() -> None:
    """Import what storing the list and starting the re-screening need (the store, which imports the
    domain's events, and Temporal's client: about a second of CPU): the load does it while its children
    read the file, rather than wait for them and then import."""
    import chipclear.client
    import chipclear.store.factory
    import chipclear.temporal  # noqa: F401


def _rescreen_after_load(list_version: str, *, quiet: bool) -> None:
    """A new list re-screens every live request and licence (a workflow, chipclear/cli/rescreening.py).
    With no Temporal server to start it on, the list stays loaded and the user is told how to start it."""
    from chipclear.cli.rescreening import start_and_report
    from chipclear.temporal import ServerUnavailable

    try:
        run(start_and_report(list_version, wait=False, json_=False, quiet=quiet))
    except ServerUnavailable as exc:
        if not quiet:
            output.console.print(
                f"[yellow]re-screening not started[/] ({exc}); run `chipclear screening rescreen` once the "
                "server is up",
                highlight=False,
            )


def shrinks(in_force: int, loading: int) -> bool:
    """A truncated download or the wrong file: fewer than half the entries, or one where there were more.
    Loading it would quietly clear everyone the missing entries hold."""
    return loading * 2 < in_force or (loading == 1 < in_force)


def plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


@screening_app.command("check")
@handles_errors
def check(
    names: Annotated[list[str], typer.Argument(help="One or more party names.")],
    threshold: Annotated[
        float | None,
        typer.Option(min=0, max=100, help="Match score 0-100. Default: the policy's screening_threshold."),
    ] = None,
    country: Annotated[
        str | None,
        typer.Option(
            help="The parties' country (ISO 3166-1 alpha-2): entries listed only elsewhere score lower."
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Show what the list in force matches for each name, as a request's screening would, and why:
    the listed words that carried each match and what was folded to see them (homoglyph, pinyin, …)."""
    if country is not None and not re.fullmatch(r"[A-Z]{2}", country):
        raise InvalidInput(f"--country: {country!r} is not an ISO 3166-1 alpha-2 code such as CN")
    if threshold is None:
        section = load_policy(settings().policy, home=settings().home).section(US_EXPORT)
        assert isinstance(section, UsExportSection)
        threshold = section.screening_threshold
    try:
        index = current_list(_in_force()).index()
    except ScreeningListUnavailable as exc:
        fail(str(exc), 1)
    for name in names:  # as long as a party's name may be: fuzzy matching a megabyte takes minutes
        if not name.strip() or len(name) > MAX_NAME:
            raise InvalidInput(f"NAMES: {cut(name)} is not a name of 1 to {MAX_NAME} characters")
    parties = [ScreenedParty(role="buyer", name=name, country=country) for name in names]
    matches = index.screen(parties, threshold)
    if json_:
        output.print_json(
            {
                "list_version": index.info.version,
                "threshold": threshold,
                "parties": [
                    party.model_dump(mode="json", include={"name", "suspicious"}) for party in parties
                ],
                "matches": [match.model_dump(mode="json", exclude={"role"}) for match in matches],
            }
        )
        return
    output.console.print(escape(f"list {index.info.version} ({index.info.source}), threshold {threshold:g}"))
    for party in parties:
        name = party.name
        if party.suspicious:
            output.console.print(
                f"[bold yellow]suspicious:[/] {escape(name)}: {escape(', '.join(party.suspicious))}"
            )
        found = [match for match in matches if match.party_name == name]
        if not found:
            output.console.print(f"[green]clear:[/] {escape(name)}")
            continue
        table = Table("score", "listed as", "matched name", "why", "entity number", "list")
        for match in found:
            output.row(
                table,
                f"{match.score:g}",
                match.entry_name,
                match.matched_name,
                match.explanation(),
                match.entity_number or "",
                match.source,
            )
        output.console.print(f"[bold red]{len(found)} match(es):[/] {escape(name)}")
        output.console.print(table)


def current_list(events: ListsInForce) -> CurrentList:
    """The list in force, its prepared index cached under $CHIPCLEAR_HOME/cache across CLI calls."""
    return CurrentList(events, cache_of_home())


def _in_force() -> ListsInForce:
    """Which list is in force, for a `check`: without importing the store where the file tells
    (chipclear/store/screening_tables.py); else the store, which also says what is wrong."""
    read = list_in_force(settings().event_store_url, store)
    return store() if read is None else read


def cache_of_home() -> IndexCache:
    return IndexCache(settings().home / "cache")


@screening_app.command("versions")
@handles_errors
def versions(json_: JsonOption = False) -> None:
    """Every list loaded, newest (the one in force) first."""
    events = store()
    loaded = events.screening_list_versions()
    if json_:
        output.print_json([info.model_dump(mode="json") for info in loaded])
        return
    if not loaded:
        sample = current_list(events).index().info
        output.console.print(
            f"no list loaded: screenings use the bundled sample {sample.version} ({sample.entries} entries). "
            "Load the current Consolidated Screening List with `chipclear screening load FILE.csv`."
        )
        return
    table = Table("version", "loaded (UTC)", "source", "entries", "names", "sha256")
    for number, info in enumerate(loaded):
        assert info.loaded_at is not None
        output.row(
            table,
            info.version + (" (in force)" if number == 0 else ""),
            info.loaded_at.isoformat()[:19],
            info.source,
            str(info.entries),
            str(info.names),
            info.sha256[:16],
        )
    output.console.print(table)


@screening_app.command("bench")
@handles_errors
def bench(
    file: Annotated[Path, typer.Argument(help="A CSL CSV file, e.g. consolidated.csv from trade.gov.")],
    names: Annotated[int, typer.Option(min=10, max=100_000, help="How many names to screen.")] = 400,
    json_: JsonOption = False,
) -> None:
    """Time the screening of FILE without loading it: parse, prepare the index, write and open its
    cache, and screen names taken from the list itself (every one a hit) and written as buyers do.

    Times are CPU seconds of this process (what an idle machine takes; a busy one's clock shows
    more). Nothing is stored: the cache is written to a temporary directory and removed."""
    text = read_text(file)
    started = time.process_time()
    try:
        parsed = parse_csl(text, source=file.name, loaded_at=datetime.now(UTC))
    except ScreeningListError as exc:
        raise InvalidInput(f"{file}: {exc}") from None
    gc.collect()
    parse_s = time.process_time() - started
    started = time.process_time()
    tables = MemoryTables(parsed)
    # The cyclic collector is held off while the index is built; its first pass over what was built
    # comes later, once, and is counted here, as is the one after writing the cache.
    gc.collect()
    prepare_s = time.process_time() - started
    index = ScreeningIndex(tables)
    step = max(1, len(parsed.entries) // names)
    queries = [f"{entry.name.upper()} CO LTD" for entry in parsed.entries[::step]][:names]
    timings = {"memory": _per_name(index, queries)}
    with tempfile.TemporaryDirectory() as directory:
        cache = IndexCache(Path(directory))
        started = time.process_time()
        cache.write(tables)
        gc.collect()
        write_s = time.process_time() - started
        started = time.process_time()
        cached = cache.open(parsed.info)
        open_s = time.process_time() - started
        assert cached is not None
        timings["cache"] = _per_name(cached, queries)
    figures = {
        "entries": len(parsed.entries),
        "names_indexed": len(tables.name_list),
        "parse_s": round(parse_s, 3),
        "prepare_s": round(prepare_s, 3),
        "cache_write_s": round(write_s, 3),
        "cache_open_s": round(open_s, 4),
        **{f"{where}_{k}": v for where, found in timings.items() for k, v in found.items()},
    }
    if json_:
        output.print_json(figures)
        return
    table = Table("measure", "value")
    for key, value in figures.items():
        output.row(table, key, f"{value:g}" if isinstance(value, float) else str(value))
    output.console.print(table)


def _per_name(index: ScreeningIndex, queries: list[str]) -> dict[str, float]:
    """CPU milliseconds a name (p50, p95, max), screening `queries` one by one at threshold 90."""
    elapsed = []
    for query in queries:
        started = time.process_time()
        index.match(ScreenedParty(role="buyer", name=query), 90.0)
        elapsed.append((time.process_time() - started) * 1000)
    elapsed.sort()
    return {
        "p50_ms": round(statistics.median(elapsed), 2),
        "p95_ms": round(elapsed[int(len(elapsed) * 0.95)], 2),
        "max_ms": round(elapsed[-1], 2),
    }


# Screening every live request and licence again, by hand (a load starts it itself).
screening_app.command(name="rescreen")(rescreening.rescreen)
