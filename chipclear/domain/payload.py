"""The base of every event payload, a request's and the allocation ledger's alike."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict


class EventPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # The discriminator, and the `type` column: always the class's own name, set by __init_subclass__,
    # so no payload spells its type twice and none can claim another's. Declared here to stay the first key.
    type: str = ""
    # The shape this payload is stored in. A change to a field's name, type or meaning raises it by one
    # and registers an upcaster from the old shape (chipclear.store.upcasting); stored events never change.
    SCHEMA_VERSION: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Runs before pydantic collects the fields, so the literal below is what validation sees.
        cls.__annotations__ = {"type": Literal[cls.__name__], **inspect.get_annotations(cls)}
        cls.type = cls.__name__
        super().__init_subclass__(**kwargs)
