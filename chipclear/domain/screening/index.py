"""A screening list prepared for matching: every name folded once, an inverted index over its words.

Only names that share a rare word with the party's name are scored (a hit needs one anyway), so a
party is compared with a handful of the list's tens of thousands of names, not all of them. The index
reads its tables through a small protocol, so the store can keep them on disk beside the list they
were built from and a CLI call reads only the few rows it needs.
"""

from __future__ import annotations

import gc
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from rapidfuzz.distance import DamerauLevenshtein

from chipclear.domain.screening.models import (
    ScreenedParty,
    ScreeningEntry,
    ScreeningList,
    ScreeningListInfo,
    ScreeningMatch,
)
from chipclear.domain.screening.normalise import NameForm, name_forms
from chipclear.domain.screening.score import MIN_FUZZY_LENGTH, OPTIONAL, Weights, score_name

# Entries that are not organisations or people: a vessel's or an aircraft's name ("HORIZON", "STAR")
# never names a buyer, an end user or a consignee.
NOT_A_PARTY = frozenset({"vessel", "aircraft"})
_CAPITALS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Joins of up to this many consecutive words are indexed: "sun way" finds "sunway", "zhong ke shu
# guang" finds "zhongke shuguang", and "zhongkeshuguang" finds both.
MAX_JOIN = 4


@dataclass(frozen=True)
class Card:
    """What a match reports about its entry: kept in the index so a cached index needs no list."""

    name: str
    source: str
    id: str | None
    entity_number: str | None
    type: str | None
    programs: tuple[str, ...]
    countries: tuple[str, ...]


def _country(address: str) -> str | None:
    """The country code at the end of an address ("Shenzhen, CN" or the bare "CN" of the CSL download):
    its last two characters, if capitals after nothing, a space or a comma (checked by hand: a regular
    expression anchored at the end still searches the whole address, tens of thousands a list)."""
    text = address.strip()
    code = text[-2:]
    if len(code) == 2 and _CAPITALS.issuperset(code):
        return code if len(text) == 2 or text[-3] == "," or text[-3].isspace() else None
    return None


def _card(entry: ScreeningEntry) -> Card:
    countries = tuple(dict.fromkeys(code for a in entry.addresses if (code := _country(a)) is not None))
    return Card(
        entry.name, entry.source, entry.id, entry.entity_number, entry.type, tuple(entry.programs), countries
    )


def _joins(words: tuple[str, ...]) -> set[str]:
    return set(_joined(words))


def _joined(words: tuple[str, ...]) -> Iterator[str]:
    """Every run of two to `MAX_JOIN` consecutive words, joined (a run may repeat)."""
    count = len(words)
    for first in range(count - 1):
        joined = words[first]
        for word in words[first + 1 : first + MAX_JOIN]:
            joined += word
            yield joined


@contextmanager
def no_collection() -> Iterator[None]:
    """Hundreds of thousands of small lists and tuples: the cyclic collector would walk them all
    again and again while they are made, and none of them can form a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _near_keys(word: str) -> tuple[str, str]:
    """A word one or two edits off another keeps its first three or its last three letters."""
    return "<" + word[:3], word[-3:] + ">"


def _edits_within(word: str, other: str) -> bool:
    allowed = 1 if len(word) <= 8 else 2
    return (
        word != other
        and abs(len(other) - len(word)) <= allowed
        and DamerauLevenshtein.distance(word, other, score_cutoff=allowed) <= allowed
    )


class Tables(Protocol):
    """What matching reads from a prepared list: in memory (`MemoryTables`), or from the store's
    cache on disk, which answers a CLI call without loading the whole index."""

    info: ScreeningListInfo
    entries: int

    def using(self, words: Iterable[str]) -> dict[str, int]:
        """How many entries use each word (words no entry uses are left out)."""
        ...

    def names_for(self, keys: Iterable[str]) -> set[int]:
        """The names having a key as a word, or as two to four of their words joined."""
        ...

    def near(self, keys: Iterable[str]) -> set[str]:
        """The rare words filed under these `_near_keys` (long enough to be misspelt)."""
        ...

    def names(self, numbers: Iterable[int]) -> dict[int, Name]: ...

    def cards(self, numbers: Iterable[int]) -> dict[int, Card]: ...


@dataclass(frozen=True)
class Name:
    """One listed name as matched: its entry, the name as written, its words, where it came from."""

    owner: int
    text: str
    words: tuple[str, ...]
    folds: tuple[str, ...]
    optional: frozenset[str] = frozenset()  # bracketed words the party may leave out


@dataclass
class Part:
    """A run of a list's entries, folded and indexed among themselves: entries and names numbered from
    0 within the run.

    Runs folded apart, in processes of their own, make the tables of the whole list: their entries and
    names follow one another (numbered on), a key's names are its names in each run, and a word's
    count of entries is the sum of its counts (no entry is in two runs)."""

    cards: list[Card]
    names: list[Name]
    keys: dict[str, list[int]]  # a word, or two to four consecutive words joined: its names
    word_use: dict[str, int]  # a word: how many entries use it, words in the order they first appear


def fold_part(entries: Sequence[ScreeningEntry]) -> Part:
    """Fold and index the names of `entries` (vessels and aircraft left out)."""
    names: list[Name] = []
    keys: dict[str, list[int]] = {}
    uses: list[str] = []  # each entry's words, once an entry
    read: dict[str, list[NameForm]] = {}  # lists repeat names across their sources
    append, keyed = names.append, keys.get
    with no_collection():
        cards = [_card(entry) for entry in entries]
        for owner, entry in enumerate(entries):
            if entry.type is not None and entry.type.casefold() in NOT_A_PARTY:
                continue
            seen: set[tuple[str, ...]] = set()  # the entry's names, as words
            used: dict[str, None] = {}  # the entry's words, in the order they first appear
            for written in (
                dict.fromkeys([entry.name, *entry.alt_names]) if entry.alt_names else (entry.name,)
            ):
                forms = read.get(written)
                if forms is None:
                    forms = read[written] = name_forms(written, listed=True)
                for form in forms:
                    words = form.words
                    if words in seen:
                        continue
                    seen.add(words)
                    number = len(names)
                    # Only what tells the officer where the name came from: a listed name's own
                    # transliteration is not a disguise.
                    folds = tuple(f for f in form.folds if f.startswith("bracketed")) if form.folds else ()
                    append(Name(owner, written, words, folds, form.optional))
                    for word in words:  # a name's words are distinct (normalise keeps each once)
                        numbers = keyed(word)
                        if numbers is None:
                            keys[word] = [number]
                        else:
                            numbers.append(number)
                        used[word] = None
                    if len(words) == 1:
                        continue  # no joins
                    for join in _joined(words):
                        numbers = keyed(join)
                        if numbers is None:
                            keys[join] = [number]
                        elif numbers[-1] != number:  # a join met before in this name, or its word
                            numbers.append(number)
            uses += used
    # Counted at once (in order of first use), not word by word as each entry is read.
    return Part(cards, names, keys, dict(Counter(uses)))


def near_words(words: Iterable[str]) -> dict[str, list[str]]:
    """The words long enough to be misspelt, each under its `_near_keys`, in order."""
    near: dict[str, list[str]] = defaultdict(list)
    for word in words:
        if len(word) > MIN_FUZZY_LENGTH:
            for key in _near_keys(word):
                near[key].append(word)
    return dict(near)


class MemoryTables:
    """A list folded and indexed in memory: what a worker keeps, and what the store's cache is
    written from."""

    def __init__(self, screening_list: ScreeningList) -> None:
        self.info = screening_list.info
        whole = fold_part(screening_list.entries)
        self.card_list = whole.cards
        self.entries = len(self.card_list)
        self.name_list = whole.names
        self.keys = whole.keys
        self.word_use = whole.word_use
        weights = Weights(self.word_use, self.entries)
        self.near_words = near_words(word for word in self.word_use if weights.rare(word))

    def using(self, words: Iterable[str]) -> dict[str, int]:
        return {word: self.word_use[word] for word in words if word in self.word_use}

    def names_for(self, keys: Iterable[str]) -> set[int]:
        return {number for key in keys for number in self.keys.get(key, ())}

    def near(self, keys: Iterable[str]) -> set[str]:
        return {word for key in keys for word in self.near_words.get(key, ())}

    def names(self, numbers: Iterable[int]) -> dict[int, Name]:
        return {number: self.name_list[number] for number in numbers}

    def cards(self, numbers: Iterable[int]) -> dict[int, Card]:
        return {number: self.card_list[number] for number in numbers}


class ScreeningIndex:
    """A list ready to screen: `match` one party, or `screen` a request's parties."""

    def __init__(self, source: ScreeningList | Tables) -> None:
        self.tables: Tables = MemoryTables(source) if isinstance(source, ScreeningList) else source
        self.info = self.tables.info

    @property
    def entries(self) -> int:
        return self.tables.entries

    def _candidates(self, forms: list[NameForm], weights: Weights) -> tuple[set[int], set[str]]:
        """Names sharing a rare word with a form of the party's name: as it is, joined, or a letter
        or two off (a hit needs a rare listed word, so no other name can hit)."""
        keys = {key for form in forms for key in (*form.words, *_joins(form.words))}
        pairs = {a + b for form in forms for a, b in zip(form.words, form.words[1:], strict=False)}
        typos = {word for form in forms for word in (*form.words, *pairs) if len(word) > MIN_FUZZY_LENGTH}
        near = {
            other
            for other in self.tables.near(key for word in typos for key in _near_keys(word))
            if any(_edits_within(word, other) for word in typos)
        }
        return self.tables.names_for([key for key in keys if weights.rare(key)] + sorted(near)), near

    def match(self, party: ScreenedParty, threshold: float) -> list[ScreeningMatch]:
        """The entries `party` matches at `threshold` or above, best first, one match per entry."""
        forms = name_forms(party.name)
        if not forms:
            return []
        query_words = {key for form in forms for key in (*form.words, *_joins(form.words))}
        weights = Weights(self.tables.using(query_words), self.tables.entries)
        numbers, near = self._candidates(forms, weights)
        if not numbers:
            return []
        names = self.tables.names(numbers)
        listed_words = {word for name in names.values() for word in name.words} - query_words
        weights = Weights({**weights.entries_using, **self.tables.using(listed_words)}, self.tables.entries)
        cards = self.tables.cards({name.owner for name in names.values()})
        best: dict[int, tuple[float, Name, tuple[str, ...], tuple[str, ...]]] = {}
        # Words of the party's name as any form reads them, joined or a typo away: a listed name can
        # score no more than the share of its own weight these cover.
        reachable = query_words | near | {w for form in forms for w in form.words}
        for form in forms:
            for number in sorted(numbers):
                name = names[number]
                if _best_possible(name, reachable, weights) < threshold:
                    continue
                scored = score_name(form.words, name.words, weights, form.optional, name.optional)
                if scored is None:
                    continue
                score, tokens = scored
                card = cards[name.owner]
                folds = (*form.folds, *name.folds)
                if party.country and card.countries and party.country not in card.countries:
                    score *= 0.97  # the same name listed elsewhere: still shown, a little lower
                    folds = (*folds, f"listed in {', '.join(card.countries)}, party in {party.country}")
                score = round(score, 1)
                if score >= threshold and (name.owner not in best or score > best[name.owner][0]):
                    best[name.owner] = (score, name, tokens, folds)
        matches = [
            _match(party, cards[owner], score, name, tokens, folds)
            for owner, (score, name, tokens, folds) in best.items()
        ]
        return sorted(matches, key=lambda m: (-m.score, m.entry_name, m.entry_id or ""))

    def screen(self, parties: list[ScreenedParty], threshold: float) -> list[ScreeningMatch]:
        return [match for party in parties for match in self.match(party, threshold)]


def _match(
    party: ScreenedParty,
    card: Card,
    score: float,
    name: Name,
    tokens: tuple[str, ...],
    folds: tuple[str, ...],
) -> ScreeningMatch:
    return ScreeningMatch(
        role=party.role,
        party_name=party.name,
        entry_name=card.name,
        matched_name=name.text,
        entity_number=card.entity_number,
        source=card.source,
        programs=list(card.programs),
        score=score,
        entry_id=card.id,
        entry_type=card.type,
        tokens=list(tokens),
        folds=list(dict.fromkeys(folds)),
    )


def _best_possible(name: Name, reachable: set[str], weights: Weights) -> float:
    """An upper bound of `score_name` for `name`: its words the party's name could match, over the
    least its own words weigh (a listed word left out costs at least its optional share)."""
    covered = whole = 0.0
    for word in name.words:
        weight = weights.weight(word)
        whole += weight * (OPTIONAL if word in name.optional else 1.0)
        if word in reachable:
            covered += weight
    if covered == 0.0 and len(name.words) > 1:
        # Only two or more of its words joined can be in the party's name ("zhongke shuguang" as
        # "zhongkeshuguang"): not bounded here.
        return 100.0
    return 100.0 * min(covered, whole) / whole if whole else 0.0
