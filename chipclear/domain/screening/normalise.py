"""A name folded to the words it is matched on, with a record of every fold a disguise needed.

Listed names and the names buyers write differ in ways that say nothing about who a party is (legal
forms, brackets, spacing, abbreviations, Chinese script or its pinyin), and in ways a buyer may choose
to hide a listed party: a Cyrillic a (U+0430) in "Huawei", a zero-width space, a right-to-left override that
displays `Huawei`, `Hu4wei`. Both sides are folded the same way, so what remains is what names a
party; the folds that disguise a name are recorded, so a hit says how it was seen.

Pure: the two tables that come from packages (Unicode's confusables, UTS #39, and pypinyin's readings)
are package data, loaded on the first name that needs them, never by a workflow: workflows only ask
`hidden_controls`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

# -- invisible characters ------------------------------------------------------------------------------
# Bidi controls: embeddings, overrides, isolates and marks. An override (RLO) makes `\u202eiewauH`
# display as "Huawei"; read in logical order it is "iewauH".
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
RIGHT_TO_LEFT_OVERRIDE = "\u202e"
POP_DIRECTIONAL = frozenset("\u202c\u2069")


def hidden_controls(name: str) -> list[str]:
    """The invisible characters in `name` (format characters: zero-width, bidi controls), each once."""
    found: dict[str, None] = {}
    for char in name:
        if unicodedata.category(char) == "Cf":
            kind = "bidi control" if char in BIDI_CONTROLS else "zero-width"
            found[f"{kind} U+{ord(char):04X} removed"] = None
    return list(found)


def _visual_order(name: str) -> str:
    """`name` as it displays: each right-to-left override's text reversed, up to its pop."""
    out: list[str] = []
    reversed_run: list[str] | None = None
    for char in name:
        if char == RIGHT_TO_LEFT_OVERRIDE:
            reversed_run = []
        elif char in POP_DIRECTIONAL and reversed_run is not None:
            out += reversed(reversed_run)
            reversed_run = None
        elif reversed_run is not None:
            reversed_run.append(char)
        else:
            out.append(char)
    if reversed_run is not None:
        out += reversed(reversed_run)
    return "".join(out)


# -- words that name no one -----------------------------------------------------------------------------
# Legal forms, replaced wherever they stand: multi-word forms first (as token tuples), then single words.
LEGAL_PHRASES: tuple[tuple[str, ...], ...] = tuple(
    tuple(phrase.split())
    for phrase in sorted(
        [
            "limited liability company",
            "limited liability partnership",
            "public joint stock company",
            "open joint stock company",
            "closed joint stock company",
            "joint stock company",
            "public limited company",
            "private limited company",
            "company limited",
            "co ltd",
            "sdn bhd",
            "societe anonyme",
            "sociedad anonima",
            "aktsionernoe obshchestvo",
            "obshchestvo s ogranichennoi otvetstvennostyu",
            "gufen youxian gongsi",
            "youxian zeren gongsi",
            "youxian gongsi",
            "gufen gongsi",
        ],
        key=lambda phrase: -len(phrase.split()),
    )
)
LEGAL_WORDS = frozenset({
    "co", "company", "corp", "corporation", "inc", "incorporated", "ltd", "limited", "llc", "llp", "plc",
    "gmbh", "ag", "sa", "sarl", "srl", "spa", "bv", "nv", "pte", "pvt", "bhd", "jsc", "ojsc", "cjsc", "pjsc",
    "ooo", "zao", "oao", "pao", "kk", "oy", "ab", "ltda", "fze", "fzco", "fzc", "gongsi",
})  # fmt: skip
_PHRASES_BY_FIRST: dict[str, list[tuple[str, ...]]] = {}
for _phrase in LEGAL_PHRASES:
    _PHRASES_BY_FIRST.setdefault(_phrase[0], []).append(_phrase)
STOP_WORDS = frozenset(["the", "of", "and", "for", "in", "at", "de", "la", "del", "le", "des"])
# Chinese legal forms, longest first: dropped from the Chinese script before it is read as pinyin.
CJK_LEGAL_FORMS = ("股份有限公司", "有限责任公司", "有限公司", "股份公司", "公司")
# Abbreviations lists and buyers both use, spelt out on both sides.
SYNONYMS = {
    "intl": "international",
    "natl": "national",
    "tech": "technology",
    "technol": "technology",
    "techn": "technology",
    "mfg": "manufacturing",
    "elec": "electronic",
    "sci": "science",
    "info": "information",
    "grp": "group",
    "ctr": "center",
    "centre": "center",
    "hldgs": "holding",
    "hldg": "holding",
    "dev": "development",
    "inst": "institute",
    "univ": "university",
    "bros": "brother",
    # Pinyin of the business words GLOSSARY reads in English, as lists spell them in Latin letters.
    "jishu": "technology",
    "keji": "technology",
    "xinxi": "information",
    "jituan": "group",
    "guoji": "international",
    "dianzi": "electronic",
    "zhineng": "intelligent",
    "kaifa": "development",
    "fazhan": "development",
    "daxue": "university",
    "bandaoti": "semiconductor",
}
# Chinese business words with the English word lists use for them: 华为技术 is "Huawei Technologies".
GLOSSARY = {
    "技术": "technology",
    "科技": "technology",
    "信息": "information",
    "集团": "group",
    "国际": "international",
    "微电子": "microelectronic",
    "电子": "electronic",
    "半导体": "semiconductor",
    "集成电路": "integrated circuit",
    "智能": "intelligent",
    "中心": "center",
    "研究所": "research institute",
    "研究院": "research institute",
    "大学": "university",
    "国家": "national",
    "超级计算": "supercomputing",
    "工业": "industry",
    "产业": "industry",
    "制造": "manufacturing",
    "发展": "development",
    "开发": "development",
    "控股": "holding",
    "软件": "software",
    "通信": "communication",
    "网络": "network",
}
# Letters that pass for another Latin letter than the one Unicode's skeleton gives them (in
# "S\u0443gon" the Cyrillic u, U+0443, stands for u, not y; a capital iota for I, not l): read both ways.
ALTERNATE_READINGS = {
    "\u0399": "i", "\u0406": "i",
    "\u0443": "u", "\u0438": "u", "\u043f": "n", "\u043d": "h", "\u0442": "t", "\u043a": "k", "\u043c": "m",
    "\u0433": "r",
}  # fmt: skip
_ALTERNATES = str.maketrans(ALTERNATE_READINGS)
# Digits written for letters inside a word ("Hu4wei", "Techn0logies"); `1` reads as i or l.
LEET = {"4": "a", "0": "o", "3": "e", "5": "s", "1": "i"}
LEET_ONE_AS_L = {**LEET, "1": "l"}

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_ASCII_BRACKETS = frozenset("([{")  # the opening brackets of `_BRACKETS` that are ASCII
_BRACKETS = re.compile(r"[(\[{\u3010]([^)\]}\u3011]*)[)\]}\u3011]")  # after NFKC: no fullwidth ones
_APOSTROPHES = re.compile("['`\u2018\u2019\u00b4]")
_SEPARATORS = re.compile(r"[\W_]+")
# What `_APOSTROPHES` and `_SEPARATORS` do to a text in ASCII (most names), in one pass: every character
# but a letter or a digit a space, an apostrophe removed.
_ASCII_SEPARATORS = str.maketrans(
    {chr(code): None if chr(code) in "'`" else " " for code in range(128) if not chr(code).isalnum()}
)
_ASCII_DIGITS = frozenset("0123456789")
_JOINED_AMPERSAND = re.compile(r"(?<=\w)&(?=\w)")
_ORDINAL = re.compile(r"^\d+(st|nd|rd|th)$")
_AFFILIATE = re.compile(r"affiliated entity:", re.IGNORECASE)


@dataclass(frozen=True)
class NameForm:
    """One reading of a name: the words it is matched on, and the folds that produced them."""

    words: tuple[str, ...]
    folds: tuple[str, ...] = field(default=())
    optional: frozenset[str] = field(default=frozenset())  # bracketed words: leaving them out costs less

    @property
    def compact(self) -> str:
        return "".join(self.words)


# -- package tables, loaded once on first need -----------------------------------------------------------
@cache
def _latin_skeleton() -> dict[str, str]:
    """Every character Unicode's confusables (UTS #39) says looks like one Latin letter or digit."""
    # The package's data file, read as its `confusables` module reads it, without the module's
    # imports (urllib among them: a tenth of a second or more in every process that folds a list).
    confusables_data = json.loads(
        (resources.files("confusable_homoglyphs") / "confusables.json").read_bytes()
    )
    table: dict[str, str] = {}
    for char, glyphs in confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        for glyph in glyphs:
            text = glyph["c"]
            if len(text) == 1 and text.isascii() and text.isalnum():
                table[char] = text.casefold()
                break
    return table


def _pinyin(text: str) -> list[str]:
    from pypinyin import lazy_pinyin

    return [syllable for syllable in lazy_pinyin(text, errors="ignore") if syllable.strip()]


def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0].title() if name else f"U+{ord(char):04X}"


# -- folding ----------------------------------------------------------------------------------------------
def _fold_letters(text: str, folds: list[str]) -> str:
    """Homoglyphs to Latin (in words that mix scripts or are made only of look-alikes), then accents off."""
    if text.isascii():
        return text
    skeleton = _latin_skeleton()
    out: list[str] = []
    for word in re.split(r"(\W+)", text):
        foreign = [c for c in word if not c.isascii() and c.isalpha() and not _CJK.match(c)]
        if foreign and all(c in skeleton for c in foreign):
            mixed = any(c.isascii() and c.isalpha() for c in word)
            if mixed or len(foreign) == len(word):
                for char in dict.fromkeys(foreign):
                    folds.append(f"homoglyph: {_script(char)} '{char}' read as '{skeleton[char]}'")
                word = "".join(skeleton.get(c, c) for c in word)
        out.append(word)
    text = unicodedata.normalize("NFKD", "".join(out))
    return "".join(c for c in text if not unicodedata.combining(c))


def _cjk_forms(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """Chinese script read aloud: once as pinyin syllables, once with business words in English."""
    runs = _CJK.findall(text)
    if not runs:
        return [(text, ())]
    plain, glossed = text, text
    folds: list[str] = []
    for run in runs:
        bare = run
        for form in CJK_LEGAL_FORMS:
            bare = bare.replace(form, "")
        if not bare and run != text.strip():
            plain, glossed = plain.replace(run, " ", 1), glossed.replace(run, " ", 1)
            continue  # a legal form written apart, after a bracket: "摩尔线程智能科技 (北京) 有限责任公司"
        bare = bare or run
        folds.append(f"pinyin of {bare}")
        plain = plain.replace(run, " " + " ".join(_pinyin(bare)) + " ", 1)
        words: list[str] = []
        rest, pending = bare, ""
        while rest:
            for size in (4, 3, 2):
                english = GLOSSARY.get(rest[:size])
                if english is not None:
                    words += [*_pinyin(pending), english]
                    rest, pending = rest[size:], ""
                    break
            else:
                pending, rest = pending + rest[0], rest[1:]
        words += _pinyin(pending)  # read together: a character's reading depends on its neighbours
        glossed = glossed.replace(run, " " + " ".join(words) + " ", 1)
    forms = [(plain, tuple(folds))]
    if glossed != plain:
        forms.append((glossed, (*folds, "Chinese business words read in English")))
    return forms


def _stem(word: str) -> str:
    word = SYNONYMS.get(word, word)
    if len(word) >= 6 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) >= 5 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return SYNONYMS.get(word[:-1], word[:-1])
    return word


# Each word's stem, by the word as written: names share most of their words ("technology", "co"), so
# each is worked out once. Bounded: a worker screening names for months must not keep them all.
_STEMS: dict[str, str] = {}
_STEMS_KEPT = 100_000
# A word that is a legal form or a stop word, or starts a legal phrase: a name with none needs no walk.
_DROPPED_OR_PHRASE = LEGAL_WORDS | STOP_WORDS | frozenset(_PHRASES_BY_FIRST)


def _stemmed(word: str) -> str:
    stem = _STEMS.get(word)
    if stem is None:
        if len(_STEMS) >= _STEMS_KEPT:
            _STEMS.clear()
        stem = _STEMS[word] = _stem(word)
    return stem


def _leet(word: str, leet: dict[str, str], folds: list[str]) -> str:
    """Digits inside a word of letters: "hu4wei", "techn0logies" (not "5g", "14th", "a123")."""
    letters = sum(c.isalpha() for c in word)
    if letters >= 2 and not _ORDINAL.match(word):
        digits = [c for c in word if c.isdigit()]
        if all(d in leet for d in digits):
            for digit in dict.fromkeys(digits):
                folds.append(f"leet: '{digit}' read as '{leet[digit]}'")
            return "".join(leet.get(c, c) for c in word)
    return word


def _words(text: str, one_as_l: bool, folds: list[str]) -> tuple[str, ...]:
    if "&" in text:
        text = _JOINED_AMPERSAND.sub("", text).replace("&", " and ")  # AT&T, R&D
    if text.isascii():
        words = text.translate(_ASCII_SEPARATORS).split()
        plain = _ASCII_DIGITS.isdisjoint(text)  # then every word is letters only: no leet to read
    else:
        words = _SEPARATORS.sub(" ", _APOSTROPHES.sub("", text)).split()
        plain = False
    leet = LEET_ONE_AS_L if one_as_l else LEET
    folded = (
        words
        if plain
        else [word if word.isalpha() or word.isdigit() else _leet(word, leet, folds) for word in words]
    )
    # Single letters in a row are one acronym: "s m i c" is "smic".
    joined = folded
    if 1 in map(len, folded):
        joined = []
        acronym = False
        for word in folded:
            single = len(word) == 1 and word.isalpha()
            if single and acronym:
                joined[-1] += word
            else:
                joined.append(word)
                acronym = single
    stems = _STEMS
    stemmed = [stems.get(word) or _stemmed(word) for word in joined]
    if _DROPPED_OR_PHRASE.isdisjoint(stemmed):
        return tuple(dict.fromkeys(stemmed))
    kept = _without_legal_forms(stemmed)
    return tuple(dict.fromkeys(kept or stemmed))


def _without_legal_forms(words: list[str]) -> list[str]:
    kept: list[str] = []
    i = 0
    while i < len(words):
        for phrase in _PHRASES_BY_FIRST.get(words[i], ()):
            if tuple(words[i : i + len(phrase)]) == phrase:
                i += len(phrase)
                break
        else:
            if words[i] not in LEGAL_WORDS and words[i] not in STOP_WORDS:
                kept.append(words[i])
            i += 1
    return kept


def _brackets(text: str) -> list[tuple[str, str | None, tuple[str, ...]]]:
    """(text, the text without its bracketed parts, folds). A bracket that ends the name ("... Co.,
    Ltd. (Huawei)", "(NSCC-GZ)") is another name for it: the name without it, and it alone. A bracket
    inside the name qualifies it: kept inline, its words optional ("(Beijing)" may be left out, while
    "(Bolivia)" still tells another entry apart)."""
    found = list(_BRACKETS.finditer(text))
    if not found:
        return [(text, None, ())]
    forms: list[tuple[str, str | None, tuple[str, ...]]] = []
    last = found[-1]
    if not text[last.end() :].strip(" .,;") and last.group(1).strip():
        forms.append((last.group(1), None, (f"bracketed part ({last.group(1).strip()})",)))
        text = text[: last.start()]
        found.pop()
    if found:
        forms.insert(0, (_BRACKETS.sub(lambda m: f" {m.group(1)} ", text), _BRACKETS.sub(" ", text), ()))
    else:
        forms.insert(0, (text, None, ()))
    return forms


def name_forms(name: str, *, listed: bool = False) -> list[NameForm]:
    """Every reading of `name` worth matching, the plain one first, each with its folds; none if
    nothing of the name is left (punctuation only)."""
    if listed and "ffiliated" in name:
        parts = _AFFILIATE.split(name)
        name = parts[-1] if len(parts) > 1 and parts[-1].strip() else name
    if name.isascii() and not _ASCII_BRACKETS.intersection(name):
        # Most names, listed or not: nothing to remove, reorder, read twice or split off (NFKC leaves
        # ASCII as it is), so only its readings remain; without a 1 (read as i and as l), one.
        if "1" not in name:
            leet: list[str] = []
            read = _words(name.lower(), False, leet)  # lower: ASCII's casefold
            return [NameForm(read, tuple(dict.fromkeys(leet)))] if read else []
        plain: dict[tuple[str, ...], NameForm] = {}
        for words, folds in _readings(name):
            plain.setdefault(words, NameForm(words, tuple(dict.fromkeys(folds))))
        return list(plain.values())
    base_folds: list[str] = []
    texts = [name]
    visual_texts: set[str] = set()
    alternates: dict[str, tuple[str, ...]] = {}
    if not name.isascii():  # most names, listed or not, are: none of what follows applies to them
        base_folds = hidden_controls(name)
        texts = ["".join(c for c in name if unicodedata.category(c) != "Cf")]
        if RIGHT_TO_LEFT_OVERRIDE in name:
            visual = "".join(c for c in _visual_order(name) if unicodedata.category(c) != "Cf")
            texts.append(visual)
            visual_texts = {visual, visual.translate(_ALTERNATES)}
        read = tuple(
            f"homoglyph: {_script(c)} '{c}' read as '{ALTERNATE_READINGS[c]}'"
            for c in dict.fromkeys(name)
            if c in ALTERNATE_READINGS
        )
        if read:
            alternates = {text.translate(_ALTERNATES): read for text in texts}
            texts += list(alternates)
    forms: dict[tuple[str, ...], NameForm] = {}
    for raw in texts:
        order: tuple[str, ...] = (
            ("read in display order (right-to-left override)",) if raw in visual_texts else ()
        )
        order += alternates.get(raw, ())
        text = unicodedata.normalize("NFKC", raw)
        width = ("fullwidth or compatibility characters",) if text != raw and not raw.isascii() else ()
        for bracketed, outside, bracket_folds in _brackets(text):
            kept = {words for words, _ in _readings(outside)} if outside is not None else set()
            for words, folds in _readings(bracketed):
                optional = frozenset(words).difference(*kept) if kept else frozenset()
                every = (*base_folds, *order, *width, *bracket_folds, *folds)
                forms.setdefault(words, NameForm(words, tuple(dict.fromkeys(every)), optional))
    return list(forms.values())


def _readings(text: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The words of `text` read as pinyin and in English (Chinese script), 1 as i and as l (leet)."""
    readings = []
    for cjk_text, cjk_folds in _cjk_forms(text) if not text.isascii() else [(text, ())]:
        letter_folds: list[str] = []
        latin = _fold_letters(cjk_text, letter_folds).casefold()
        for one_as_l in (False, True) if "1" in latin else (False,):
            leet_folds: list[str] = []
            words = _words(latin, one_as_l, leet_folds)
            if not words or (one_as_l and not any("'1'" in f for f in leet_folds)):
                continue
            readings.append((words, (*cjk_folds, *letter_folds, *leet_folds)))
    return readings
