"""Upcasting: an event stored in an older shape is read in the shape this release knows.

Stored events are never rewritten. Each is stored with the schema version of its payload
(`SCHEMA_VERSION` on the payload class, 1 until the shape first changes). When a shape changes, its
class's version goes up by one and an upcaster from the previous version is registered here: a pure
function from the stored data (a dict, without `type`) to the data of the next version. On read the
store applies the steps in order, after the hash was checked over the stored bytes (an audit never
sees upcast data) and before the data is parsed into the payload model.

    from chipclear.store.upcasting import register

    def _rename_why(data: dict[str, Any]) -> dict[str, Any]:  # RequestWithdrawn 1 -> 2
        data["reason"] = data.pop("why")
        return data

    register("RequestWithdrawn", 1, _rename_why)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chipclear.domain.events import Event, EventData, schema_versions

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UpcastError(ValueError):
    """Stored data this release cannot bring to its current shape; the message names the type and version."""


class Upcasters:
    """A registry of upcasters, one per (event type, version it upgrades from)."""

    def __init__(self, versions: Mapping[str, int] | None = None) -> None:
        # The current schema version of each event type: the payload classes', unless a test says otherwise.
        self.versions = dict(schema_versions() if versions is None else versions)
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def current(self, type_: str) -> int:
        """The schema version an event of `type_` is written with now."""
        try:
            return self.versions[type_]
        except KeyError:
            raise UpcastError(f"unknown event type {type_!r}") from None

    def register(self, type_: str, from_version: int, upcaster: Upcaster) -> Upcaster:
        """Register the step from `from_version` to `from_version + 1`; returns `upcaster` (a decorator)."""
        current = self.current(type_)
        if not 1 <= from_version < current:
            raise ValueError(
                f"{type_} is at schema version {current}: an upcaster goes from a version in "
                f"1..{current - 1}, not {from_version}"
            )
        if (type_, from_version) in self._steps:
            raise ValueError(f"{type_} already has an upcaster from schema version {from_version}")
        self._steps[(type_, from_version)] = upcaster
        return upcaster

    def upcast(self, type_: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
        """`data` stored at `version`, brought step by step to the current version of `type_`.

        An unknown type is passed through unchanged, for the payload parser to refuse by name.
        """
        current = self.versions.get(type_, version)
        if version > current:
            raise UpcastError(
                f"{type_} event stored at schema version {version}, newer than this release reads "
                f"({current}): upgrade chipclear"
            )
        while version < current:
            step = self._steps.get((type_, version))
            if step is None:
                raise UpcastError(
                    f"{type_} event stored at schema version {version}: no upcaster to version {version + 1}"
                )
            data, version = step(dict(data)), version + 1
        return data

    def parse(self, type_: str, version: int, data: dict[str, Any]) -> EventData:
        """The payload of a stored event, upcast to the current shape and validated."""
        return Event.parse_data(type_, self.upcast(type_, version, data))


# The registry every store reads through unless it is handed another one.
UPCASTERS = Upcasters()


def register(type_: str, from_version: int, upcaster: Upcaster) -> Upcaster:
    """Register an upcaster with the default registry (see the module's docstring)."""
    return UPCASTERS.register(type_, from_version, upcaster)


def _explained_screening(data: dict[str, Any]) -> dict[str, Any]:
    """PartiesScreened 1 -> 2: parties gain `country` and `suspicious`, matches the listed entry's id
    and type, the words that carried them and their folds. A schema-1 screening recorded none of
    these: empty, not guessed (`suspicious` alone is read from the party's name, as it always is)."""
    parties = [{"country": None, "suspicious": [], **party} for party in data.get("parties", [])]
    matches = [
        {"entry_id": None, "entry_type": None, "tokens": [], "folds": [], **match}
        for match in data.get("matches", [])
    ]
    return {**data, "parties": parties, "matches": matches}


register("PartiesScreened", 1, _explained_screening)
