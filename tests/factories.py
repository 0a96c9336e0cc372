"""Builders for requests and policies, so each test states only what it cares about."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from chipclear.domain.models import ImportRequest
from chipclear.domain.policy import DEFAULT_ROUTE, Policy, section_key
from tests import keys as test_keys

_counter = itertools.count(1)

# Who may decide which gate in a `make_policy` policy.
REVIEWERS = {"alice": ["us-export"], "wang": ["cn-import", "domestic-quota"]}
# People who sign for applicants: submit, answer, add evidence, withdraw.
APPLICANTS = ("applicant", "chen", "bd-legal", "buyer-portal", "bytedance-legal")
# The exporter's officer: records its shipments under licences and declares its US figures.
EXPORTERS = {"sam": ["NVIDIA Corporation"]}
# The rules that ask the world outside the request for a fact. The product turns each on unless a
# policy turns it off; `make_policy` writes each off, so a test turns on exactly the ones it is about
# (and `safe_policy` builds a policy a new user would write, with every one of them on).
OUTSIDE_FACTS: dict[str, dict[str, Any]] = {
    "us_export": {"screening": False},
    "cn_import": {"allocate_from_batches": False},
    "domestic_quota": {"unique_invoices": False},
}


def request_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "request_id": f"req-{next(_counter):05d}",
        "buyer": {"name": "ByteDance Ltd.", "country": "CN", "kind": "private"},
        "exporter": {"name": "NVIDIA Corporation", "country": "US"},
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


def make_policy(
    mode: str = "manual", *, route: Sequence[str] = DEFAULT_ROUTE, **sections: dict[str, Any]
) -> Policy:
    """Every gate of `route` in `mode`, the rules that ask the world off unless `sections` turn them
    on, and the reviewers alice (us-export) and wang (the others) for the gates on the route."""
    keys = [section_key(gate) for gate in route]
    doc: dict[str, Any] = {
        "version": f"test-{mode}",
        "route": list(route),
        "reviewers": {
            **{
                name: {"gates": [gate for gate in gates if gate in route], "key": test_keys.public(name)}
                for name, gates in REVIEWERS.items()
                if any(gate in route for gate in gates)
            },
            **{name: {"key": test_keys.public(name)} for name in APPLICANTS},
            **{
                name: {"exporters": names, "key": test_keys.public(name)} for name, names in EXPORTERS.items()
            },
        },
        # Separation of duties is on by default; here one reviewer (wang) holds two gates, as the
        # tests of other rules assume, and the tests of duties turn it on (`duties` overrides).
        "duties": {"distinct_reviewers": False, "submitter_may_decide": False},
        "recorder": {"keys": [test_keys.public(test_keys.RECORDER)]},
    }
    for key in keys:
        doc[key] = {"mode": mode, **OUTSIDE_FACTS.get(key, {})}
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    return Policy.model_validate(doc)


def safe_policy(mode: str = "manual", version: str = "new-user") -> Policy:
    """A policy of only its version and the modes, as a new user writes one: every default applies."""
    return Policy.model_validate(
        {
            "version": version,
            **{section_key(gate): {"mode": mode} for gate in DEFAULT_ROUTE},
            "reviewers": {
                name: {"gates": gates, "key": test_keys.public(name)} for name, gates in REVIEWERS.items()
            }
            | {name: {"key": test_keys.public(name)} for name in APPLICANTS}
            | {
                name: {"exporters": names, "key": test_keys.public(name)} for name, names in EXPORTERS.items()
            },
            "recorder": {"keys": [test_keys.public(test_keys.RECORDER)]},
        }
    )
