"""A policy version is bound to its content in the event store when a worker first starts under it;
a different content under a recorded version is refused when a worker starts (issue 14). In-process on
a real SQLite store; the refusal comes before the worker connects to Temporal, so no server is needed."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chipclear.cli.main import app
from chipclear.domain.policy import PolicyError, content_hash, load_policy
from chipclear.policy_record import POLICY_STREAM, record_policy, recorded_hashes
from chipclear.projections import PROJECTIONS
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys
from tests.store.support import trusting_policy_toml

runner = CliRunner()


def sealed_store(db: Path) -> SQLiteEventStore:
    return SQLiteEventStore(db, projections=PROJECTIONS, recorder=keys.private(keys.RECORDER))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_hash_is_of_the_rules_not_of_the_bytes(tmp_path: Path) -> None:
    text = trusting_policy_toml()
    plain = load_policy(write(tmp_path / "a.toml", text))
    commented = load_policy(write(tmp_path / "b.toml", "# the same rules, said again\n" + text + "\n\n"))
    changed = load_policy(
        write(tmp_path / "c.toml", text.replace("unique_invoices = false", "unique_invoices = true"))
    )
    assert content_hash(plain) == content_hash(commented)
    assert content_hash(plain) != content_hash(changed)
    assert len(content_hash(plain)) == 64


def test_a_version_is_recorded_once_and_other_content_under_it_is_refused(tmp_path: Path) -> None:
    text = trusting_policy_toml()
    first = load_policy(write(tmp_path / "a.toml", text))
    changed = load_policy(
        write(tmp_path / "b.toml", text.replace("unique_invoices = false", "unique_invoices = true"))
    )
    renamed = changed.model_copy(update={"version": "audit-test-2"})
    with closing(sealed_store(tmp_path / "events.db")) as store:
        assert record_policy(store, first) == content_hash(first)
        assert record_policy(store, first) == content_hash(first)  # a restart records nothing new
        assert len(store.read_stream(POLICY_STREAM)) == 1
        with pytest.raises(PolicyError) as refused:
            record_policy(store, changed)
        message = str(refused.value)
        assert "'audit-test'" in message
        assert content_hash(first)[:16] in message and content_hash(changed)[:16] in message
        assert len(store.read_stream(POLICY_STREAM)) == 1  # the refusal wrote nothing
        record_policy(store, renamed)  # the changed rules under a label of their own
        assert recorded_hashes(store) == {
            "audit-test": content_hash(first),
            "audit-test-2": content_hash(renamed),
        }
        report = store.verify()
        assert report.ok, report.breaks  # the bindings are chained and sealed like every event


def test_the_worker_refuses_a_changed_policy_under_a_recorded_version(tmp_path: Path) -> None:
    home = tmp_path / "home"
    keys.install(home)
    db = tmp_path / "events.db"
    text = trusting_policy_toml()
    with closing(sealed_store(db)) as store:
        record_policy(store, load_policy(write(tmp_path / "a.toml", text), home=home))
    changed = write(tmp_path / "b.toml", text.replace("unique_invoices = false", "unique_invoices = true"))
    env = {"CHIPCLEAR_HOME": str(home), "CHIPCLEAR_EVENT_STORE": f"sqlite:///{db}", "CHIPCLEAR_POLICY": ""}
    result = runner.invoke(app, ["worker", "--policy", str(changed)], env=env)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "policy version 'audit-test' is recorded with content sha256" in said
    assert "new version label" in said
    with closing(sealed_store(db)) as store:
        assert len(store.read_stream(POLICY_STREAM)) == 1
