"""`chipclear audit verify | checkpoint | prove`, `store import` of a forged export, and a worker without
its recorder key, through the console script and in-process (no Temporal server is needed).

The store is filled in-process, sealed with the test recorder key; the CLI trusts the keys a policy file
names, as an auditor's machine would.
"""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from chipclear.cli.main import app
from chipclear.projections import PROJECTIONS
from chipclear.store import merkle
from chipclear.store.checkpoint import Checkpoint
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys
from tests.cli.test_cli import chipclear, flat, hermetic_env, ok, refused
from tests.store.support import RECORDER, append_all, attacker, scenarios, trusting_policy_toml
from tests.store.test_seals import STREAM, at_cn_import, forge, licence

runner = CliRunner()


@dataclass(frozen=True)
class Auditor:
    home: Path
    db: Path
    env: dict[str, str]

    def store(self) -> SQLiteEventStore:
        return SQLiteEventStore(self.db, projections=PROJECTIONS, recorder=RECORDER)

    def invoke(self, *args: str | Path, **env: str) -> Result:
        return runner.invoke(app, [str(arg) for arg in args], env=self.env | env)


@pytest.fixture
def auditor(tmp_path: Path) -> Auditor:
    home = tmp_path / "home"
    keys.install(home)
    policy = tmp_path / "policy.toml"
    policy.write_text(trusting_policy_toml(), encoding="utf-8")
    db = tmp_path / "events.db"
    env = {
        "CHIPCLEAR_HOME": str(home),
        "CHIPCLEAR_POLICY": str(policy),
        "CHIPCLEAR_EVENT_STORE": f"sqlite:///{db}",
    }
    found = Auditor(home, db, env)
    with closing(found.store()) as store:
        append_all(store, [at_cn_import(), *scenarios(3)])
    return found


def test_verify_checkpoint_and_prove_an_intact_log(auditor: Auditor, tmp_path: Path) -> None:
    env = hermetic_env(**auditor.env)
    verified = ok(chipclear(env, "audit", "verify"))
    assert "intact: 4 streams" in flat(verified.stdout)
    assert "every seal by a recorder key of policy audit-test" in flat(verified.stdout)

    kept = tmp_path / "auditor" / "checkpoint.json"
    kept.parent.mkdir()
    made = ok(chipclear(env, "audit", "checkpoint", "-o", kept))
    checkpoint = Checkpoint.model_validate_json(kept.read_text())
    assert kept.stat().st_mode & 0o777 == 0o600
    assert f"checkpoint of {checkpoint.tree_size} events" in flat(made.stdout)
    assert f"written to {kept}" in flat(made.stdout)

    with closing(auditor.store()) as store:
        append_all(store, scenarios(2, prefix="later"))
        first = next(iter(store.read_all()))
        assert store.checkpoints() == [checkpoint]
    extends = ok(chipclear(env, "audit", "verify", "--checkpoint", kept))
    assert f"extends the checkpoint of {checkpoint.tree_size} events" in flat(extends.stdout)
    document = json.loads(ok(chipclear(env, "audit", "verify", "--checkpoint", kept, "--json")).stdout)
    assert document["ok"] is True and document["checkpoint"]["ok"] is True
    assert document["checkpoint"]["checkpoint_size"] == checkpoint.tree_size

    proof = json.loads(ok(chipclear(env, "audit", "prove", first.event_id, "--checkpoint", kept)).stdout)
    assert (proof["leaf_index"], proof["tree_size"], proof["leaf"]) == (0, checkpoint.tree_size, first.hash)
    # What the auditor runs with the pure module, the proof and the checkpoint file alone:
    assert merkle.verify_inclusion(
        proof["leaf_index"],
        checkpoint.tree_size,
        merkle.event_leaf(proof["leaf"]),
        [bytes.fromhex(node) for node in proof["audit_path"]],
        bytes.fromhex(checkpoint.root_hash),
    )


def test_verify_names_a_forged_licence(auditor: Auditor) -> None:
    with closing(auditor.store()) as store:
        forge(store, licence())
    broken = auditor.invoke("audit", "verify")
    assert broken.exit_code == 1, broken.output
    assert f"stream {STREAM!r}: LicenseIssued v6: no recorder seal" in flat(broken.stderr)
    report = auditor.invoke("audit", "verify", "--json")
    assert report.exit_code == 1
    document = json.loads(report.stdout)
    assert [(b["stream_id"], b["version"], b["event_type"]) for b in document["breaks"]] == [
        (STREAM, 6, "LicenseIssued")
    ]


def test_a_request_removed_whole_passes_the_chains_but_not_the_checkpoint(
    auditor: Auditor, tmp_path: Path
) -> None:
    kept = tmp_path / "checkpoint.json"
    assert auditor.invoke("audit", "checkpoint", "-o", kept).exit_code == 0
    with closing(auditor.store()) as store, attacker(store) as conn:
        conn.execute("DELETE FROM events WHERE stream_id = ?", (STREAM,))
        conn.execute("DELETE FROM streams WHERE stream_id = ?", (STREAM,))
        # The projection row left behind gives it away: no event gives that row any more.
        orphan = auditor.invoke("audit", "verify")
        assert orphan.exit_code == 1 and f"requests row {STREAM}" in flat(orphan.stderr), orphan.output
        conn.execute("DELETE FROM requests WHERE request_id = ?", (STREAM,))
    assert auditor.invoke("audit", "verify").exit_code == 0  # every chain and row left agrees
    caught = auditor.invoke("audit", "verify", "--checkpoint", kept)
    assert caught.exit_code == 1, caught.output
    assert f"checkpoint {kept}: the log holds" in flat(caught.stderr)
    assert "events were removed; 5 of the events at or before position" in flat(caught.stderr)
    proof = auditor.invoke("audit", "prove", "nope", "--checkpoint", kept)
    assert proof.exit_code == 1 and "no event 'nope'" in flat(proof.stderr)


def test_refusals(auditor: Auditor, tmp_path: Path) -> None:
    unsigned = tmp_path / "no-recorder.toml"
    unsigned.write_text(trusting_policy_toml(recorder=False), encoding="utf-8")
    no_keys = auditor.invoke("audit", "verify", CHIPCLEAR_POLICY=str(unsigned))
    assert no_keys.exit_code == 2 and "[recorder] keys is empty" in flat(no_keys.stderr)

    garbled = tmp_path / "garbled.json"
    garbled.write_text('{"tree_size": 3}', encoding="utf-8")
    for args in (("verify", "--checkpoint", garbled), ("prove", "x", "--checkpoint", garbled)):
        result = auditor.invoke("audit", *args)
        assert result.exit_code == 2, result.output
        assert f"--checkpoint: {garbled}: not a chipclear checkpoint" in flat(result.stderr)
    missing = auditor.invoke("audit", "verify", "--checkpoint", tmp_path / "nowhere.json")
    assert missing.exit_code == 2 and "no such checkpoint file" in flat(missing.stderr)

    bare = tmp_path / "bare-home"
    keys.install(bare, keys.PEOPLE)  # everyone's key but the recorder's
    unkeyed = auditor.invoke("audit", "checkpoint", CHIPCLEAR_HOME=str(bare))
    assert unkeyed.exit_code == 1, unkeyed.output
    assert "cannot seal events:" in flat(unkeyed.stderr) and "recorder.key: no key file there" in flat(
        unkeyed.stderr
    )
    assert unkeyed.exception is None or isinstance(unkeyed.exception, SystemExit)


def test_store_import_refuses_a_forged_export(auditor: Auditor, tmp_path: Path) -> None:
    with closing(auditor.store()) as store:
        forge(store, licence())
    exported = tmp_path / "log.jsonl"
    assert auditor.invoke("store", "export", "-o", exported).exit_code == 0
    target = f"sqlite:///{tmp_path / 'target.db'}"
    refused_import = auditor.invoke("store", "import", exported, CHIPCLEAR_EVENT_STORE=target)
    assert refused_import.exit_code == 2, refused_import.output
    assert f"stream {STREAM!r} at version 6: LicenseIssued: no recorder seal" in flat(refused_import.stderr)
    assert "nothing was imported" in flat(refused_import.stderr)


def test_a_worker_refuses_to_start_without_a_recorder_key_the_policy_trusts(
    auditor: Auditor, tmp_path: Path
) -> None:
    bare = tmp_path / "bare-home"
    keys.install(bare, keys.PEOPLE)
    env = hermetic_env(**auditor.env)
    missing = chipclear(env | {"CHIPCLEAR_HOME": str(bare)}, "worker")
    refused(missing, "the worker seals every event with the recorder key and cannot read it", code=2)
    assert "chipclear keys new recorder" in flat(missing.stderr)
    other = chipclear(
        env | {"CHIPCLEAR_RECORDER_KEY_FILE": str(auditor.home / "keys" / "alice.key")}, "worker"
    )
    refused(other, "is not in policy audit-test's [recorder] keys", code=2)


def test_verify_names_a_projection_row_edited_to_show_a_licence(auditor: Auditor) -> None:
    """Only the `requests` projection is edited: the request at cn-import now reads `licensed`. The chains
    are whole; `audit verify` rebuilds the row from the log and names the difference."""
    with closing(auditor.store()) as store, attacker(store) as conn:
        conn.execute("UPDATE requests SET status = 'licensed' WHERE request_id = ?", (STREAM,))
    caught = auditor.invoke("audit", "verify")
    assert caught.exit_code == 1, caught.output
    assert f"requests row {STREAM}: status 'licensed' but the log folds to" in flat(caught.stderr)
    document = json.loads(auditor.invoke("audit", "verify", "--json").stdout)
    assert document["breaks"] == []
    assert [(d["table"], d["key"]) for d in document["differences"]][:1] == [("requests", STREAM)]
