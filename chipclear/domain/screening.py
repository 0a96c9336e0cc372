"""Restricted-party screening: every party's name against a screening list, normalised and fuzzy.

Lists come in the US Consolidated Screening List (CSL) CSV format. Names on such lists are written in
many ways ("Huawei Technologies Co., Ltd.", "HUAWEI TECHNOLOGIES CO LTD", "Sun Way" for "Sunway"), so a
name is normalised before it is scored, and scored against the entry's alternative names too. Pure: the
CSV arrives as text and the store keeps the parsed list; nothing here reads a file except the bundled
sample, as the bundled policies are read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz, process

from chipclear.domain.models import ImportRequest, UtcDatetime

PartyRole = Literal["buyer", "end_user", "consignee"]

# Legal-form words that say nothing about who a party is; dropped from the end of a name only, so a
# "Limited" inside a name ("Limited Edition Robotics") still counts.
LEGAL_SUFFIXES = frozenset(
    [
        "co",
        "company",
        "corp",
        "corporation",
        "inc",
        "incorporated",
        "ltd",
        "limited",
        "llc",
        "plc",
        "gmbh",
        "ag",
        "sa",
        "bv",
        "pte",
        "pvt",
        "jsc",
        "pjsc",
        "ooo",
        "zao",
        "oao",
        "kk",
        "srl",
        "oy",
        "ab",
        "",
    ]
)
# Abbreviations lists and buyers both use; spelt out before scoring, on both sides, so "Semiconductor
# Manufacturing Intl" is not 12 points short of "... International" (a miss is the dangerous error).
ABBREVIATIONS = {
    "intl": "international",
    "natl": "national",
    "tech": "technology",
    "technol": "technology",
    "mfg": "manufacturing",
    "elec": "electronics",
    "sci": "science",
    "info": "information",
    "grp": "group",
    "ctr": "center",
    "centre": "center",
}
CJK_LEGAL_SUFFIXES = ("股份有限公司", "有限责任公司", "有限公司", "公司")
# Shorter than this (after normalising) a name matches only exactly: "ZTE" must not score on "ZTF".
MIN_FUZZY_LENGTH = 4

REQUIRED_COLUMNS = ("source", "name")
_LIST_COLUMNS = ("programs", "addresses", "alt_names")


class ScreeningListError(ValueError):
    """A list file that is not in the CSL format; the message names the row and the column."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScreeningEntry(_Frozen):
    """One row of a CSL file: a listed party and the names it is known by."""

    source: str
    name: str
    entity_number: str | None = None
    type: str | None = None
    programs: list[str] = Field(default_factory=list)
    addresses: list[str] = Field(default_factory=list)
    alt_names: list[str] = Field(default_factory=list)
    start_date: str | None = None
    federal_register_notice: str | None = None
    license_requirement: str | None = None
    license_policy: str | None = None
    source_list_url: str | None = None


class ScreeningListInfo(_Frozen):
    """Which list a screening used: the checksum pins the content, the load time the moment."""

    version: str
    sha256: str
    source: str
    loaded_at: UtcDatetime | None  # None for the sample bundled with the package
    entries: int
    names: int


class ScreeningList(_Frozen):
    info: ScreeningListInfo
    entries: list[ScreeningEntry]


class ScreenedParty(_Frozen):
    role: PartyRole
    name: str


class ScreeningMatch(_Frozen):
    role: PartyRole
    party_name: str
    entry_name: str
    matched_name: str  # the entry's name or the alternative name that scored best
    entity_number: str | None
    source: str
    programs: list[str] = Field(default_factory=list)
    score: Annotated[float, Field(ge=0, le=100)]


def parties_of(request: ImportRequest) -> list[ScreenedParty]:
    """Everyone a request names: buyer, end user (when not the buyer) and every consignee."""
    parties = [ScreenedParty(role="buyer", name=request.buyer.name)]
    if request.end_user is not None and request.end_user.name != request.buyer.name:
        parties.append(ScreenedParty(role="end_user", name=request.end_user.name))
    parties += [ScreenedParty(role="consignee", name=party.name) for party in request.consignees]
    return parties


# -- normalising --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Normalised:
    spaced: str  # words in order, lower case, no punctuation, no legal suffix
    compact: str  # the same without spaces: "sun way" and "sunway" are one name


def normalise(name: str) -> Normalised:
    text = unicodedata.normalize("NFKC", name).casefold()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))  # "Müller" == "Muller"
    text = text.replace("&", " and ")
    text = re.sub(r"\bint'l\b", "international", text)
    words = [ABBREVIATIONS.get(word, word) for word in re.sub(r"[\W_]+", " ", text).split()]
    while len(words) > 1 and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    if len(words) > 1 and words[-1] in CJK_LEGAL_SUFFIXES:
        words.pop()  # the legal form written apart, after a bracket: "摩尔线程智能科技 (北京) 有限责任公司"
    elif words:
        for suffix in CJK_LEGAL_SUFFIXES:  # longest first
            if words[-1].endswith(suffix) and len(words[-1]) > len(suffix):
                words[-1] = words[-1].removesuffix(suffix)
                break
    spaced = " ".join(words)
    return Normalised(spaced=spaced, compact=spaced.replace(" ", ""))


# -- matching -----------------------------------------------------------------------------------------
class ScreeningIndex:
    """A list prepared for matching: every name and alternative name normalised once.

    Scoring runs in rapidfuzz's C++ over the whole list at once, so a full CSL (tens of thousands of
    names) screens a request in milliseconds.
    """

    def __init__(self, screening_list: ScreeningList) -> None:
        self.info = screening_list.info
        self.entries = screening_list.entries
        self._owner: list[int] = []
        self._names: list[str] = []
        spaced: list[str] = []
        compact: list[str] = []
        for index, entry in enumerate(self.entries):
            for name in dict.fromkeys([entry.name, *entry.alt_names]):
                normal = normalise(name)
                if not normal.compact:
                    continue
                self._owner.append(index)
                self._names.append(name)
                spaced.append(normal.spaced)
                compact.append(normal.compact)
        self._spaced = spaced
        self._compact = compact
        self._words = [frozenset(name.split()) for name in spaced]

    def match(self, party: ScreenedParty, threshold: float) -> list[ScreeningMatch]:
        """The entries `party` matches at `threshold` or above, best first, one match per entry."""
        query = normalise(party.name)
        if not query.compact:
            return []
        scores: dict[int, float] = {}  # name index -> score
        if len(query.compact) < MIN_FUZZY_LENGTH:
            scores = {i: 100.0 for i, name in enumerate(self._compact) if name == query.compact}
        else:
            words = set(query.spaced.split())
            for choices, text, scorer in (
                (self._compact, query.compact, fuzz.ratio),
                (self._spaced, query.spaced, fuzz.token_sort_ratio),
                (self._spaced, query.spaced, fuzz.token_set_ratio),
            ):
                for _, score, i in process.extract(
                    text, choices, scorer=scorer, score_cutoff=threshold, limit=None
                ):
                    if len(self._compact[i]) < MIN_FUZZY_LENGTH and self._compact[i] != query.compact:
                        continue
                    # A listed name inside a longer one ("Huawei" in "Huawei Cloud Computing") is a
                    # hit; the other way round ("Technologies" inside every "… Technologies") is not.
                    if scorer is fuzz.token_set_ratio and not self._words[i] <= words:
                        continue
                    scores[i] = max(score, scores.get(i, 0.0))
        best: dict[int, tuple[float, int]] = {}  # entry index -> (score, name index)
        for i, score in scores.items():
            entry = self._owner[i]
            if entry not in best or score > best[entry][0]:
                best[entry] = (score, i)
        matches = [
            ScreeningMatch(
                role=party.role,
                party_name=party.name,
                entry_name=self.entries[entry].name,
                matched_name=self._names[i],
                entity_number=self.entries[entry].entity_number,
                source=self.entries[entry].source,
                programs=list(self.entries[entry].programs),
                score=round(score, 1),
            )
            for entry, (score, i) in best.items()
        ]
        return sorted(matches, key=lambda m: (-m.score, m.entry_name))

    def screen(self, parties: list[ScreenedParty], threshold: float) -> list[ScreeningMatch]:
        return [match for party in parties for match in self.match(party, threshold)]


# -- reading CSL files --------------------------------------------------------------------------------
def parse_csl(text: str, *, source: str, loaded_at: datetime | None) -> ScreeningList:
    """Parse a CSL CSV; any bad row rejects the whole file, so a half-read list is never used."""
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    # strict: an unterminated quote is an error, not a field that swallows every later row.
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")), strict=True)
    columns = [c.strip() for c in reader.fieldnames or []]
    if not columns:
        raise ScreeningListError("the file is empty: expected a header row with source, name, …")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ScreeningListError(
            f"header: missing column(s) {', '.join(missing)} (found: {', '.join(columns)}); "
            "expected the Consolidated Screening List CSV format"
        )
    reader.fieldnames = columns
    entries: list[ScreeningEntry] = []
    try:
        for row in reader:
            line = reader.line_num
            if None in row:
                raise ScreeningListError(f"row {line}: more fields than the {len(columns)} columns")
            entries.append(_entry(row, line))
    except csv.Error as exc:  # the DictReader's count lags behind the line that failed
        raise ScreeningListError(f"row {reader.reader.line_num}: not valid CSV ({exc})") from None
    if not entries:
        raise ScreeningListError("the file has a header but no entries")
    names = sum(len(dict.fromkeys([e.name, *e.alt_names])) for e in entries)
    stamp = f"-{loaded_at.astimezone(UTC):%Y%m%dT%H%M%SZ}" if loaded_at is not None else ""
    info = ScreeningListInfo(
        version=f"{'csl' if loaded_at else 'sample'}-{sha256[:12]}{stamp}",
        sha256=sha256,
        source=source,
        loaded_at=loaded_at,
        entries=len(entries),
        names=names,
    )
    return ScreeningList(info=info, entries=entries)


def _entry(row: dict[str, str | None], line: int) -> ScreeningEntry:
    def text(column: str) -> str | None:
        value = (row.get(column) or "").strip()
        return value or None

    def items(column: str) -> list[str]:
        return [part.strip() for part in (row.get(column) or "").split(";") if part.strip()]

    source, name = text("source"), text("name")
    if name is None:
        raise ScreeningListError(f"row {line}, column name: must not be empty")
    if source is None:
        raise ScreeningListError(f"row {line}, column source: must not be empty")
    return ScreeningEntry(
        source=source,
        name=name,
        entity_number=text("entity_number"),
        type=text("type"),
        programs=items("programs"),
        addresses=items("addresses"),
        alt_names=items("alt_names"),
        start_date=text("start_date"),
        federal_register_notice=text("federal_register_notice"),
        license_requirement=text("license_requirement"),
        license_policy=text("license_policy"),
        source_list_url=text("source_list_url"),
    )


SAMPLE_LIST = "screening-sample.csv"


def bundled_list() -> ScreeningList:
    """The small sample shipped with the package: used until an operator loads a full list."""
    text = (resources.files("chipclear") / "data" / SAMPLE_LIST).read_text(encoding="utf-8")
    return parse_csl(text, source=f"bundled {SAMPLE_LIST}", loaded_at=None)
