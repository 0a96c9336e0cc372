"""What screening reads and what it answers: list entries, the parties screened, and each match with
the reasons it was found, so an officer can judge a hit without re-running the matcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chipclear.domain.models import ImportRequest, UtcDatetime
from chipclear.domain.screening.normalise import hidden_controls

PartyRole = Literal["buyer", "end_user", "consignee"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScreeningEntry(_Frozen):
    """One row of a CSL file: a listed party and the names it is known by."""

    source: str
    name: str
    id: str | None = None  # the CSL's `_id`: the one key that tells two entries of the same name apart
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


@dataclass(frozen=True)
class DumpedList:
    """A list whose entries are already in the form the store keeps them in (the JSON of
    `chipclear.store.screening_tables.entries_json`, which its `ScreeningListLoaded` hashes):
    `screening load` has them read and dumped by the processes that prepare the list's index, so the
    process that stores the list never builds its tens of thousands of entries."""

    info: ScreeningListInfo
    entries_json: str


class ScreenedParty(_Frozen):
    """A name a request gives, as screened. `suspicious` names the invisible characters it carried
    (zero-width, bidi controls): derived from the name alone, so the record shows the disguise even
    when nothing matched."""

    role: PartyRole
    name: str
    # ISO 3166-1 alpha-2, when known (`screening check --country`): context that lowers a match on an
    # entry listed only elsewhere a little, never a filter.
    country: str | None = None
    suspicious: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _flag_hidden_controls(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name"), str) and not data.get("suspicious"):
            return {**data, "suspicious": hidden_controls(data["name"])}
        return data


class ScreeningMatch(_Frozen):
    """One listed entry a party matched, and why: the listed name, the words that carried the score,
    and every fold (homoglyph, pinyin, leet, a removed control) that was needed to see it."""

    role: PartyRole
    party_name: str
    entry_name: str
    matched_name: str  # the entry's name or the alternative name that scored best
    entity_number: str | None
    source: str
    programs: list[str] = Field(default_factory=list)
    score: Annotated[float, Field(ge=0, le=100)]
    entry_id: str | None = None
    entry_type: str | None = None
    tokens: list[str] = Field(default_factory=list)  # the listed words found in the party's name
    folds: list[str] = Field(default_factory=list)  # what was folded to find them

    def explanation(self) -> str:
        """One line for `status` and `screening check`: the words that carried it, and the folds."""
        why = f"on {', '.join(self.tokens)}" if self.tokens else ""
        if self.folds:
            why += ("; " if why else "") + "; ".join(self.folds)
        return why


def parties_of(request: ImportRequest) -> list[ScreenedParty]:
    """Everyone a request names: buyer, end user (when not the buyer) and every consignee."""
    parties = [ScreenedParty(role="buyer", name=request.buyer.name)]
    if request.end_user is not None and request.end_user.name != request.buyer.name:
        parties.append(ScreenedParty(role="end_user", name=request.end_user.name))
    parties += [ScreenedParty(role="consignee", name=party.name) for party in request.consignees]
    return parties
