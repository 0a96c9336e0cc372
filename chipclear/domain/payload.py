"""The base of every event payload, a request's and the allocation ledger's alike."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class EventPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # The discriminator: each payload narrows it to its own literal (declared here, it stays the first key).
    type: str
    # The shape this payload is stored in. A change to a field's name, type or meaning raises it by one
    # and registers an upcaster from the old shape (chipclear.store.upcasting); stored events never change.
    SCHEMA_VERSION: ClassVar[int] = 1
