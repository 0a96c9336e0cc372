"""The SDK's pydantic data converter, with one payload converter per process instead of one per use.

The SDK makes a payload converter from the data converter's class far more often than it looks: one for
every workflow run (its sandboxed instance takes a fresh one), and two for every workflow activation (the
data converter it builds to visit the activation's payloads, and the completion's). Each
`PydanticPayloadConverter` builds its encoding converters and starts an empty cache of pydantic type
adapters, so every run rebuilt the adapter of every type it decoded, and every activation built two
converters it did not use (docs/performance.md, "One payload converter a process", has what it cost).

The converter holds no state but that cache (pydantic's type adapters, immutable once built, behind a
thread-safe `lru_cache`), so one instance serves every thread and every run. Payloads are the same bytes:
it is the same converter class, made once.
"""

from __future__ import annotations

from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter


class SharedPydanticPayloadConverter(PydanticPayloadConverter):
    """`PydanticPayloadConverter` with its defaults; every instantiation returns the process's one."""

    def __new__(cls) -> SharedPydanticPayloadConverter:
        return _ONE

    def __init__(self) -> None:
        """Made once, below: a second `__init__` would empty the shared cache."""


_ONE = object.__new__(SharedPydanticPayloadConverter)
PydanticPayloadConverter.__init__(_ONE)

PYDANTIC_CONVERTER = DataConverter(payload_converter_class=SharedPydanticPayloadConverter)
