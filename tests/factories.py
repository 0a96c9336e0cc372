"""Builders for requests and policies, so each test states only what it cares about."""

from __future__ import annotations

import itertools
from typing import Any

from chipclear.domain.models import ImportRequest
from chipclear.domain.policy import Policy

_counter = itertools.count(1)


def request_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "request_id": f"req-{next(_counter):05d}",
        "buyer": {"name": "ByteDance Ltd.", "country": "CN", "kind": "private"},
        "end_use": "large language model training",
        "product": "H200",
        "units": 50_000,
        "unit_price_usd": 32_000,
        "data_center": {"name": "Wuhu Cluster 3", "province": "Anhui", "state_funded": False},
        "domestic_procurement": [
            {"vendor": "Huawei", "product": "Ascend 910C", "units": 60_000, "invoice": "HW-2026-0001"}
        ],
    }
    for key, value in overrides.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def make_request(**overrides: Any) -> ImportRequest:
    return ImportRequest.model_validate(request_doc(**overrides))


def make_policy(mode: str = "manual", **sections: dict[str, Any]) -> Policy:
    doc: dict[str, Any] = {
        "version": f"test-{mode}",
        "us_export": {"mode": mode},
        "cn_import": {"mode": mode},
        "domestic_quota": {"mode": mode},
        "reviewers": {"alice": ["us-export"], "wang": ["cn-import", "domestic-quota"]},
    }
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    return Policy.model_validate(doc)
