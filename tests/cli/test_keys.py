"""`chipclear keys`: a person's key pair, made on their machine, private half never shown; and the worker's
refusal of a policy whose reviewers could not sign."""

from __future__ import annotations

import stat
from pathlib import Path

from chipclear.domain.signing import parse_public
from chipclear.keys import load_private, public_text
from tests.cli.test_cli import chipclear, hermetic_env, ok, refused


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_new_prints_the_public_key_and_keeps_the_private_one_to_itself(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = hermetic_env(CHIPCLEAR_HOME=str(home))
    made = ok(chipclear(env, "keys", "new", "alice"))
    name, public = made.stdout.split()
    assert name == "alice"
    parse_public(public)  # a well-formed ed25519 public key
    private_file = home / "keys" / "alice.key"
    assert mode(private_file) == 0o600 and mode(home / "keys") == 0o700
    assert public_text(load_private(private_file)) == public
    assert (home / "keys" / "alice.pub").read_text().strip() == public
    pem = private_file.read_text()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert body not in made.stdout + made.stderr  # the private key is never printed
    shown = ok(chipclear(env, "keys", "show", "alice"))
    assert shown.stdout.split() == ["alice", public]

    # A key is never overwritten: a lost one is replaced on purpose, under the policy's review.
    again = refused(chipclear(env, "keys", "new", "alice"), "exists already", "never overwritten", code=2)
    assert body not in again.stdout + again.stderr
    assert public_text(load_private(private_file)) == public


def test_keys_for_the_system_or_odd_names_are_refused(tmp_path: Path) -> None:
    env = hermetic_env(CHIPCLEAR_HOME=str(tmp_path / "home"))
    refused(chipclear(env, "keys", "new", "policy"), "'policy' is reserved", code=2)
    refused(chipclear(env, "keys", "new", "allocation-ledger"), "reserved", code=2)
    refused(chipclear(env, "keys", "new", "../escape"), "a key name is", code=2)
    assert not (tmp_path / "escape.key").exists()
    refused(chipclear(env, "keys", "show", "nobody"), "no key file", code=2)


def test_a_worker_refuses_a_policy_whose_manual_reviewers_have_no_key(tmp_path: Path) -> None:
    # A fresh home: the bundled policy names keys/alice.pub and the others, and none is there yet.
    env = hermetic_env(CHIPCLEAR_HOME=str(tmp_path / "home"), TEMPORAL_ADDRESS="127.0.0.1:1")
    result = refused(chipclear(env, "worker"), "reviewers of a manual gate without a key", code=2)
    for reviewer in ("alice", "wang", "li"):
        assert reviewer in result.stderr
