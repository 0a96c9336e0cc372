"""Screening against the real US Consolidated Screening List (2026-07-31 snapshot, 25,921 entries,
shipped compressed in tests/data) with a labelled set of names as buyers write them.

`tests/data/screening-labelled.csv`: one query a row, `expected` the entries (the CSL's `_id`) it
names, empty for a real company that is not listed; `family` the other entries of the same corporate
family (affiliates, subsidiaries of the same brand), which a hit may also name without being wrong.
A hit outside both is a hit on the wrong entry. The full index is built once for the module (about
three seconds); every query after that takes milliseconds.
"""

from __future__ import annotations

import codecs
import csv
import lzma
from dataclasses import dataclass
from pathlib import Path

import pytest

from chipclear.domain.screening import ScreenedParty, ScreeningIndex, parse_csl

DATA = Path(__file__).resolve().parents[1] / "data"
CSL = DATA / "csl-2026-07-31.csv.xz"
LABELLED = DATA / "screening-labelled.csv"
THRESHOLD = 90.0  # the policy default (`us_export.screening_threshold`)

HUAWEI = {"csl-snapshot-00021", "csl-snapshot-03334", "csl-snapshot-05206"}
SUGON = {"csl-snapshot-00063", "csl-snapshot-05699"}


@dataclass(frozen=True)
class Labelled:
    query: str
    kind: str
    expected: frozenset[str]
    family: frozenset[str]


def labelled_set() -> list[Labelled]:
    with LABELLED.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    return [
        Labelled(
            # Invisible characters are written as \\u escapes, so the file shows what it holds.
            query=codecs.decode(row["query"], "unicode_escape") if "\\u" in row["query"] else row["query"],
            kind=row["kind"],
            expected=frozenset(row["expected"].split()),
            family=frozenset(row["family"].split()),
        )
        for row in rows
    ]


@pytest.fixture(scope="module")
def csl() -> ScreeningIndex:
    with lzma.open(CSL, "rt", encoding="utf-8") as file:
        text = file.read()
    return ScreeningIndex(parse_csl(text, source=CSL.name, loaded_at=None))


def hits(index: ScreeningIndex, name: str) -> set[str | None]:
    return {match.entry_id for match in index.match(ScreenedParty(role="buyer", name=name), THRESHOLD)}


def test_the_labelled_set_is_what_the_docs_say() -> None:
    queries = labelled_set()
    assert len(queries) >= 120
    listed = [q for q in queries if q.expected]
    assert len(listed) >= 100 and len(queries) - len(listed) >= 40
    kinds = {q.kind for q in queries}
    for kind in ("chinese script", "pinyin", "typo", "word order", "bracket", "legal form", "look-alike"):
        assert kind in kinds
    for disguise in ("cyrillic", "greek", "fullwidth", "zero-width", "bidi override", "leet"):
        assert disguise in kinds


def test_labelled_set_at_the_default_threshold(csl: ScreeningIndex) -> None:
    """F1 at least 0.95, and no hit ever names another party than the one the query names."""
    found = missed = false_alarms = 0
    wrong: list[tuple[str, set[str | None]]] = []
    for case in labelled_set():
        got = hits(csl, case.query)
        if case.expected:
            if got & case.expected:
                found += 1
            else:
                missed += 1
        elif got:
            false_alarms += 1
        if got - case.expected - case.family:
            wrong.append((case.query, got - case.expected - case.family))
    precision = found / (found + false_alarms)
    recall = found / (found + missed)
    f1 = 2 * precision * recall / (precision + recall)
    assert wrong == []
    assert f1 >= 0.95, (precision, recall, f1)


@pytest.mark.parametrize(
    ("name", "expected", "fold"),
    [
        pytest.param("Hu\u0430wei Technologies", HUAWEI, "homoglyph: Cyrillic", id="cyrillic-a"),
        pytest.param("S\u0443gon", SUGON, "homoglyph: Cyrillic", id="cyrillic-u"),
        pytest.param("Hu\u03b1wei Technologies", HUAWEI, "homoglyph: Greek", id="greek-alpha"),
        pytest.param("\uff28\uff55\uff41\uff57\uff45\uff49", HUAWEI, "fullwidth", id="fullwidth"),
        pytest.param("Hua\u200bwei Technologies", HUAWEI, "zero-width U+200B removed", id="zero-width-space"),
        pytest.param("Hu\u2060awei", HUAWEI, "zero-width U+2060 removed", id="word-joiner"),
        pytest.param(
            "\u202eseigolonhceT iewauH", HUAWEI, "right-to-left override", id="bidi-override-displays-huawei"
        ),
        pytest.param("Hu4wei Techn0logies", HUAWEI, "leet: '4' read as 'a'", id="leet"),
        pytest.param("5ugon", SUGON, "leet: '5' read as 's'", id="leet-initial"),
    ],
)
def test_disguises_are_seen_and_said(csl: ScreeningIndex, name: str, expected: set[str], fold: str) -> None:
    matches = csl.match(ScreenedParty(role="consignee", name=name), THRESHOLD)
    assert {m.entry_id for m in matches} & expected, [m.entry_name for m in matches]
    best = next(m for m in matches if m.entry_id in expected)
    assert any(fold in said for said in best.folds), best.folds


def test_a_hit_names_its_entry_its_words_its_score_and_its_folds(csl: ScreeningIndex) -> None:
    [match] = csl.match(ScreenedParty(role="buyer", name="中科曙光"), THRESHOLD)
    assert (match.entry_id, match.entry_name, match.matched_name) == (
        "csl-snapshot-05699",
        "Sugon",
        "Zhongke Shuguang",
    )
    assert match.tokens == ["zhongke", "shuguang"]
    assert match.folds == ["pinyin of 中科曙光"]
    assert match.score == 100.0
    assert match.explanation() == "on zhongke, shuguang; pinyin of 中科曙光"


@pytest.mark.parametrize(
    "name",
    [
        "Baidu Technology Co., Ltd.",  # the SDN alias "TECHNOLOGY LLC" is one generic word
        "Beijing Kunlunxin Technology Co., Ltd.",
        "National Supercomputing Center Kunshan",  # listed centres differ by city
        "Star Technology Co., Ltd.",  # a one-word listed name inside a longer one
        "Horizon Semiconductors",  # HORIZON is a vessel
        "Technology",
    ],
)
def test_generic_and_one_word_names_do_not_hit(csl: ScreeningIndex, name: str) -> None:
    assert hits(csl, name) == set()


def test_a_bracketed_acronym_is_an_alias_and_leaves_the_name_whole(csl: ScreeningIndex) -> None:
    assert "csl-snapshot-03009" in hits(csl, "NSCC-GZ")
    assert "csl-snapshot-03009" in hits(csl, "National Supercomputing Center Guangzhou")
    assert "csl-snapshot-04981" in hits(csl, "SMIC")  # the Entity List's, not only the CMIC entry


def test_a_vessel_never_names_a_party(csl: ScreeningIndex) -> None:
    vessels = [
        m for m in csl.match(ScreenedParty(role="buyer", name="Horizon"), 0) if m.entry_type == "Vessel"
    ]
    assert vessels == []
