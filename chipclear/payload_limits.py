"""Temporal's payload limits, and the check every message we send to Temporal passes first.

The server refuses a payload over its blob size limit (`limit.blobSize.error`, 2 MiB by default) and
warns above 512 KiB (`limit.blobSize.warn`). Refused at the door, an oversized message costs nothing;
let in, it is copied into events, signed acts and query answers, and one of those copies crosses the
limit inside the workflow, whose task then fails forever. So the client measures what it sends *as
sent* (after the data converter and the payload codec, which may encrypt or compress) and refuses
anything over MESSAGE_LIMIT with one sentence naming the field that makes it large.

MESSAGE_LIMIT is Temporal's warning threshold, a quarter of the hard limit. The margin is for the
copies: a submission's request is also recorded in its RequestSubmitted event, its accepted records
again in EvidenceAdded, and a signed act rides on each event it causes. The workflow bounds those
copies itself (chipclear.domain.bounds), for any caller, and refuses an act that would pass them.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from temporalio.converter import DataConverter

from chipclear.domain.bounds import size

TEMPORAL_BLOB_LIMIT = 2 * 1024 * 1024  # the server's limit.blobSize.error default
TEMPORAL_BLOB_WARNING = 512 * 1024  # the server's limit.blobSize.warn default
MESSAGE_LIMIT = TEMPORAL_BLOB_WARNING
# Temporal's limits on a workflow's user metadata (the Web UI's summary and details), in bytes.
SUMMARY_LIMIT = 400
DETAILS_LIMIT = 20_000


class PayloadTooLarge(ValueError):
    """A message too large to send; nothing was sent. The message names the field (exit 2)."""


async def encoded_size(converter: DataConverter, value: object) -> int:
    """The bytes `value` takes once converted and encoded, as the server receives it."""
    return sum(payload.ByteSize() for payload in await converter.encode([value]))


async def check(converter: DataConverter, value: object, *, what: str) -> None:
    """Refuse `value` (`what`: the request, the evidence…) if it is too large to send to Temporal."""
    total = await encoded_size(converter, value)
    if total <= MESSAGE_LIMIT:
        return
    field = largest_field(value)
    where = f"{field}: " if field else ""
    raise PayloadTooLarge(
        f"{where}too large: {what} would be {size(total)} once encoded, and chipclear sends at most "
        f"{size(MESSAGE_LIMIT)} in one message to Temporal (whose own limit is {size(TEMPORAL_BLOB_LIMIT)}); "
        "send less, or in parts"
    )


def largest_field(value: object) -> str:
    """The dotted path of the part that makes `value` large: the biggest child, followed down while
    it is most of its parent (`request.domestic_procurement[0].note`); a list of many middling items
    is named as the list (`records`)."""
    document = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    path = ""
    while True:
        children = _children(document)
        if not children:
            return _short(path)
        whole = _bytes(document)
        key, child = max(children, key=lambda item: _bytes(item[1]))
        if 2 * _bytes(child) < whole:
            return _short(path)
        path = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
        document = child


def _children(document: Any) -> list[tuple[str | int, Any]]:
    if isinstance(document, dict):
        return [(str(key), item) for key, item in document.items()]
    if isinstance(document, list):
        return list(enumerate(document))
    return []


def _bytes(document: Any) -> int:
    return len(json.dumps(document, ensure_ascii=False, default=str).encode())


def _short(path: str, limit: int = 100) -> str:
    return path if len(path) <= limit else path[: limit - 1] + "…"


def fit(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (on a character boundary, marked with …)."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"
