"""Restricted-party screening: normalising, fuzzy matching, the CSL parser. Pure: storing lists and the
activity's index over the list in force are tested in tests/store/test_screening_lists.py.

Matching runs against the sample list bundled with the package (Huawei, SMIC, Phytium, NSC Wuxi,
Sunway, Cambricon, Moore Threads, two Birens, Sugon) at the default policy threshold of 90, so the
tables below are the hits and near-misses an operator would see with no list loaded yet.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chipclear.domain.models import Party, PartyKind
from chipclear.domain.screening import (
    MIN_FUZZY_LENGTH,
    NameForm,
    ScreenedParty,
    ScreeningEntry,
    ScreeningIndex,
    ScreeningList,
    ScreeningListError,
    ScreeningListInfo,
    bundled_list,
    hidden_controls,
    index,
    name_forms,
    normalise,
    parse_csl,
    parties_of,
)
from tests.factories import make_request

THRESHOLD = 90.0  # the policy default (`screening_threshold`)
LOADED_AT = datetime(2026, 3, 1, 9, 30, 15, tzinfo=UTC)

# The header row of the bundled sample, which is the real CSL download's header.
CSL_HEADER = (
    "_id,source,entity_number,type,programs,name,title,addresses,federal_register_notice,start_date,"
    "end_date,standard_order,license_requirement,license_policy,call_sign,vessel_type,gross_tonnage,"
    "gross_registered_tonnage,vessel_flag,vessel_owner,remarks,source_list_url,alt_names,citizenships,"
    "dates_of_birth,nationalities,places_of_birth,source_information_url,ids"
)
CSL_COLUMNS = CSL_HEADER.split(",")
EL = "Entity List (EL) - Bureau of Industry and Security"
SDN = "Specially Designated Nationals (SDN) - Treasury Department"


def csl_text(*rows: dict[str, str], header: str = CSL_HEADER, bom: bool = False) -> str:
    """A CSL file: the header, then one line per row (columns not given are empty), quoted as csv does."""
    out = io.StringIO()
    out.write(("\ufeff" if bom else "") + header + "\n")
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([row.get(column, "") for column in CSL_COLUMNS])
    return out.getvalue()


def csl_list(*rows: dict[str, str], loaded_at: datetime | None = LOADED_AT) -> ScreeningList:
    return parse_csl(csl_text(*rows), source="test list", loaded_at=loaded_at)


def buyer(name: str) -> ScreenedParty:
    return ScreenedParty(role="buyer", name=name)


def entry_names(index: ScreeningIndex, name: str, threshold: float = THRESHOLD) -> list[str]:
    return [match.entry_name for match in index.match(buyer(name), threshold)]


@pytest.fixture(scope="module")
def sample() -> ScreeningIndex:
    return ScreeningIndex(bundled_list())


# A custom list with none of the sample's names: loading it must replace the sample, not add to it.
ACME_ROWS = (
    {
        "_id": "t-1",
        "source": EL,
        "entity_number": "EL-0001",
        "type": "Entity",
        "programs": "EAR; CHINA-EL",
        "name": "Acme Quantum Devices Co., Ltd.",
        "addresses": "1 Road, Shenzhen, CN; 2 Street, Hefei, CN",
        "alt_names": "Acme Quantum; 阿克米量子器件有限公司",
    },
    {
        "_id": "t-2",
        "source": SDN,
        "entity_number": "SDN-7",
        "type": "Entity",
        "programs": "SDGT",
        "name": "Zenith Trading LLC",
    },
)


# -- normalising --------------------------------------------------------------------------------------
def words(raw: str) -> str:
    """The words of the plain (first) reading of `raw`."""
    forms = name_forms(raw)
    return " ".join(forms[0].words) if forms else ""


@pytest.mark.parametrize(
    ("raw", "spaced"),
    [
        pytest.param("HUAWEI Technologies", "huawei technology", id="case-and-plural"),
        pytest.param("Huawei Technologies Co., Ltd.", "huawei technology", id="co-ltd"),
        pytest.param("HUAWEI TECHNOLOGIES CO LTD", "huawei technology", id="co-ltd-no-dots"),
        pytest.param("Huawei Technologies Company Limited", "huawei technology", id="company-limited"),
        pytest.param(
            "Semiconductor Manufacturing International Corporation",
            "semiconductor manufacturing international",
            id="corporation",
        ),
        pytest.param("Acme, Inc.", "acme", id="inc"),
        pytest.param("Acme Holdings LLC", "acme holding", id="llc"),
        pytest.param("Acme Präzision GmbH", "acme prazision", id="gmbh-and-umlaut"),
        pytest.param("Limited Liability Company Acme", "acme", id="legal-form-anywhere"),
        pytest.param(
            "Haiguang Xinxi Jishu Youxian Gongsi", "haiguang information technology", id="pinyin-forms"
        ),
        pytest.param("Ltd.", "ltd", id="legal-form-alone-kept"),
        pytest.param("AT&T", "att", id="ampersand-inside-a-word"),
        pytest.param("Research & Development", "research development", id="ampersand-between-words"),
        pytest.param("Semiconductor Mfg Int'l", "semiconductor manufacturing international", id="abbrev"),
        pytest.param("National Supercomputing Centre", "national supercomputing center", id="centre"),
        pytest.param("Société Générale", "societe generale", id="accents"),
        pytest.param("Großhandel", "grosshandel", id="sharp-s-casefold"),
        pytest.param("S.M.I.C.", "smic", id="dotted-acronym"),
        pytest.param("Xi'an Huawei", "xian huawei", id="apostrophe"),
        pytest.param(
            "\uff28\uff55\uff41\uff57\uff45\uff49\u3000\uff34\uff45\uff43\uff48",
            "huawei technology",  # "tech" is spelt out, as lists and buyers both abbreviate it
            id="fullwidth-and-ideographic-space",
        ),
        pytest.param("华为技术有限公司", "hua wei ji shu", id="cjk-you-xian-gong-si-then-pinyin"),
        pytest.param("中科曙光", "zhong ke shu guang", id="cjk-pinyin"),
        pytest.param(
            "摩尔线程智能科技\uff08北京\uff09有限责任公司",
            "mo er xian cheng zhi neng ke ji bei jing",
            id="cjk-bracket",
        ),
        pytest.param("Hu\u0430wei", "huawei", id="cyrillic-a"),
        pytest.param("\u0397uawei", "huawei", id="greek-capital-eta"),
        pytest.param("Hu\u200bawei", "huawei", id="zero-width"),
        pytest.param("Hu4wei Techn0logies", "huawei technology", id="leet"),
        pytest.param("5G Networks", "5g network", id="digits-kept-in-a-word-of-one-letter"),
        pytest.param("14th Institute", "14th institute", id="ordinal-kept"),
    ],
)
def test_name_forms(raw: str, spaced: str) -> None:
    assert words(raw) == spaced


def test_every_reading_and_what_folded_it() -> None:
    forms = {" ".join(form.words): form.folds for form in name_forms("华为技术有限公司")}
    assert forms == {
        "hua wei ji shu": ("pinyin of 华为技术",),
        "hua wei technology": ("pinyin of 华为技术", "Chinese business words read in English"),
    }
    [rlo, visual] = name_forms("\u202eiewauH")
    assert visual.words == ("huawei",)
    assert visual.folds == ("bidi control U+202E removed", "read in display order (right-to-left override)")
    assert rlo.words == ("iewauh",)
    [cyrillic] = name_forms("Hu\u0430wei")
    assert cyrillic.folds == ("homoglyph: Cyrillic '\u0430' read as 'a'",)


# -- the shortcuts taken for ASCII names read as the general path does ----------------------------------
ASCII_NAMES = st.text(alphabet=st.sampled_from("aAbZ019 &'`_-.,;/()\t"), max_size=24)


@given(text=ASCII_NAMES)
@settings(max_examples=500, deadline=None)
def test_ascii_separators_split_as_the_regular_expressions(text: str) -> None:
    general = normalise._SEPARATORS.sub(" ", normalise._APOSTROPHES.sub("", text)).split()
    assert text.translate(normalise._ASCII_SEPARATORS).split() == general


@given(name=ASCII_NAMES)
@settings(max_examples=500, deadline=None)
def test_an_ascii_name_reads_as_its_readings(name: str) -> None:
    """A name in ASCII without brackets has only the readings of `_readings` (at most two: 1 as i, as l)."""
    assume(not normalise._ASCII_BRACKETS.intersection(name))
    readings: dict[tuple[str, ...], NameForm] = {}
    for read, folds in normalise._readings(name):
        readings.setdefault(read, NameForm(read, tuple(dict.fromkeys(folds))))
    assert name_forms(name) == name_forms(name, listed=True) == list(readings.values())


@given(address=st.text(alphabet=st.sampled_from("ACZa\u00c9\u03911,;- \t\n\u00a0\u2003\u200b"), max_size=8))
@settings(max_examples=1000, deadline=None)
def test_an_address_country_is_what_the_regular_expression_finds(address: str) -> None:
    found = re.search(r"(?:^|[\s,])([A-Z]{2})\s*$", address.strip())
    assert index._country(address) == (found.group(1) if found else None)


def test_a_bracket_ending_a_name_is_a_name_and_one_inside_is_optional() -> None:
    [whole, alias] = name_forms("Huawei Technologies Co., Ltd. (Huawei)")
    assert (whole.words, alias.words, alias.folds) == (
        ("huawei", "technology"),
        ("huawei",),
        ("bracketed part (Huawei)",),
    )
    [qualified] = name_forms("Moore Threads Intelligent Technology (Beijing) Co., Ltd.")
    assert qualified.words == ("moore", "thread", "intelligent", "technology", "beijing")
    assert qualified.optional == frozenset({"beijing"})


def test_an_affiliate_line_is_read_as_the_affiliate() -> None:
    listed = "Huawei Technologies Co., Ltd. (Huawei). Affiliated Entity: Huawei Marine Networks Co., Ltd."
    assert [form.words for form in name_forms(listed, listed=True)] == [("huawei", "marine", "network")]


@pytest.mark.parametrize(
    ("raw", "flags"),
    [
        pytest.param("Huawei", [], id="plain"),
        pytest.param("Hua\u200bwei", ["zero-width U+200B removed"], id="zwsp"),
        pytest.param(
            "\u202eiewauH\u202c", ["bidi control U+202E removed", "bidi control U+202C removed"], id="rlo"
        ),
        pytest.param("Hu\ufeffa\ufeffwei", ["zero-width U+FEFF removed"], id="bom-twice-once"),
    ],
)
def test_hidden_controls_are_named(raw: str, flags: list[str]) -> None:
    assert hidden_controls(raw) == flags
    assert ScreenedParty(role="buyer", name=raw).suspicious == flags


@pytest.mark.parametrize(
    "raw",
    ["", "   ", ".,-_/", "()\uff08\uff09", "\u200b\u200d"],
    ids=["empty", "spaces", "punct", "brackets", "zw"],
)
def test_nothing_left_reads_as_nothing_and_matches_nothing(raw: str, sample: ScreeningIndex) -> None:
    assert name_forms(raw) == []
    assert sample.match(buyer(raw), threshold=0) == []


def test_cjk_name_without_legal_form_matches_its_listed_form(sample: ScreeningIndex) -> None:
    assert "Moore Threads Intelligent Technology (Beijing) Co., Ltd." in entry_names(
        sample, "摩尔线程智能科技\uff08北京\uff09"
    )


# -- matching the bundled sample ----------------------------------------------------------------------
HUAWEI = "Huawei Technologies Co., Ltd."
SMIC = "Semiconductor Manufacturing International Corporation"
PHYTIUM = "Tianjin Phytium Information Technology"
SUNWAY = "Sunway Microelectronics"
MOORE = "Moore Threads Intelligent Technology (Beijing) Co., Ltd."
SUGON = "Sugon"


@pytest.mark.parametrize(
    ("party", "entry_name"),
    [
        pytest.param("HUAWEI TECHNOLOGIES CO LTD", HUAWEI, id="huawei-caps-no-dots"),
        pytest.param("Huawei Technologies Company Limited", HUAWEI, id="huawei-long-form"),
        pytest.param("huawei", HUAWEI, id="huawei-short"),
        pytest.param("华为技术有限公司", HUAWEI, id="huawei-cjk"),
        pytest.param("Sun Way Microelectronics", SUNWAY, id="sunway-spaced"),
        pytest.param("Sunway Micro-Electronics Ltd", SUNWAY, id="sunway-hyphen"),
        pytest.param("Moore Thread", MOORE, id="moore-near-spelling"),
        pytest.param("SMIC", SMIC, id="smic-short-exact"),
        pytest.param("S.M.I.C.", SMIC, id="smic-dotted"),
        pytest.param("Semiconductor Manufacturing International Corp", SMIC, id="smic-corp"),
        pytest.param("Dawning Information Industry Company", SUGON, id="sugon-alt-name"),
        pytest.param("中科曙光", SUGON, id="sugon-cjk"),
        pytest.param("Tianjin Phytium Information Technology Co., Ltd.", PHYTIUM, id="phytium-full"),
        pytest.param(
            "National Supercomputing Center in Wuxi", "National Supercomputing Center Wuxi", id="nsc"
        ),
        pytest.param("Cambricon", "Cambricon Technologies Corporation Limited", id="cambricon"),
    ],
)
def test_sample_hits(party: str, entry_name: str, sample: ScreeningIndex) -> None:
    matches = sample.match(buyer(party), THRESHOLD)
    found = {match.entry_name: match for match in matches}
    assert entry_name in found, [m.entry_name for m in matches]
    assert found[entry_name].score >= THRESHOLD
    assert found[entry_name].party_name == party


@pytest.mark.parametrize(
    "party",
    [
        pytest.param("ByteDance Ltd.", id="bytedance"),
        pytest.param("Alibaba Cloud Computing Co., Ltd.", id="alibaba-cloud"),
        pytest.param("Tencent Holdings Limited", id="tencent"),
        pytest.param("Moore Capital Management", id="moore-capital"),
        pytest.param("Huadong Technologies", id="huadong"),
        pytest.param("Technologies Inc", id="generic-word-alone"),
        pytest.param("Technology", id="generic-word-singular"),
        pytest.param("National Supercomputing Center Jinan", id="other-supercomputing-centre"),
        pytest.param("SMIT", id="smit"),
        pytest.param("ZTE", id="zte"),
        pytest.param("Sugar Land Holdings", id="sugar-land"),
        pytest.param("Sun", id="sun-short"),
        pytest.param("Beijing", id="city-alone"),
        # A listed name inside a longer one with words that say more is another party (the full list
        # names Huawei Cloud itself); only words that say little may be added ("Technologies").
        pytest.param("Huawei Cloud Computing Technologies Co., Ltd.", id="huawei-inside-longer"),
        pytest.param("Star Sugon Holdings", id="listed-word-among-others"),
    ],
)
def test_sample_near_misses(party: str, sample: ScreeningIndex) -> None:
    assert sample.match(buyer(party), THRESHOLD) == []


def test_one_match_per_entry_with_the_best_scoring_name(sample: ScreeningIndex) -> None:
    # "Huawei Technologies Company Limited" is both the entry's name (after normalising) and an alt name.
    matches = sample.match(buyer("Huawei Technologies Company Limited"), THRESHOLD)
    assert [m.entry_name for m in matches] == [HUAWEI]
    assert matches[0].score == 100.0
    assert matches[0].matched_name in {HUAWEI, "Huawei Technologies Company Limited"}


def test_short_alt_name_matches_exactly_with_its_own_spelling(sample: ScreeningIndex) -> None:
    [match] = sample.match(buyer("smic"), THRESHOLD)
    assert (match.entry_name, match.matched_name, match.score) == (SMIC, "SMIC", 100.0)


def test_matches_sorted_best_first_then_by_name(sample: ScreeningIndex) -> None:
    # "Biren" is an alt name of the Beijing Biren entry; "Shanghai Biren" lacks only a city word.
    matches = sample.match(buyer("Biren"), threshold=30)
    assert [m.entry_name for m in matches] == [
        "Beijing Biren Technology Development Co., Ltd.",
        "Shanghai Biren Intelligent Technology Co., Ltd.",
    ]
    assert matches[0].score == 100.0 and matches[0].matched_name == "Biren"
    assert 30 <= matches[1].score < THRESHOLD
    assert sample.match(buyer("Biren"), THRESHOLD) == matches[:1]


def test_short_listed_names_match_only_exactly() -> None:
    index = ScreeningIndex(csl_list({"source": EL, "name": "ZTE Corporation", "alt_names": "ZX"}))
    assert len(name_forms("ZTE Corporation")[0].compact) < MIN_FUZZY_LENGTH
    assert entry_names(index, "ZTE") == ["ZTE Corporation"]
    assert entry_names(index, "Z.T.E. Corp.") == ["ZTE Corporation"]
    assert entry_names(index, "zx") == ["ZTE Corporation"]
    for near in ("ZTF", "ZTEE", "ZTE Kangxun", "ZXY"):
        assert entry_names(index, near, threshold=0) == [], near


def test_screen_covers_every_party(sample: ScreeningIndex) -> None:
    parties = [
        ScreenedParty(role="buyer", name="ByteDance Ltd."),
        ScreenedParty(role="end_user", name="Sugon Information Industry Co., Ltd."),
        ScreenedParty(role="consignee", name="SMIC"),
    ]
    matches = sample.screen(parties, THRESHOLD)
    assert [(m.role, m.entry_name) for m in matches] == [("end_user", SUGON), ("consignee", SMIC)]


# -- threshold and match fields -----------------------------------------------------------------------


def similarity(party: str, listed: str) -> float:
    """0 to 100: how well a party's name matches one listed name, scored as `ScreeningIndex` does."""
    entry = ScreeningEntry(source="-", name=listed)
    info = ScreeningListInfo(version="-", sha256="-", source="-", loaded_at=None, entries=1, names=1)
    found = ScreeningIndex(ScreeningList(info=info, entries=[entry])).match(
        ScreenedParty(role="buyer", name=party), threshold=0
    )
    return found[0].score if found else 0.0


def test_threshold_decides_a_near_spelling(sample: ScreeningIndex) -> None:
    party = "Huawai Technologys"
    score = similarity(party, HUAWEI)
    assert 85 <= score < 100
    assert entry_names(sample, party, threshold=85) == [HUAWEI]
    assert entry_names(sample, party, threshold=99.9) == []
    [match] = sample.match(buyer(party), threshold=85)
    assert 85 <= match.score < 100


def test_similarity() -> None:
    assert similarity("Huawei Technologies Co., Ltd.", "HUAWEI TECHNOLOGIES CO LTD") == 100.0
    assert similarity("Sun Way", "Sunway") == 100.0
    assert similarity("Zhong Ke Shu Guang", "Zhongke Shuguang") == 100.0
    assert similarity("Zhongkeshuguang", "Zhongke Shuguang") == 100.0
    # Words the listed name lacks cost what they say: in a list of one, every word says much.
    assert similarity("Huawei Technologies", "Huawei") < THRESHOLD
    assert similarity("Huawei", "Huawei Technologies") < THRESHOLD
    assert similarity("", "Huawei") == 0.0
    assert similarity("Huawei", "Ltd.") == 0.0


def test_match_fields() -> None:
    index = ScreeningIndex(csl_list(*ACME_ROWS))
    party = ScreenedParty(role="consignee", name="ACME QUANTUM Co Ltd")
    [match] = index.match(party, THRESHOLD)
    assert match.role == "consignee"
    assert match.party_name == "ACME QUANTUM Co Ltd"
    assert match.entry_name == "Acme Quantum Devices Co., Ltd."
    assert match.matched_name == "Acme Quantum"  # the alt name scored 100, the name less
    assert match.entity_number == "EL-0001"
    assert match.source == EL
    assert match.programs == ["EAR", "CHINA-EL"]
    assert match.score == 100.0

    [sdn] = index.match(ScreenedParty(role="end_user", name="Zenith Trading"), THRESHOLD)
    assert (sdn.role, sdn.entry_name, sdn.matched_name) == (
        "end_user",
        "Zenith Trading LLC",
        "Zenith Trading LLC",
    )
    assert (sdn.entity_number, sdn.source, sdn.programs) == ("SDN-7", SDN, ["SDGT"])


# -- parties_of ---------------------------------------------------------------------------------------
def party(name: str, kind: PartyKind = PartyKind.PRIVATE) -> dict[str, str]:
    return Party(name=name, country="CN", kind=kind).model_dump(mode="json")


def test_parties_of_buyer_only() -> None:
    request = make_request(buyer=party("ByteDance Ltd."), end_user=None, consignees=None)
    assert parties_of(request) == [ScreenedParty(role="buyer", name="ByteDance Ltd.")]


def test_parties_of_skips_end_user_who_is_the_buyer() -> None:
    request = make_request(buyer=party("ByteDance Ltd."), end_user=party("ByteDance Ltd."))
    assert [p.role for p in parties_of(request)] == ["buyer"]


def test_parties_of_everyone_in_order() -> None:
    request = make_request(
        buyer=party("ByteDance Ltd."),
        end_user=party("Volcano Engine", PartyKind.PRIVATE),
        consignees=[
            party("Shenzhen Logistics Co."),
            party("Hong Kong Forwarding Ltd."),
            party("ByteDance Ltd."),
        ],
    )
    assert parties_of(request) == [
        ScreenedParty(role="buyer", name="ByteDance Ltd."),
        ScreenedParty(role="end_user", name="Volcano Engine"),
        ScreenedParty(role="consignee", name="Shenzhen Logistics Co."),
        ScreenedParty(role="consignee", name="Hong Kong Forwarding Ltd."),
        ScreenedParty(role="consignee", name="ByteDance Ltd."),  # every consignee, even the buyer
    ]


def test_request_screened_against_sample(sample: ScreeningIndex) -> None:
    request = make_request(
        buyer=party("ByteDance Ltd."),
        end_user=party("Dawning Information Industry Co., Ltd.", PartyKind.STATE_OWNED),
        consignees=[party("Acme Freight"), party("Sun Way Microelectronics")],
    )
    matches = sample.screen(parties_of(request), THRESHOLD)
    assert [(m.role, m.party_name, m.entry_name) for m in matches] == [
        ("end_user", "Dawning Information Industry Co., Ltd.", SUGON),
        ("consignee", "Sun Way Microelectronics", SUNWAY),
    ]


# -- parse_csl ----------------------------------------------------------------------------------------
def test_parse_csl_valid_file_with_bom() -> None:
    text = csl_text(
        {
            **ACME_ROWS[0],
            "alt_names": " Acme Quantum ;; 阿克米量子器件有限公司; Acme Quantum Devices Co., Ltd.;",
            "start_date": "2024-01-02",
            "federal_register_notice": "89 FR 1234",
            "license_requirement": "For all items subject to the EAR.",
            "license_policy": "Presumption of denial.",
            "source_list_url": "https://www.bis.gov/entity-list",
        },
        ACME_ROWS[1],
        bom=True,
    )
    parsed = parse_csl(text, source="csl.csv", loaded_at=LOADED_AT)
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()

    acme, zenith = parsed.entries
    assert acme == ScreeningEntry(
        source=EL,
        name="Acme Quantum Devices Co., Ltd.",
        id="t-1",
        entity_number="EL-0001",
        type="Entity",
        programs=["EAR", "CHINA-EL"],
        addresses=["1 Road, Shenzhen, CN", "2 Street, Hefei, CN"],
        alt_names=["Acme Quantum", "阿克米量子器件有限公司", "Acme Quantum Devices Co., Ltd."],
        start_date="2024-01-02",
        federal_register_notice="89 FR 1234",
        license_requirement="For all items subject to the EAR.",
        license_policy="Presumption of denial.",
        source_list_url="https://www.bis.gov/entity-list",
    )
    assert zenith.name == "Zenith Trading LLC"
    assert (zenith.programs, zenith.addresses, zenith.alt_names) == (["SDGT"], [], [])
    assert zenith.type == "Entity"
    assert zenith.start_date is None  # an empty cell is None, not ""

    info = parsed.info
    assert info.sha256 == sha256
    assert info.version == f"csl-{sha256[:12]}-20260301T093015Z"
    assert info.version.startswith("csl-")
    assert info.source == "csl.csv"
    assert info.loaded_at == LOADED_AT
    assert info.entries == 2
    assert info.names == 3 + 1  # the alt name equal to the name counts once


def test_parse_csl_without_load_time_is_a_sample() -> None:
    text = csl_text(*ACME_ROWS)
    info = parse_csl(text, source="s", loaded_at=None).info
    assert info.version == f"sample-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    assert info.loaded_at is None


def test_parse_csl_version_pins_content_and_moment() -> None:
    first = csl_list(*ACME_ROWS).info
    assert csl_list(*ACME_ROWS).info == first
    later = csl_list(*ACME_ROWS, loaded_at=LOADED_AT + timedelta(days=1)).info
    assert (later.sha256, later.version != first.version) == (first.sha256, True)
    other = csl_list(ACME_ROWS[0]).info
    assert other.sha256 != first.sha256
    assert other.version != first.version


def test_parse_csl_version_stamp_is_utc() -> None:
    beijing = LOADED_AT.astimezone(timezone(timedelta(hours=8)))
    info = parse_csl(csl_text(*ACME_ROWS), source="s", loaded_at=beijing).info
    assert info.loaded_at == LOADED_AT
    assert info.version.endswith("-20260301T093015Z")


def test_bundled_sample() -> None:
    sample_list = bundled_list()
    assert sample_list.info.version.startswith("sample-")
    assert sample_list.info.loaded_at is None
    assert sample_list.info.entries == len(sample_list.entries) == 10
    assert sample_list.info.names == 38
    sugon = next(e for e in sample_list.entries if e.name == "Sugon")
    assert "中科曙光" in sugon.alt_names
    assert "Dawning Information Industry Co." in sugon.alt_names


def bad_header() -> str:
    return CSL_HEADER.replace(",name,", ",entity_name,")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", ["empty"], id="empty"),
        pytest.param("\ufeff", ["empty"], id="bom-only"),
        pytest.param("\n\n", ["empty"], id="blank-lines"),
        pytest.param(
            bad_header() + "\nx,EL,,,,Acme\n",
            ["header", "missing column(s) name (", "entity_name"],
            id="no-name",
        ),
        pytest.param("name\nAcme\n", ["header", "missing column(s) source ("], id="no-source"),
        pytest.param(
            csl_text({"source": EL, "name": "  "}), ["row 2, column name", "empty"], id="empty-name"
        ),
        pytest.param(
            csl_text({"source": EL, "name": "Acme"}, {"source": EL, "name": ""}),
            ["row 3, column name"],
            id="empty-name-row-3",
        ),
        pytest.param(csl_text({"source": "", "name": "Acme"}), ["row 2, column source"], id="empty-source"),
        pytest.param(
            CSL_HEADER + "\n" + "x," * len(CSL_COLUMNS) + "extra\n",
            ["row 2", f"more fields than the {len(CSL_COLUMNS)} columns"],
            id="too-many-fields",
        ),
        pytest.param(CSL_HEADER + "\n", ["header but no entries"], id="header-only"),
        pytest.param("\ufeff" + CSL_HEADER + "\n\n", ["header but no entries"], id="header-and-blank-line"),
    ],
)
def test_parse_csl_rejects(text: str, expected: list[str]) -> None:
    with pytest.raises(ScreeningListError) as raised:
        parse_csl(text, source="bad.csv", loaded_at=LOADED_AT)
    assert isinstance(raised.value, ValueError)
    for part in expected:
        assert part in str(raised.value)


def test_parse_csl_rejects_unterminated_quote() -> None:
    text = CSL_HEADER + '\nx-1,EL,,,,"Acme Quantum\nx-2,EL,,,,Zenith Trading\nx-3,EL,,,,Huawei\n'
    with pytest.raises(ScreeningListError, match="row"):
        parse_csl(text, source="truncated.csv", loaded_at=LOADED_AT)


def test_short_rows_blank_lines_and_absent_columns() -> None:
    """A row with fewer fields than the header has the rest empty, a blank line is skipped, and the
    columns a file lacks are empty; a bad row after a blank line is named by its own line."""
    text = "name,source,alt_names,programs\nAcme,EL,A1; A2\n\n Zenith ,SDN,,X;;Y\n"
    acme, zenith = parse_csl(text, source="s", loaded_at=LOADED_AT).entries
    assert acme == ScreeningEntry(source="EL", name="Acme", alt_names=["A1", "A2"])
    assert zenith == ScreeningEntry(source="SDN", name="Zenith", programs=["X", "Y"])
    with pytest.raises(ScreeningListError, match=r"^row 4, column source: must not be empty"):
        parse_csl("name,source\nAcme,EL\n\nZenith\n", source="s", loaded_at=LOADED_AT)
    with pytest.raises(ScreeningListError, match=r"^header: not valid CSV"):
        parse_csl('name,"source\n', source="s", loaded_at=LOADED_AT)


def test_quoted_newline_inside_a_field_is_kept() -> None:
    text = csl_text({"source": EL, "name": "Acme", "addresses": "Line 1\nLine 2; Other"})
    [entry] = parse_csl(text, source="s", loaded_at=LOADED_AT).entries
    assert entry.addresses == ["Line 1\nLine 2", "Other"]


# -- scale --------------------------------------------------------------------------------------------
def synthetic_word(rng: random.Random) -> str:
    """Consonant-vowel pairs: pronounceable, and never one of the target's words (which have vowel runs)."""
    return "".join(rng.choice("bcdfghjklmnprstvwz") + rng.choice("aeiou") for _ in range(4)).capitalize()


def test_twenty_thousand_entries_match_the_one_right_entry() -> None:
    rng = random.Random(20260301)
    suffixes = ["Co., Ltd.", "Limited", "Inc.", "GmbH", "LLC", "Corporation", ""]
    entries = [
        ScreeningEntry(
            source=EL,
            name=f"{synthetic_word(rng)} {synthetic_word(rng)} {rng.choice(suffixes)}".strip(),
            entity_number=f"N-{i:05d}",
            alt_names=[synthetic_word(rng) + " " + synthetic_word(rng)] if i % 3 == 0 else [],
        )
        for i in range(20_000)
    ]
    target = 13_579
    entries[target] = ScreeningEntry(
        source=EL,
        name="Quaint Aeolian Devices Co., Ltd.",
        entity_number="TARGET",
        alt_names=["Quaint Aeolian", "奇异风神器件有限公司"],
    )
    info = ScreeningListInfo(
        version="synthetic", sha256="-", source="synthetic", loaded_at=None, entries=len(entries), names=0
    )
    index = ScreeningIndex(ScreeningList(info=info, entries=entries))
    assert index.entries == 20_000
    # A listed name inside a longer one with words that say as much is not a hit.
    assert index.match(buyer("Quaint Aeolian Cloud Computing"), THRESHOLD) == []

    for query in (
        "QUAINT AEOLIAN DEVICES CO LTD",
        "Quaint Aeolian Devices Company Limited",
        "Quaint-Aeolian Devises",
        "奇异风神器件有限公司",
    ):
        matches = index.match(buyer(query), THRESHOLD)
        assert [m.entity_number for m in matches] == ["TARGET"], query

    # Any one synthetic entry is found by its own name, and only it.
    probe = entries[4_242]
    assert [m.entity_number for m in index.match(buyer(probe.name.upper()), THRESHOLD)] == ["N-04242"]
    assert index.match(buyer("Entirely Unlisted Party"), THRESHOLD) == []
