"""The search attributes that make the Web UI's workflow list a view of the pipeline.

Search attributes are indexed in clear text, never encrypted: only what may be public goes here (a
status, a gate, a buyer's name, units, a batch), never prices, invoices or reasons.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey, SearchAttributeUpdate

from chipclear.domain.state import RequestState

STATUS = SearchAttributeKey.for_keyword("ChipclearStatus")
GATE = SearchAttributeKey.for_keyword("ChipclearGate")
BUYER = SearchAttributeKey.for_keyword("ChipclearBuyer")
UNITS = SearchAttributeKey.for_int("ChipclearUnits")
BATCH = SearchAttributeKey.for_keyword("ChipclearBatch")
ESCALATED = SearchAttributeKey.for_bool("ChipclearEscalated")
ALL: tuple[SearchAttributeKey, ...] = (STATUS, GATE, BUYER, UNITS, BATCH, ESCALATED)  # type: ignore[type-arg]

_DEV_SERVER_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.BOOL: "Bool",
}


def _indexed(key: SearchAttributeKey) -> IndexedValueType.ValueType:  # type: ignore[type-arg]
    return IndexedValueType.ValueType(int(key.indexed_value_type))


class SearchAttributeConflict(RuntimeError):
    """The namespace already has one of our names with another type; it must be removed by hand."""


def dev_server_args() -> list[str]:
    """`temporal server start-dev` registers them at start."""
    args: list[str] = []
    for key in ALL:
        args += ["--search-attribute", f"{key.name}={_DEV_SERVER_TYPES[key.indexed_value_type]}"]
    return args


def updates(state: RequestState) -> list[SearchAttributeUpdate]:  # type: ignore[type-arg]
    """The values for a request's current state; the workflow upserts them whenever one changes."""
    assert state.status is not None and state.buyer is not None
    return [
        STATUS.value_set(state.status),
        GATE.value_set(state.gate or ""),
        BUYER.value_set(state.buyer),
        UNITS.value_set(state.units_in_play),
        BATCH.value_set(state.labels.get("batch", "")),
        ESCALATED.value_set(state.escalated),
    ]


async def registered(client: Client) -> dict[str, IndexedValueType.ValueType]:
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return dict(response.custom_attributes)


async def ready(client: Client) -> bool:
    """True when every attribute is registered with its type: only then may workflows upsert them."""
    have = await registered(client)
    return all(have.get(key.name) == _indexed(key) for key in ALL)


async def ensure(client: Client) -> list[str]:
    """Register what is missing (idempotent); returns the names added."""
    have = await registered(client)
    clashes = [key.name for key in ALL if key.name in have and have[key.name] != _indexed(key)]
    if clashes:
        raise SearchAttributeConflict(
            f"search attribute(s) {', '.join(clashes)} exist in namespace {client.namespace} with another "
            "type; remove them (temporal operator search-attribute remove) and run setup again"
        )
    missing = {key.name: _indexed(key) for key in ALL if key.name not in have}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)
