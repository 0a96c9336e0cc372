"""How well a party's name matches one listed name: words aligned, each weighted by how rare it is.

A word's weight comes from the list itself: the fewer entries use it, the more it says who a party
is ("sugon" in one entry, "technology" in thousands). The score is the weight of the listed words
found in the party's name (exactly, joined across a space, or a letter or two off) over the weight of
every word either side, so a listed word the party lacks and a party word the list lacks both pull
it down, each by what it says. A hit also needs a rare listed word: "Baidu Technology" never hits the
alias "TECHNOLOGY LLC", however the rest scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rapidfuzz.distance import DamerauLevenshtein

# Shorter than this (all words joined) a name matches only exactly: "ZTE" must not score on "ZTF".
MIN_FUZZY_LENGTH = 4
# Words that name no one in particular. A small list (the bundled sample, a test's) cannot know that
# from its own counts, so each counts as used by at least this share of the entries, as in the CSL.
GENERIC_WORDS = frozenset({
    "technology", "science", "information", "international", "group", "holding", "industry", "industrial",
    "development", "trading", "trade", "electronic", "national", "center", "institute", "research",
    "university", "engineering", "manufacturing", "system", "service", "network", "communication",
    "software", "digital", "data", "equipment", "material", "energy", "investment", "import", "export",
    "new", "global", "china", "chinese", "general", "first", "united", "ai",
})  # fmt: skip
GENERIC_SHARE = 0.05
# A word is rare, and can carry a hit, if at most this share of the entries use it (at least two).
RARE_SHARE = 0.01
# Without a rare word, the listed words found must tell this much together (nats; "technology"
# alone tells 3, a generic word at most 3): "China Electronics Technology Group" hits, "Technology
# Group" does not.
MIN_INFORMATION = 8.0
# Each word a party adds to a listed name of one word costs at least this share of that word's weight.
SINGLE_WORD_EXTRA = 0.25
# How steeply rarity weighs: weight = ((entries + 1) / (entries using the word + 1)) ** POWER.
POWER = 0.6
# What an unmatched word costs, as a share of its weight: a listed word the party lacks, a word of
# the party's the listed name lacks.
MISSING = 1.0
EXTRA = 1.0
# A bracketed word ("(Beijing)") left out costs this share of what another word would.
OPTIONAL = 0.3
# A word one edit off (two for long words) counts 1 - EDIT_COST * edits / its length of its weight:
# "huawie" 0.9 of "huawei", but "sygon" only 0.88 of "hygon".
EDIT_COST = 0.6
# When each side has words the other lacks, a word was swapped for another ("Dahua Technology",
# "Dahua Electronics"): both costs count this many times.
SWAPPED = 3.0


@dataclass(frozen=True)
class Weights:
    """Each word's weight from how many of the list's entries use it."""

    entries_using: dict[str, int]
    entries: int

    def used_by(self, word: str) -> float:
        used = self.entries_using.get(word, 0)
        return max(used, GENERIC_SHARE * self.entries) if word in GENERIC_WORDS else used

    def weight(self, word: str) -> float:
        return float(((self.entries + 1) / (self.used_by(word) + 1)) ** POWER)

    def information(self, word: str) -> float:
        """How much a word tells, in nats: ln(entries / entries using it)."""
        return math.log((self.entries + 1) / (self.used_by(word) + 1))

    def rare(self, word: str) -> bool:
        return self.used_by(word) <= max(2.0, RARE_SHARE * self.entries)


def score_name(
    query: tuple[str, ...],
    listed: tuple[str, ...],
    weights: Weights,
    query_optional: frozenset[str] = frozenset(),
    listed_optional: frozenset[str] = frozenset(),
) -> tuple[float, tuple[str, ...]] | None:
    """0-100 and the listed words that carried it; None when nothing rare of `listed` is in `query`."""
    query_compact, listed_compact = "".join(query), "".join(listed)
    if len(query_compact) < MIN_FUZZY_LENGTH or len(listed_compact) < MIN_FUZZY_LENGTH:
        if query_compact == listed_compact and any(weights.rare(word) for word in listed):
            return 100.0, listed
        return None
    query_free = [True] * len(query)
    listed_free = [True] * len(listed)
    found: list[tuple[str, float]] = []  # (listed words, similarity)

    def take(listed_at: range, query_at: range, similarity: float) -> None:
        for i in listed_at:
            listed_free[i] = False
        for i in query_at:
            query_free[i] = False
        found.append((" ".join(listed[i] for i in listed_at), similarity))

    for i, word in enumerate(listed):
        for j, other in enumerate(query):
            if query_free[j] and other == word:
                take(range(i, i + 1), range(j, j + 1), 1.0)
                break
    # One side's word written as two or more words on the other: "sun way" / "sunway".
    for size in range(min(4, max(len(query), len(listed))), 1, -1):
        for i, word in enumerate(listed):
            for j in range(len(query) - size + 1):
                if listed_free[i] and all(query_free[j : j + size]) and "".join(query[j : j + size]) == word:
                    take(range(i, i + 1), range(j, j + size), 1.0)
        for j, word in enumerate(query):
            for i in range(len(listed) - size + 1):
                if query_free[j] and all(listed_free[i : i + size]) and "".join(listed[i : i + size]) == word:
                    take(range(i, i + size), range(j, j + 1), 1.0)
    # A letter or two off, in words long enough to tell a typo from another word (the party's word
    # alone or two of its words joined: "xian cheng" / "xianchen").
    for i, word in enumerate(listed):
        if not listed_free[i] or len(word) <= MIN_FUZZY_LENGTH:
            continue
        allowed = 1 if len(word) <= 8 else 2
        best: tuple[int, range] | None = None
        for size in (1, 2):
            for j in range(len(query) - size + 1):
                other = "".join(query[j : j + size])
                if all(query_free[j : j + size]) and len(other) > MIN_FUZZY_LENGTH:
                    cutoff = allowed if size == 1 else 1  # two words joined and a typo: one edit
                    edits = DamerauLevenshtein.distance(word, other, score_cutoff=cutoff)
                    if edits <= cutoff and (best is None or edits < best[0]):
                        best = (edits, range(j, j + size))
        if best is not None:
            take(range(i, i + 1), best[1], 1.0 - EDIT_COST * best[0] / len(word))
    matched_words = [word for words, _ in found for word in words.split()]
    if not any(weights.rare(word) for word in matched_words) and (
        sum(weights.information(word) for word in matched_words) < MIN_INFORMATION
    ):
        return None
    matched = sum(similarity * _weight(words, weights) for words, similarity in found)
    whole = sum(_weight(words, weights) for words, _ in found)
    missing = sum(
        weights.weight(word) * (OPTIONAL if word in listed_optional else 1.0)
        for word, free in zip(listed, listed_free, strict=True)
        if free
    )
    # What is left of the party's name costs by what it says, read as the list would: syllables that
    # join into a word the list knows ("bei jing") cost as that word, not as two unknown ones.
    leftover = _rejoined([word for word, free in zip(query, query_free, strict=True) if free], weights)
    # A listed name of one word ("STAR", "HORIZON") found among other words is most often a common
    # word in another name: each extra word costs at least a share of the listed word's weight.
    floor = SINGLE_WORD_EXTRA * weights.weight(listed[0]) if len(listed) == 1 else 0.0
    extra = sum(
        max(floor, weights.weight(word)) * (OPTIONAL if word in query_optional else 1.0) for word in leftover
    )
    swapped = SWAPPED if missing and extra else 1.0
    score = 100.0 * matched / (whole + swapped * (MISSING * missing + EXTRA * extra))
    return score, tuple(words for words, _ in found)


def _weight(words: str, weights: Weights) -> float:
    return sum(weights.weight(word) for word in words.split())


def _rejoined(words: list[str], weights: Weights) -> list[str]:
    """`words` with each run of two or three that the list knows as one word joined into it."""
    out: list[str] = []
    i = 0
    while i < len(words):
        for size in (3, 2):
            joined = "".join(words[i : i + size])
            if i + size <= len(words) and joined in weights.entries_using:
                out.append(joined)
                i += size
                break
        else:
            out.append(words[i])
            i += 1
    return out
