"""Policies: the bundled ones, every problem in a policy named by its field, the policy's route, its safe
defaults, and its round trip through history. Pure: a policy is read from TOML text here; reading
policy, request and evidence files from disk is tested in tests/cli/test_files.py."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from chipclear.domain.gates import cn_import, domestic_quota, gate_of, us_export
from chipclear.domain.models import PartyKind
from chipclear.domain.policy import (
    DEFAULT_ROUTE,
    Duties,
    GateMode,
    Person,
    Policy,
    PolicyError,
    Recorder,
    bundled_policy_path,
    describe_validation_error,
    load_policy,
    require_keys,
    section_key,
)
from chipclear.domain.sections import UsExportSection
from chipclear.domain.signing import RESERVED_ACTORS
from tests import keys
from tests.factories import make_policy, safe_policy

US_EXPORT, CN_IMPORT, DOMESTIC_QUOTA = DEFAULT_ROUTE
SKIP_CN = (US_EXPORT, DOMESTIC_QUOTA)

# -- policy -----------------------------------------------------------------------------------------

# The people of the bundled policies and the gates each decides (chen decides none: a compliance officer;
# sam neither: the exporter's officer, who records its shipments).
DEFAULT_REVIEWERS = {
    "alice": frozenset({US_EXPORT}),
    "wang": frozenset({CN_IMPORT}),
    "li": frozenset({DOMESTIC_QUOTA}),
    "chen": frozenset(),
    "sam": frozenset(),
}
# Separation of duties as the bundled policies write it: on, without four eyes.
DEFAULT_DUTIES = Duties(distinct_reviewers=True, submitter_may_decide=False, four_eyes_above=None)


def gates_of(policy: Policy) -> dict[str, frozenset[str]]:
    return {name: person.gates for name, person in policy.reviewers.items()}


def test_bundled_default_policy(tmp_path: Path):
    policy = load_policy(home=tmp_path)  # a home without keys: every `file:` key is left out
    assert policy.version == "2026-01-15"
    assert policy.route == DEFAULT_ROUTE
    assert {gate: policy.mode(gate) for gate in DEFAULT_ROUTE} == dict.fromkeys(
        DEFAULT_ROUTE, GateMode.MANUAL
    )
    assert gates_of(policy) == DEFAULT_REVIEWERS
    assert all(person.key is None for person in policy.reviewers.values())
    assert policy.duties == DEFAULT_DUTIES
    assert policy.recorder == Recorder(keys=())
    assert policy.may_decide("alice", US_EXPORT)
    assert not policy.may_decide("alice", CN_IMPORT)
    assert policy.may_decide("li", DOMESTIC_QUOTA)
    assert not policy.may_decide("wang", DOMESTIC_QUOTA)
    assert not any(policy.may_decide("chen", gate) for gate in DEFAULT_ROUTE)
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


def test_bundled_auto_policy_decides_every_gate_alone(tmp_path: Path):
    policy = load_policy("auto", home=tmp_path)
    assert {gate: policy.mode(gate) for gate in DEFAULT_ROUTE} == dict.fromkeys(DEFAULT_ROUTE, GateMode.AUTO)
    assert policy.version == "2026-01-15-auto"
    assert gates_of(policy) == DEFAULT_REVIEWERS
    assert policy.duties == DEFAULT_DUTIES


@pytest.mark.parametrize("name", ["default", "auto"])
def test_bundled_policies_read_every_key_from_the_home(tmp_path: Path, name: str):
    keys.install(tmp_path)
    policy = load_policy(name, home=tmp_path)
    assert {person: found.key for person, found in policy.reviewers.items()} == {
        person: keys.public(person) for person in DEFAULT_REVIEWERS
    }
    assert policy.recorder.keys == (keys.public(keys.RECORDER),)
    assert require_keys(policy) is policy


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
        # The old shape (a list of gates) names the person; the table's own fields name themselves.
        ('version = "v"\n[reviewers]\nbob = ["moon-export"]\n', "reviewers.bob"),
        ('version = "v"\n[reviewers.bob]\ngates = ["moon-export"]\n', "reviewers.bob: gate 'moon-export'"),
        ('version = "v"\n[reviewers.bob]\ngate = ["us-export"]\n', "reviewers.bob.gate"),
        ('version = "v"\n[duties]\nfour_eyes_above = 0\n', "duties.four_eyes_above"),
        ('version = "v"\n[duties]\nfour_eyes = 10\n', "duties.four_eyes"),
        ('version = "v"\n[recorder]\nkeys = ["recorder.pub"]\n', "recorder.keys.0"),
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
        '[domestic_quota]\nmode = "auto"\n[reviewers.alice]\ngates = ["us-export"]\n',
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
        '[reviewers.wang]\ngates = ["cn-import", "domestic-quota"]\n',
    )
    assert "reviewers.wang: gate 'cn-import' is not on the route (us-export, domestic-quota)" in message


# -- people and their keys ---------------------------------------------------------------------------

ALICE = keys.public("alice")


def test_a_person_is_a_table_of_gates_and_a_key():
    policy = policy_from(
        f'''
        version = "v"
        [reviewers.alice]
        gates = ["us-export"]
        key = "{ALICE}"
        [reviewers.chen]
        key = "{keys.public("chen")}"
        [reviewers.wang]
        gates = ["cn-import", "domestic-quota"]
        '''
    )
    assert policy.reviewers == {
        "alice": Person(gates=frozenset({US_EXPORT}), key=ALICE),
        "chen": Person(gates=frozenset(), key=keys.public("chen")),
        "wang": Person(gates=frozenset({CN_IMPORT, DOMESTIC_QUOTA}), key=None),
    }
    assert policy.person("chen") == policy.reviewers["chen"]
    assert policy.person("mallory") is None
    assert not policy.may_decide("chen", US_EXPORT)
    assert policy.may_decide("wang", DOMESTIC_QUOTA)


@pytest.mark.parametrize("name", sorted(RESERVED_ACTORS))
def test_a_reserved_name_is_no_person(name: str):
    message = policy_problem(f'version = "v"\n[reviewers.{name}]\nkey = "{ALICE}"\n')
    assert f"reviewers.{name}: the name is reserved for the system's own acts" in message


@pytest.mark.parametrize(
    "text",
    [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb",  # an OpenSSH key
        ALICE.removeprefix("ed25519:"),  # no prefix
        "ed25519:abc=",  # too short
        ALICE + "AAAA",  # too long
        "ed25519:" + "!" * 43 + "=",  # not base64
        "file:keys/alice.pub",  # a file reference is read by load_policy, never by the schema
    ],
)
def test_a_key_that_is_not_an_ed25519_public_key_is_refused(text: str):
    message = policy_problem(f'version = "v"\n[reviewers.alice]\ngates = ["us-export"]\nkey = "{text}"\n')
    assert "reviewers.alice.key" in message
    assert "ed25519:" in message
    assert repr(text) in message
    recorder = policy_problem(f'version = "v"\n[recorder]\nkeys = ["{text}"]\n')
    assert "recorder.keys.0" in recorder and repr(text) in recorder


def write_policy(folder: Path, body: str) -> Path:
    path = folder / "policy.toml"
    path.write_text(body, encoding="utf-8")
    return path


KEYED_BODY = """
version = "keyed"
[reviewers.alice]
gates = ["us-export"]
key = "file:keys/alice.pub"
[reviewers.chen]
key = "file:keys/chen.pub"
[recorder]
keys = ["file:keys/recorder.pub", "file:keys/old-recorder.pub"]
"""


def test_a_file_key_is_read_under_the_home_when_the_policy_is_loaded(tmp_path: Path):
    home, elsewhere = tmp_path / "home", tmp_path / "policies"
    elsewhere.mkdir()
    keys.install(home, ("alice", "chen", keys.RECORDER))
    policy = load_policy(write_policy(elsewhere, KEYED_BODY), home=home)
    # The key itself is kept, never the path, so the policy recorded with a request holds the key.
    assert policy.reviewers["alice"].key == ALICE
    assert policy.reviewers["chen"].key == keys.public("chen")
    assert policy.recorder.keys == (keys.public(keys.RECORDER),)  # a recorder key not there is left out
    assert "file:" not in policy.model_dump_json()
    assert require_keys(policy) is policy
    # Relative to the home, not to the policy file or the working directory.
    assert load_policy(write_policy(elsewhere, KEYED_BODY), home=elsewhere).reviewers["alice"].key is None


def test_an_absolute_file_key_is_read_where_it_says(tmp_path: Path):
    folder = keys.install(tmp_path / "home", ("alice",))
    body = f'version = "v"\n[reviewers.alice]\ngates = ["us-export"]\nkey = "file:{folder / "alice.pub"}"\n'
    assert (
        load_policy(write_policy(tmp_path, body), home=tmp_path / "nowhere").reviewers["alice"].key == ALICE
    )


def test_a_key_file_that_holds_no_public_key_is_refused_naming_the_person(tmp_path: Path):
    folder = keys.install(tmp_path, ("chen",))
    (folder / "alice.pub").write_text("not a key\n")
    with pytest.raises(PolicyError, match=r"reviewers\.alice\.key: .*ed25519:.*'key'"):
        load_policy(write_policy(tmp_path, KEYED_BODY), home=tmp_path)


def test_a_missing_key_file_leaves_the_person_without_a_key_and_a_worker_refuses(tmp_path: Path):
    policy = load_policy(write_policy(tmp_path, KEYED_BODY), home=tmp_path / "empty")
    assert policy.reviewers["alice"].key is None
    assert policy.reviewers["chen"].key is None
    assert policy.recorder.keys == ()
    assert policy.unkeyed_reviewers() == ["alice"]  # chen decides no gate: nobody needs their signature
    with pytest.raises(
        PolicyError, match=r"policy keyed: reviewers of a manual gate without a key: alice \("
    ):
        require_keys(policy)


def test_the_bundled_default_without_keys_names_every_reviewer_of_a_manual_gate(tmp_path: Path):
    policy = load_policy(home=tmp_path)
    with pytest.raises(PolicyError, match=r"without a key: alice, li, wang \(") as info:
        require_keys(policy)
    assert "chen" not in str(info.value)
    assert "chipclear keys new NAME" in str(info.value)


def test_reviewers_of_auto_gates_need_no_key(tmp_path: Path):
    assert require_keys(load_policy("auto", home=tmp_path)).reviewers["alice"].key is None
    # Only the manual gates' reviewers are named: li's gate decides alone here.
    mixed = load_policy(home=tmp_path).with_section(DOMESTIC_QUOTA, mode=GateMode.AUTO)
    assert mixed.unkeyed_reviewers() == ["alice", "wang"]


# -- safe defaults -----------------------------------------------------------------------------------


def test_a_policy_of_only_its_version_and_modes_turns_every_safeguard_on():
    body = 'version = "new-user"\n' + "".join(
        f'[{section_key(gate)}]\nmode = "auto"\n' for gate in DEFAULT_ROUTE
    )
    policy = policy_from(body)
    # safe_policy registers the test people and the recorder key; the body names nobody.
    assert policy == safe_policy("auto").model_copy(update={"reviewers": {}, "recorder": Recorder()})
    assert policy.reviewers == {}
    # Separation of duties is on unless a policy turns it off.
    assert policy.duties == Duties(distinct_reviewers=True, submitter_may_decide=False)
    assert safe_policy("auto").duties == policy.duties
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
    assert set(dumped) == {
        "version",
        "route",
        "reviewers",
        "duties",
        "recorder",
        "licence_validity",
        *sections,
    }
    assert dumped["route"] == list(policy.route)
    assert set(dumped["duties"]) == set(Duties.model_fields)
    assert set(dumped["recorder"]) == set(Recorder.model_fields)
    assert dumped["reviewers"]
    for person in dumped["reviewers"].values():
        assert set(person) == set(Person.model_fields)
    for gate in policy.route:
        model = gate_of(gate).section_model
        assert set(dumped[section_key(gate)]) == set(model.model_fields), gate
    if policy.version == "new-user":
        assert dumped["us_export"]["screening"] is True
        assert dumped["cn_import"]["allocate_from_batches"] is True
        assert dumped["domestic_quota"]["unique_invoices"] is True


def test_a_section_model_refuses_unknown_keys():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        UsExportSection.model_validate({"screenin": True})


# -- a policy is checked like input (issue 14) ------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "says"),
    [
        # Every submit failed its workflow task with OverflowError under this one.
        ('[us_export]\ndecision_deadline = "P999999999D"\n', "longer than the 10 years"),
        ('[cn_import]\ndecision_deadline = "P3654D"\n', "longer than the 10 years"),
        ('[domestic_quota]\nevidence_deadline = "PT999999999999S"\n', "evidence_deadline"),
        ('[us_export]\nreview_sla = "P7300D"\n', "longer than the 10 years"),
        ('licence_validity = "P11Y"\n', "longer than the 10 years"),
        ('licence_validity = "P999999999999999999999Y"\n', "longer than the 10 years"),
        (
            "[domestic_quota]\nrequired_ratio = inf\n",
            "domestic_quota.required_ratio: inf is not a finite number",
        ),
        ("[domestic_quota]\nrequired_ratio = nan\n", "not a finite number"),
        ("[domestic_quota]\nrequired_ratio = 1e300\n", "out of range"),
        ("[us_export]\nmax_units_per_request = 1180591620717411303424\n", "out of range"),
    ],
)
def test_a_policy_file_with_unbounded_rules_is_refused(tmp_path: Path, body: str, says: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('version = "v"\n' + body, encoding="utf-8")
    with pytest.raises(PolicyError, match=says) as refused:
        load_policy(path)
    assert len(str(refused.value)) <= 300


def test_ten_years_is_the_longest_rule() -> None:
    section = UsExportSection.model_validate({"decision_deadline": "P3653D"})
    assert section.decision_deadline == timedelta(days=3653)


def test_a_policy_file_is_a_regular_utf8_file(tmp_path: Path) -> None:
    latin = tmp_path / "latin.toml"
    latin.write_bytes('version = "café"\n'.encode("latin-1"))
    for path, says in [
        (latin, "not UTF-8 text"),
        (tmp_path, "cannot read a directory"),
        (Path("/dev/zero"), "cannot read a character device"),
        (tmp_path / "none.toml", "does not exist"),
    ]:
        with pytest.raises(PolicyError, match=says):
            load_policy(path)


def test_the_content_hash_is_the_same_in_every_process() -> None:
    """A worker restarted (another process, another hash seed) must hash the same policy alike, or it
    would refuse to start under the version it recorded itself: sets are hashed in sorted order."""
    script = (
        "from chipclear.domain.policy import load_policy, content_hash; print(content_hash(load_policy()))"
    )
    hashes = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1, 2, 3)
    }
    assert len(hashes) == 1
