"""Restricted-party screening: every party's name against a screening list, as a compliance officer
would read it.

- `normalise`: a name folded to the words it is matched on (legal forms, brackets, homoglyphs,
  invisible controls, leet, Chinese script as pinyin), every disguising fold recorded.
- `score`: one party name against one listed name, words weighted by how rare they are in the list.
- `index`: the list prepared once, an inverted index that picks the few names worth scoring.
- `csl`: the CSL CSV format; `models`: entries, parties and the explained matches.

Pure: no I/O but package data (the bundled sample, Unicode's confusables, pinyin readings).
"""

from chipclear.domain.screening.csl import (
    REQUIRED_COLUMNS,
    SAMPLE_LIST,
    ScreeningListError,
    bundled_list,
    parse_csl,
)
from chipclear.domain.screening.index import ScreeningIndex
from chipclear.domain.screening.models import (
    DumpedList,
    PartyRole,
    ScreenedParty,
    ScreeningEntry,
    ScreeningList,
    ScreeningListInfo,
    ScreeningMatch,
    parties_of,
)
from chipclear.domain.screening.normalise import NameForm, hidden_controls, name_forms
from chipclear.domain.screening.score import MIN_FUZZY_LENGTH

__all__ = [
    "MIN_FUZZY_LENGTH",
    "REQUIRED_COLUMNS",
    "SAMPLE_LIST",
    "DumpedList",
    "NameForm",
    "PartyRole",
    "ScreenedParty",
    "ScreeningEntry",
    "ScreeningIndex",
    "ScreeningList",
    "ScreeningListError",
    "ScreeningListInfo",
    "ScreeningMatch",
    "bundled_list",
    "hidden_controls",
    "name_forms",
    "parse_csl",
    "parties_of",
]
