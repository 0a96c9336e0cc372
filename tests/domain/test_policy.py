"""Policies: the bundled ones, every problem in a policy named by its field, the policy's route, its safe
defaults, and its round trip through history. Pure: a policy is read from TOML text here; reading
policy, request and evidence files from disk is tested in tests/cli/test_files.py."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from datetime import timedelta

import pytest
from pydantic import ValidationError

from chipclear.domain.gates import cn_import, domestic_quota, gate_of, us_export
from chipclear.domain.models import PartyKind
from chipclear.domain.policy import (
    DEFAULT_ROUTE,
    GateMode,
    Policy,
    bundled_policy_path,
    describe_validation_error,
    load_policy,
    section_key,
)
from tests.factories import make_policy, safe_policy

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


def policy_from(body: str) -> Policy:
    """The policy a file holding `body` gives: its TOML, validated (load_policy without the file)."""
    return Policy.model_validate(tomllib.loads(body))


def policy_problem(body: str) -> str:
    """What load_policy reports about a file holding `body`, after the file's name: every problem, named.
    (That load_policy says exactly this after the file's name is tested in tests/cli/test_files.py.)"""
    with pytest.raises(ValidationError) as info:
        policy_from(body)
    return describe_validation_error(info.value)


def test_policy_durations_in_seconds():
    policy = policy_from(
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
    assert policy.version == "fast-1"
    assert {gate: policy.section(gate).deadline for gate in DEFAULT_ROUTE} == dict.fromkeys(
        DEFAULT_ROUTE, timedelta(seconds=2)
    )
    assert policy.mode(DOMESTIC_QUOTA) is GateMode.AUTO
    assert policy.mode(US_EXPORT) is GateMode.MANUAL
    assert policy.reviewers == {}


BAD_DURATIONS = [
    ("us_export", "decision_deadline", '"30"', "'30'"),
    ("us_export", "decision_deadline", '"2 days"', "'2 days'"),
    ("cn_import", "decision_deadline", "30", "30"),
    ("domestic_quota", "evidence_deadline", '"60 days"', "'60 days'"),
    ("domestic_quota", "evidence_deadline", '"P0D"', "'P0D'"),
    ("us_export", "decision_deadline", '"Pfoo"', "'Pfoo'"),
]


@pytest.mark.parametrize(("section", "key", "value", "shown"), BAD_DURATIONS)
def test_bad_duration_names_the_field(section, key, value, shown):
    message = policy_problem(f'version = "v"\n[{section}]\n{key} = {value}\n')
    assert f"{section}.{key}" in message
    assert shown in message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('version = "v"\n[us_export]\nmax_unit = 5\n', "us_export.max_unit"),
        ('version = "v"\n[domestic_quota]\nratio = 2.0\n', "domestic_quota.ratio"),
    ],
)
def test_unknown_key_in_a_section_names_it(body, field):
    message = policy_problem(body)
    assert "Extra inputs are not permitted" in message
    assert f"{field}:" in message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('version = "v"\ncolour = "blue"\n', "colour"),
        ('version = "v"\n[customs]\nmode = "auto"\n', "customs"),
        # A section for a gate the route does not take is as unknown as a misspelt one.
        ('version = "v"\nroute = ["us-export", "domestic-quota"]\n[cn_import]\nmode = "auto"\n', "cn_import"),
    ],
)
def test_unknown_top_level_key_names_it_and_the_route(body, field):
    message = policy_problem(body)
    assert f"{field}: unknown key (no gate of the route [" in message
    assert "us-export" in message


@pytest.mark.parametrize("section", ["us_export", "cn_import", "domestic_quota"])
def test_bad_mode_names_mode(section):
    message = policy_problem(f'version = "v"\n[{section}]\nmode = "fast"\n')
    assert f"{section}.mode" in message
    assert "'fast'" in message


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
def test_other_schema_errors_name_the_field(body, field):
    assert field in policy_problem(body)


# -- the route ---------------------------------------------------------------------------------------


def test_a_route_in_the_file_takes_only_its_gates_sections():
    policy = policy_from(
        'version = "v"\nroute = ["us-export", "domestic-quota"]\n'
        '[domestic_quota]\nmode = "auto"\n[reviewers]\nalice = ["us-export"]\n',
    )
    assert policy.route == SKIP_CN
    assert set(policy.sections) == set(SKIP_CN)
    assert policy.mode(DOMESTIC_QUOTA) is GateMode.AUTO
    with pytest.raises(KeyError, match="gate 'cn-import' is not on this policy's route"):
        policy.section(CN_IMPORT)


def test_an_unknown_gate_in_the_route_is_named_with_the_known_ones():
    message = policy_problem('version = "v"\nroute = ["us-export", "customs"]\n')
    assert "route: unknown gate 'customs' (known gates: cn-import, domestic-quota, us-export" in message
    with pytest.raises(KeyError, match="unknown gate 'customs'"):
        gate_of("customs")


def test_a_gate_listed_twice_is_refused():
    message = policy_problem('version = "v"\nroute = ["us-export", "cn-import", "us-export"]\n')
    assert "route: a gate is listed twice" in message


def test_a_reviewer_of_a_gate_off_the_route_is_refused():
    message = policy_problem(
        'version = "v"\nroute = ["us-export", "domestic-quota"]\n'
        '[reviewers]\nwang = ["cn-import", "domestic-quota"]\n',
    )
    assert "reviewers.wang: gate 'cn-import' is not on the route (us-export, domestic-quota)" in message


# -- safe defaults -----------------------------------------------------------------------------------


def test_a_policy_of_only_its_version_and_modes_turns_every_safeguard_on():
    body = 'version = "new-user"\n' + "".join(
        f'[{section_key(gate)}]\nmode = "auto"\n' for gate in DEFAULT_ROUTE
    )
    policy = policy_from(body)
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
