"""Domestic procurement evidence: which records count, and what the quota computation is.

Each record is judged on its own, so a buyer learns exactly which invoice failed and why while the
good ones still count. Whether an invoice was already used by another request is a fact about every
request, not this one: the workflow asks the event store's invoice registry first and hands the
answer in (`owners`), so this stays pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from chipclear.domain.models import ProcurementRecord, invoice_key
from chipclear.domain.names import normalise_buyer
from chipclear.domain.policy import VendorRule


class VendorPolicy(Protocol):
    """The vendor list evidence is judged by (the domestic-quota gate's policy section)."""

    @property
    def vendors(self) -> Mapping[str, VendorRule]: ...

    def vendor(self, name: str) -> tuple[str, VendorRule] | None: ...


class InvoiceOwner(BaseModel):
    """Which request (and buyer) an invoice is registered to."""

    model_config = ConfigDict(frozen=True)
    request_id: str
    buyer: str


class RejectedRecord(BaseModel):
    model_config = ConfigDict(frozen=True)
    record: ProcurementRecord
    reason: str


# Invoices and deliveries are dated where they happen: in China (UTC+8 all year, no daylight saving).
CHINA = timezone(timedelta(hours=8), "CST")


def local_today(now: datetime) -> date:
    """The date in China at `now`: an invoice dated today in Beijing is not "in the future" at 07:00."""
    return now.astimezone(CHINA).date()


def rule_problem(record: ProcurementRecord, rules: VendorPolicy, today: date) -> str | None:
    """Why `record` cannot count under the policy alone (vendor, product, dates), or None."""
    if rules.vendors:
        found = rules.vendor(record.vendor)
        if found is None:
            known = ", ".join(sorted(name for name, rule in rules.vendors.items() if rule.domestic))
            return f"vendor {record.vendor!r} is not in domestic_quota.vendors (domestic: {known})"
        name, rule = found
        if not rule.domestic:
            return f"vendor {name!r} is not a domestic vendor (domestic_quota.vendors)"
        if rule.products and record.product.casefold() not in {p.casefold() for p in rule.products}:
            return f"product {record.product!r} is not a known {name} product ({', '.join(rule.products)})"
    for field in ("invoice_date", "delivered_on"):
        when = getattr(record, field)
        if when is not None and when > today:
            return f"{field} {when.isoformat()} is in the future"
    return None


def judge(
    records: list[ProcurementRecord],
    *,
    request_id: str,
    buyer: str,
    already: list[ProcurementRecord],
    rules: VendorPolicy,
    today: date,
    owners: dict[str, InvoiceOwner] | None,
) -> tuple[list[ProcurementRecord], list[RejectedRecord]]:
    """Split `records` into those that count and those that do not, each with its reason.

    `owners` is the invoice registry's answer for the records that pass the policy's rules, or None
    when the policy does not keep invoices unique across requests.
    """
    accepted: list[ProcurementRecord] = []
    rejected: list[RejectedRecord] = []
    for record, key, problem in _first_look(records, already, rules, today):
        if problem is None and owners is not None:
            problem = _registry_problem(record, owners.get(key), request_id, buyer)
        if problem is None:
            accepted.append(record)
        else:
            rejected.append(RejectedRecord(record=record, reason=problem))
    return accepted, rejected


def registrable(
    records: list[ProcurementRecord], *, already: list[ProcurementRecord], rules: VendorPolicy, today: date
) -> list[str]:
    """Invoice keys worth registering: records that pass every rule the registry does not decide."""
    return [key for _, key, problem in _first_look(records, already, rules, today) if problem is None]


def _first_look(
    records: list[ProcurementRecord], already: list[ProcurementRecord], rules: VendorPolicy, today: date
) -> Iterator[tuple[ProcurementRecord, str, str | None]]:
    """Each record with its invoice key and what the policy alone (or a repeat) says against it."""
    seen = {invoice_key(record) for record in already}
    for record in records:
        key = invoice_key(record)
        problem = rule_problem(record, rules, today)
        if problem is None and key in seen:
            problem = "already submitted for this request"
        if problem is None:
            seen.add(key)
        yield record, key, problem


def _registry_problem(
    record: ProcurementRecord, owner: InvoiceOwner | None, request_id: str, buyer: str
) -> str | None:
    if owner is None:
        return "not registered yet; send it again"
    if owner.request_id == request_id:
        return None
    if normalise_buyer(owner.buyer) == normalise_buyer(buyer):
        return f"already counts for request {owner.request_id}"
    return "registered to another buyer's request"


def required_units(ratio: float, imported: int) -> int:
    # Exact decimal arithmetic: 1.1 x 50,000 is 55,000, not the float 55000.00000000001 rounded up.
    return math.ceil(Decimal(str(ratio)) * imported)


def hub_shortfall(min_share: float, domestic: int, total: int) -> int:
    """Domestic units still needed so that domestic / total > min_share, each added unit counting in
    both: the smallest d with (domestic + d) / (total + d) > min_share."""
    share = Decimal(str(min_share))
    if total and Decimal(domestic) / Decimal(total) > share:
        return 0
    needed = (share * total - domestic) / (1 - share)
    return max(0, math.floor(needed) + 1)
