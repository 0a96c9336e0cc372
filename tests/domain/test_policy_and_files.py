"""Loading policies (TOML) and request/evidence files (JSON, YAML): every problem names its field; the
policy's route, its safe defaults, and its round trip through history."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from chipclear.cli.files import InvalidInput, load_evidence, load_request
from chipclear.domain.gates import cn_import, domestic_quota, gate_of, us_export
from chipclear.domain.models import ImportRequest, PartyKind, ProcurementRecord
from chipclear.domain.policy import (
    DEFAULT_ROUTE,
    GateMode,
    Policy,
    PolicyError,
    bundled_policy_path,
    load_policy,
    section_key,
)
from tests.factories import make_policy, request_doc, safe_policy

US_EXPORT, CN_IMPORT, DOMESTIC_QUOTA = DEFAULT_ROUTE
SKIP_CN = (US_EXPORT, DOMESTIC_QUOTA)

# -- policy -----------------------------------------------------------------------------------------

DEFAULT_REVIEWERS = {
    "alice": frozenset({US_EXPORT}),
    "wang": frozenset({CN_IMPORT, DOMESTIC_QUOTA}),
}


def test_bundled_default_policy():
    policy = load_policy()
    assert policy.version == "2026-01-15"
    assert policy.route == DEFAULT_ROUTE
    assert {gate: policy.mode(gate) for gate in DEFAULT_ROUTE} == dict.fromkeys(
        DEFAULT_ROUTE, GateMode.MANUAL
    )
    assert policy.reviewers == DEFAULT_REVIEWERS
    assert policy.may_decide("alice", US_EXPORT)
    assert not policy.may_decide("alice", CN_IMPORT)
    assert policy.may_decide("wang", DOMESTIC_QUOTA)
    export = us_export.GATE.section(policy)
    assert export.max_units_per_request == 75_000
    assert export.excluded_end_user_kinds == {PartyKind.MILITARY}
    assert cn_import.GATE.section(policy).excluded_buyer_kinds == {
        PartyKind.MILITARY,
        PartyKind.GOVERNMENT,
        PartyKind.CRITICAL_INFRASTRUCTURE,
        PartyKind.STATE_OWNED,
    }
    quota = domestic_quota.GATE.section(policy)
    assert quota.required_ratio == 1.0
    assert quota.deny_state_funded is True
    assert policy.section(US_EXPORT).deadline == timedelta(days=90)
    assert policy.section(CN_IMPORT).deadline == timedelta(days=90)
    assert policy.section(DOMESTIC_QUOTA).deadline == timedelta(days=60)
    # Every section is typed by its gate's own model.
    assert {gate: type(policy.section(gate)) for gate in DEFAULT_ROUTE} == {
        gate: gate_of(gate).section_model for gate in DEFAULT_ROUTE
    }


def test_bundled_default_by_name_and_by_path_are_the_same():
    assert load_policy("default") == load_policy()
    assert load_policy(bundled_policy_path("default")) == load_policy()
    assert load_policy(str(bundled_policy_path("auto"))) == load_policy("auto")


def test_bundled_auto_policy_decides_every_gate_alone():
    policy = load_policy("auto")
    assert {gate: policy.mode(gate) for gate in DEFAULT_ROUTE} == dict.fromkeys(DEFAULT_ROUTE, GateMode.AUTO)
    assert policy.version == "2026-01-15-auto"
    assert policy.reviewers == DEFAULT_REVIEWERS


def write_policy(tmp_path: Path, body: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_policy_durations_in_seconds(tmp_path):
    path = write_policy(
        tmp_path,
        """
        version = "fast-1"
        [us_export]
        decision_deadline = "PT2S"
        [cn_import]
        decision_deadline = "PT2S"
        [domestic_quota]
        evidence_deadline = "PT2S"
        mode = "auto"
        """,
    )
    policy = load_policy(path)
    assert policy.version == "fast-1"
    assert {gate: policy.section(gate).deadline for gate in DEFAULT_ROUTE} == dict.fromkeys(
        DEFAULT_ROUTE, timedelta(seconds=2)
    )
    assert policy.mode(DOMESTIC_QUOTA) is GateMode.AUTO
    assert policy.mode(US_EXPORT) is GateMode.MANUAL
    assert policy.reviewers == {}


def test_policy_path_may_be_a_string(tmp_path):
    path = write_policy(tmp_path, 'version = "v"\n[cn_import]\ndecision_deadline = "P1DT12H"\n')
    assert cn_import.GATE.section(load_policy(str(path))).decision_deadline == timedelta(days=1, hours=12)


@pytest.mark.parametrize(
    ("section", "key", "value", "shown"),
    [
        ("us_export", "decision_deadline", '"30"', "'30'"),
        ("us_export", "decision_deadline", '"2 days"', "'2 days'"),
        ("cn_import", "decision_deadline", "30", "30"),
        ("domestic_quota", "evidence_deadline", '"60 days"', "'60 days'"),
        ("domestic_quota", "evidence_deadline", '"P0D"', "'P0D'"),
        ("us_export", "decision_deadline", '"Pfoo"', "'Pfoo'"),
    ],
)
def test_bad_duration_names_the_field(tmp_path, section, key, value, shown):
    path = write_policy(tmp_path, f'version = "v"\n[{section}]\n{key} = {value}\n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert f"{section}.{key}" in message
    assert shown in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('version = "v"\n[us_export]\nmax_unit = 5\n', "us_export.max_unit"),
        ('version = "v"\n[domestic_quota]\nratio = 2.0\n', "domestic_quota.ratio"),
    ],
)
def test_unknown_key_in_a_section_names_it(tmp_path, body, field):
    with pytest.raises(PolicyError, match=r"Extra inputs are not permitted") as info:
        load_policy(write_policy(tmp_path, body))
    assert f"{field}:" in str(info.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('version = "v"\ncolour = "blue"\n', "colour"),
        ('version = "v"\n[customs]\nmode = "auto"\n', "customs"),
        # A section for a gate the route does not take is as unknown as a misspelt one.
        ('version = "v"\nroute = ["us-export", "domestic-quota"]\n[cn_import]\nmode = "auto"\n', "cn_import"),
    ],
)
def test_unknown_top_level_key_names_it_and_the_route(tmp_path, body, field):
    with pytest.raises(PolicyError) as info:
        load_policy(write_policy(tmp_path, body))
    message = str(info.value)
    assert f"{field}: unknown key (no gate of the route [" in message
    assert "us-export" in message


@pytest.mark.parametrize("section", ["us_export", "cn_import", "domestic_quota"])
def test_bad_mode_names_mode(tmp_path, section):
    path = write_policy(tmp_path, f'version = "v"\n[{section}]\nmode = "fast"\n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert f"{section}.mode" in str(info.value)
    assert "'fast'" in str(info.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("[us_export]\nmode = 'auto'\n", "version"),
        ('version = "v"\n[us_export]\nmax_units_per_request = 0\n', "us_export.max_units_per_request"),
        ('version = "v"\n[domestic_quota]\nrequired_ratio = -1.0\n', "domestic_quota.required_ratio"),
        ('version = "v"\n[cn_import]\nexcluded_buyer_kinds = ["pirate"]\n', "cn_import.excluded_buyer_kinds"),
        ('version = "v"\n[reviewers]\nbob = ["moon-export"]\n', "reviewers.bob"),
        ('version = "v"\nroute = ["US Export"]\n', "route"),
        ('version = "v"\nroute = []\n', "route"),
    ],
)
def test_other_schema_errors_name_the_field(tmp_path, body, field):
    with pytest.raises(PolicyError) as info:
        load_policy(write_policy(tmp_path, body))
    assert field in str(info.value)


def test_missing_policy_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(PolicyError, match=r"does not exist") as info:
        load_policy(path)
    assert str(path) in str(info.value)


def test_invalid_toml(tmp_path):
    path = write_policy(tmp_path, 'version = "v"\n[us_export\nmode = "auto"\n')
    with pytest.raises(PolicyError, match=r"is not valid TOML") as info:
        load_policy(path)
    assert str(path) in str(info.value)


# -- the route ---------------------------------------------------------------------------------------


def test_a_route_in_the_file_takes_only_its_gates_sections(tmp_path):
    path = write_policy(
        tmp_path,
        'version = "v"\nroute = ["us-export", "domestic-quota"]\n'
        '[domestic_quota]\nmode = "auto"\n[reviewers]\nalice = ["us-export"]\n',
    )
    policy = load_policy(path)
    assert policy.route == SKIP_CN
    assert set(policy.sections) == set(SKIP_CN)
    assert policy.mode(DOMESTIC_QUOTA) is GateMode.AUTO
    with pytest.raises(KeyError, match="gate 'cn-import' is not on this policy's route"):
        policy.section(CN_IMPORT)


def test_an_unknown_gate_in_the_route_is_named_with_the_known_ones(tmp_path):
    path = write_policy(tmp_path, 'version = "v"\nroute = ["us-export", "customs"]\n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert "route: unknown gate 'customs' (known gates: cn-import, domestic-quota, us-export" in str(
        info.value
    )
    with pytest.raises(KeyError, match="unknown gate 'customs'"):
        gate_of("customs")


def test_a_gate_listed_twice_is_refused(tmp_path):
    path = write_policy(tmp_path, 'version = "v"\nroute = ["us-export", "cn-import", "us-export"]\n')
    with pytest.raises(PolicyError, match="route: a gate is listed twice"):
        load_policy(path)


def test_a_reviewer_of_a_gate_off_the_route_is_refused(tmp_path):
    path = write_policy(
        tmp_path,
        'version = "v"\nroute = ["us-export", "domestic-quota"]\n'
        '[reviewers]\nwang = ["cn-import", "domestic-quota"]\n',
    )
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert "reviewers.wang: gate 'cn-import' is not on the route (us-export, domestic-quota)" in str(
        info.value
    )


# -- safe defaults -----------------------------------------------------------------------------------


def test_a_policy_of_only_its_version_and_modes_turns_every_safeguard_on(tmp_path):
    body = 'version = "new-user"\n' + "".join(
        f'[{section_key(gate)}]\nmode = "auto"\n' for gate in DEFAULT_ROUTE
    )
    policy = load_policy(write_policy(tmp_path, body))
    assert policy == safe_policy("auto")
    assert policy.route == DEFAULT_ROUTE
    export = us_export.GATE.section(policy)
    assert export.screening is True
    assert export.screening_threshold == 90.0
    assert cn_import.GATE.section(policy).allocate_from_batches is True
    assert domestic_quota.GATE.section(policy).unique_invoices is True
    # A policy with no section at all gets every gate, each with its safe defaults.
    bare = Policy.model_validate({"version": "bare"})
    assert set(bare.sections) == set(DEFAULT_ROUTE)
    assert us_export.GATE.section(bare).screening and domestic_quota.GATE.section(bare).unique_invoices


def test_a_policy_turns_a_safeguard_off_only_explicitly():
    policy = safe_policy("manual").with_section(CN_IMPORT, allocate_from_batches=False)
    assert cn_import.GATE.section(policy).allocate_from_batches is False
    assert us_export.GATE.section(policy).screening is True
    assert cn_import.GATE.section(safe_policy("manual")).allocate_from_batches is True  # a copy
    assert policy.mode(CN_IMPORT) is GateMode.MANUAL
    test_policy = make_policy("manual")  # tests opt in to each safeguard they are about
    assert not us_export.GATE.section(test_policy).screening


# -- round trip: the policy recorded in history ------------------------------------------------------

POLICIES: dict[str, Callable[[], Policy]] = {
    "bundled default": load_policy,
    "bundled auto": lambda: load_policy("auto"),
    "version and modes": safe_policy,
    "short route": lambda: make_policy(
        "auto", route=SKIP_CN, us_export={"max_units_per_buyer": 10, "review_sla": "P3D"}
    ),
}


@pytest.mark.parametrize("build", POLICIES.values(), ids=POLICIES.keys())
def test_policy_round_trips_through_its_dump(build):
    policy = build()
    assert Policy.model_validate(policy.model_dump()) == policy
    assert Policy.model_validate(policy.model_dump(mode="json")) == policy
    assert Policy.model_validate_json(policy.model_dump_json()) == policy


@pytest.mark.parametrize("build", POLICIES.values(), ids=POLICIES.keys())
def test_policy_dump_writes_every_value_out(build):
    """Replay reads the policy recorded in history, never a default of the code replaying it."""
    policy = build()
    dumped = policy.model_dump(mode="json")
    sections = {section_key(gate) for gate in policy.route}
    assert set(dumped) == {"version", "route", "reviewers", "licence_validity", *sections}
    assert dumped["route"] == list(policy.route)
    for gate in policy.route:
        model = gate_of(gate).section_model
        assert set(dumped[section_key(gate)]) == set(model.model_fields), gate
    if policy.version == "new-user":
        assert dumped["us_export"]["screening"] is True
        assert dumped["cn_import"]["allocate_from_batches"] is True
        assert dumped["domestic_quota"]["unique_invoices"] is True


def test_a_section_model_refuses_unknown_keys():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        us_export.UsExportSection.model_validate({"screenin": True})


# -- request files ----------------------------------------------------------------------------------

SUFFIXES = [".json", ".yaml", ".yml"]


def write_document(tmp_path: Path, document: Any, suffix: str, name: str = "request") -> Path:
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(document), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_valid_request_loads(tmp_path, suffix):
    doc = request_doc(end_user={"name": "Lab", "country": "CN", "kind": "university"})
    request = load_request(write_document(tmp_path, doc, suffix))
    assert request == ImportRequest.model_validate(doc)
    assert request.request_id == doc["request_id"]
    assert request.effective_end_user.kind is PartyKind.UNIVERSITY
    assert request.domestic_procurement[0].invoice == "HW-2026-0001"


def test_hand_written_yaml_request_loads(tmp_path):
    path = tmp_path / "request.yaml"
    path.write_text(
        """
request_id: BD-2026-001
buyer: {name: ByteDance Ltd., country: CN, kind: private}
end_use: large language model training
units: 50000
data_center:
  name: Wuhu Cluster 3
  province: Anhui
""",
        encoding="utf-8",
    )
    request = load_request(path)
    assert request.units == 50_000
    assert request.domestic_procurement == []
    assert request.data_center.state_funded is False


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = doc
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


def _duplicate_invoice(doc: dict[str, Any]) -> None:
    doc["domestic_procurement"] = [
        {"vendor": "Huawei", "product": "Ascend 910C", "units": 10, "invoice": "INV-7"},
        # Invoice numbers are the vendor's: another vendor may use the same one.
        {"vendor": "Hygon", "product": "DCU", "units": 10, "invoice": "INV-7"},
        # The same vendor's number, written differently, is the same invoice.
        {"vendor": "Huawei", "product": "Ascend 910B", "units": 10, "invoice": "inv 7"},
    ]


BAD_REQUESTS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("request_id too short", _set("request_id", "ab"), "request_id", "(got 'ab')"),
    ("request_id bad characters", _set("request_id", "bad id!"), "request_id", "(got 'bad id!')"),
    ("request_id too long", _set("request_id", "x" * 65), "request_id", "(got '" + "x" * 65 + "')"),
    ("buyer.country not alpha-2", _set("buyer.country", "China"), "buyer.country", "(got 'China')"),
    ("buyer.kind unknown", _set("buyer.kind", "alien"), "buyer.kind", "(got 'alien')"),
    ("units zero", _set("units", 0), "units", "(got 0)"),
    ("units too many", _set("units", 1_000_001), "units", "(got 1000001)"),
    ("units not a number", _set("units", "lots"), "units", "(got 'lots')"),
    ("product H100", _set("product", "H100"), "product", "(got 'H100')"),
    ("unknown field", _set("unit", 5), "unit", "Extra inputs are not permitted (got 5)"),
    ("unknown nested field", _set("buyer.address", "Beijing"), "buyer.address", "(got 'Beijing')"),
    (
        "bad procurement units",
        _set("domestic_procurement", [{"vendor": "H", "product": "A", "units": 0, "invoice": "I"}]),
        "domestic_procurement.0.units",
        "(got 0)",
    ),
    (
        "duplicate invoice, the vendor's legal form written out",
        _set(
            "domestic_procurement",
            [
                {"vendor": "Huawei", "product": "Ascend 910C", "units": 10, "invoice": "HW-1"},
                {"vendor": "Huawei Co., Ltd.", "product": "Ascend 910C", "units": 10, "invoice": "hw 1"},
            ],
        ),
        "domestic_procurement",
        "invoice 'hw 1' appears more than once",
    ),
    # PostgreSQL cannot store a NUL; it is refused at the door, named, on either backend.
    ("NUL in a name", _set("buyer.name", "Acme\x00 Ltd"), "buyer.name", "contains a NUL character"),
    (
        "NUL in an extra procurement field",
        _set(
            "domestic_procurement",
            [{"vendor": "H", "product": "A", "units": 1, "invoice": "I", "note": "a\x00b"}],
        ),
        "domestic_procurement.0.note",
        "contains a NUL character",
    ),
    (
        "duplicate invoice",
        _duplicate_invoice,
        "domestic_procurement",
        "invoice 'inv 7' appears more than once",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field", "shown"),
    [pytest.param(m, f, s, id=name) for name, m, f, s in BAD_REQUESTS],
)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_bad_request_field_names_path_and_value(tmp_path, suffix, mutate, field, shown):
    doc = request_doc()
    mutate(doc)
    path = write_document(tmp_path, doc, suffix)
    with pytest.raises(InvalidInput) as info:
        load_request(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert f"{field}:" in message
    assert shown in message


def test_missing_required_field_is_named(tmp_path):
    path = write_document(tmp_path, request_doc(units=None), ".json")
    with pytest.raises(InvalidInput, match=r"units: Field required"):
        load_request(path)


@pytest.mark.parametrize(
    ("suffix", "text"),
    [(".json", "[1, 2, 3]"), (".yaml", "- a\n- b\n"), (".yaml", "just a string\n"), (".yaml", "")],
)
def test_non_mapping_request_is_refused(tmp_path, suffix, text):
    path = tmp_path / f"request{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"expected a mapping"):
        load_request(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_missing_request_file(tmp_path, suffix):
    path = tmp_path / f"absent{suffix}"
    with pytest.raises(InvalidInput, match=r"no such file") as info:
        load_request(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(InvalidInput, match=r"cannot read"):
        load_request(tmp_path)


@pytest.mark.parametrize(
    ("suffix", "text", "match"),
    [
        (".yaml", "buyer: [unclosed\n", r"not valid yaml"),
        (".yml", "a: b: c\n", r"not valid yml"),
        (".json", '{"request_id": ', r"not valid json"),
    ],
)
def test_invalid_syntax(tmp_path, suffix, text, match):
    path = tmp_path / f"request{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInput, match=match):
        load_request(path)


# -- evidence files ---------------------------------------------------------------------------------

RECORDS = [
    {"vendor": "Huawei", "product": "Ascend 910C", "units": 30_000, "invoice": "HW-1"},
    {"vendor": "Cambricon", "product": "MLU590", "units": 20_000, "invoice": "CB-1"},
]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_evidence_list_loads(tmp_path, suffix):
    records = load_evidence(write_document(tmp_path, RECORDS, suffix, "evidence"))
    assert records == [ProcurementRecord.model_validate(r) for r in RECORDS]


def test_evidence_under_domestic_procurement_key_loads(tmp_path):
    path = write_document(tmp_path, {"domestic_procurement": RECORDS}, ".yaml", "evidence")
    assert [r.invoice for r in load_evidence(path)] == ["HW-1", "CB-1"]


@pytest.mark.parametrize("document", [[], {"domestic_procurement": []}, {"records": RECORDS}, "text"])
def test_empty_or_non_list_evidence_is_refused(tmp_path, document):
    path = write_document(tmp_path, document, ".json", "evidence")
    with pytest.raises(
        InvalidInput, match=r"expected a non-empty list of \{vendor, product, units, invoice\}"
    ):
        load_evidence(path)


@pytest.mark.parametrize(
    ("record", "field", "shown"),
    [
        ({"units": 0}, "1.units", "0"),
        ({"units": -5}, "1.units", "-5"),
        ({"units": 10_000_001}, "1.units", "10000001"),
        ({"units": "many"}, "1.units", "'many'"),
        ({"invoice": ""}, "1.invoice", "''"),
        ({"invoice_date": "2026-02-30"}, "1.invoice_date", "'2026-02-30'"),
    ],
)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_bad_evidence_names_index_and_field(tmp_path, suffix, record, field, shown):
    path = write_document(tmp_path, [RECORDS[0], {**RECORDS[1], **record}], suffix, "evidence")
    with pytest.raises(InvalidInput) as info:
        load_evidence(path)
    message = str(info.value)
    assert f"{field}:" in message
    assert f"(got {shown})" in message


def test_evidence_keeps_extra_fields_and_reads_the_optional_ones(tmp_path):
    """The named fields are the contract; a procurement system's own extra fields travel along."""
    extra = {**RECORDS[0], "serial": "X-1", "invoice_date": "2026-01-10", "data_center": "Wuhu 3"}
    [record] = load_evidence(write_document(tmp_path, [extra], ".yaml", "evidence"))
    assert record.model_extra == {"serial": "X-1"}
    assert record.invoice_date is not None and record.invoice_date.isoformat() == "2026-01-10"
    assert record.data_center == "Wuhu 3" and record.delivered_on is None


def test_evidence_missing_field_names_index(tmp_path):
    path = write_document(tmp_path, [{"vendor": "Huawei", "product": "Ascend", "units": 3}], ".json")
    with pytest.raises(InvalidInput, match=r"0\.invoice: Field required"):
        load_evidence(path)
