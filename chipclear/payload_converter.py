"""The SDK's pydantic data converter, with one payload converter per process instead of one per use.

The SDK makes a payload converter from the data converter's class far more often than it looks: one for
every workflow run (its sandboxed instance takes a fresh one), and two for every workflow activation (the
data converter it builds to visit the activation's payloads, and the completion's). Each
`PydanticPayloadConverter` builds its encoding converters and starts an empty cache of pydantic type
adapters, so every run rebuilt the adapter of every type it decoded, and every activation built two
converters it did not use. Profiled at 200 requests in flight, that was about 1.5% of the worker's CPU
(docs/performance.md, "One payload converter a process").

The converter holds no state but that cache (pydantic's type adapters, immutable once built, behind a
thread-safe `lru_cache`), so one instance serves every thread and every run. Payloads are the same bytes:
it is the same converter class, made once.
"""

from __future__ import annotations

import threading
from typing import ClassVar

from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter


class SharedPydanticPayloadConverter(PydanticPayloadConverter):
    """`PydanticPayloadConverter` with its defaults; every instantiation returns the process's one."""

    _one: ClassVar[SharedPydanticPayloadConverter | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __new__(cls) -> SharedPydanticPayloadConverter:
        one = cls._one
        if one is None:
            with cls._lock:
                one = cls._one
                if one is None:
                    one = super().__new__(cls)
                    PydanticPayloadConverter.__init__(one)
                    cls._one = one
        return one

    def __init__(self) -> None:
        """Made once, in `__new__`: a second `__init__` would empty the shared cache."""


PYDANTIC_CONVERTER = DataConverter(payload_converter_class=SharedPydanticPayloadConverter)
