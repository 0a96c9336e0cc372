"""`chipclear doctor`: what this shell would use (server, home, store, policy, codec, keys), each checked.

A newcomer's first question is "which store, which server, which policy am I talking to?". Every
other command answers it only by failing; this one prints the answers and says what is wrong, one
sentence each, and exits 1 if anything is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

import typer
from rich.text import Text

from chipclear.cli import output
from chipclear.cli.common import JsonOption, handles_errors, settings
from chipclear.config import Settings

# A doctor that hangs is no help: each probe of the server gives up after this long.
SERVER_PROBE_SECONDS = 5.0


@dataclass
class Finding:
    """One thing checked: its name, what is in use, and one sentence if it is wrong."""

    name: str
    value: str
    problem: str | None = None
    note: str = ""


def policy_hash(document: object) -> str:
    """SHA-256 of the policy as loaded (keys read in), as canonical JSON: two homes that print the
    same hash decide by the same rules."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _home(current: Settings) -> Finding:
    value = f"{current.home} (from {current.home_source})"
    if not current.home.exists():
        return Finding("home", value, f"the home {current.home} does not exist yet: `chipclear up` makes it")
    return Finding("home", value)


def _store(current: Settings) -> Finding:
    from chipclear.projections import open_event_store
    from chipclear.store.urls import redact

    value = redact(current.event_store_url)
    if (missing := current.missing_store()) is not None:
        return Finding("store", value, missing)
    try:
        with closing(open_event_store(current.event_store_url, require_schema=False)) as events:
            pending = events.pending_migrations()
            version = events.schema_version()
    except Exception as exc:  # any failure to open is the finding itself
        return Finding("store", value, f"the event store cannot be opened: {' '.join(str(exc).split())}")
    if pending:
        return Finding(
            "store",
            value,
            f"the event store's schema is at version {version} with {len(pending)} migration(s) "
            "pending: run `chipclear store migrate`",
        )
    return Finding("store", value, note=f"schema version {version}")


def _policy(current: Settings) -> tuple[Finding, object | None]:
    from chipclear.domain.policy import load_policy, require_keys

    named = current.policy or "default (bundled)"
    try:
        policy = require_keys(load_policy(current.policy, home=current.home))
    except Exception as exc:  # PolicyError, and anything a broken file raises
        return Finding("policy", named, " ".join(str(exc).split())), None
    digest = policy_hash(policy.model_dump(mode="json"))
    return Finding("policy", f"{policy.version} (sha256 {digest[:16]}) from {named}"), policy


def _codec() -> Finding:
    from chipclear.codec import keys_from_env

    try:
        found = keys_from_env()
    except Exception as exc:  # CodecKeyError: a malformed key or an unreadable key file
        return Finding("codec", "?", " ".join(str(exc).split()))
    if not found:
        return Finding("codec", "off: payloads reach the Temporal server unencrypted")
    ids = list(found)
    return Finding("codec", f"AES-GCM, keys {', '.join(ids)} ({ids[0]} seals new payloads)")


def _keys(current: Settings, policy: object | None) -> Finding:
    from chipclear import keys
    from chipclear.domain.policy import Policy

    if not isinstance(policy, Policy):
        return Finding("keys", "?", note="not checked: the policy did not load")
    here: list[str] = []
    problems: list[str] = []
    for name, person in sorted(policy.reviewers.items()):
        path = keys.private_path(current.home, name)
        if not path.exists():
            continue  # people keep their keys on their own machines; a home need not hold them
        try:
            public = keys.public_text(keys.load_private(path))
        except keys.KeyFileError as exc:
            problems.append(str(exc))
            continue
        if person.key is not None and public != person.key:
            problems.append(f"{path} is not the key policy {policy.version} names for {name}")
        here.append(name)
    recorder = keys.recorder_key_file(current.home)
    if recorder.exists():
        try:
            public = keys.public_text(keys.load_private(recorder))
        except keys.KeyFileError as exc:
            problems.append(str(exc))
        else:
            if policy.recorder.keys and public not in policy.recorder.keys:
                problems.append(f"the recorder key {recorder} is not one policy {policy.version} names")
            here.append("recorder")
    else:
        problems.append(f"no recorder key at {recorder}, so a worker here cannot seal events")
    value = f"{', '.join(here) or 'none'} in {keys.keys_dir(current.home)}"
    problem = "; ".join(problems) if problems else None
    return Finding("keys", value, problem)


async def _server() -> Finding:
    from temporalio.client import Client

    from chipclear import search_attributes as sa
    from chipclear.temporal import connect_config, runtime

    config = connect_config()
    value = f"{config['target_host']} (namespace {config.get('namespace', 'default')})"
    try:
        # Without the payload codec: a broken codec key is the codec's finding, not the server's.
        client = await asyncio.wait_for(Client.connect(**config, runtime=runtime()), SERVER_PROBE_SECONDS)
    except (RuntimeError, TimeoutError):
        return Finding(
            "server",
            value,
            f"no Temporal server answers at {config['target_host']}: start one with `make up` or "
            "`chipclear up`, or set TEMPORAL_ADDRESS",
        )
    try:
        ready = await asyncio.wait_for(sa.ready(client), SERVER_PROBE_SECONDS)
    except Exception as exc:  # an RPC error: the server answers, but not this question
        return Finding("server", value, f"the server answers but its search attributes cannot be read: {exc}")
    if not ready:
        return Finding(
            "server", value, "chipclear's search attributes are not registered: run `chipclear setup`"
        )
    return Finding("server", value, note="reachable, search attributes registered")


def diagnose(current: Settings, server: Callable[[], Finding]) -> list[Finding]:
    policy_finding, policy = _policy(current)
    return [
        server(),
        _home(current),
        _store(current),
        policy_finding,
        _codec(),
        _keys(current, policy),
    ]


@handles_errors
def doctor(json_: JsonOption = False) -> None:
    """Print the server, home, store, policy (version and hash), codec and keys in use; check each.

    Exit 1 if anything is wrong, with one sentence per problem."""
    current = settings()
    findings = diagnose(current, lambda: asyncio.run(_server()))
    if json_:
        output.print_json(
            {f.name: {"value": f.value, "ok": f.problem is None, "problem": f.problem} for f in findings}
        )
    else:
        for finding in findings:
            state = ("ok   ", "green") if finding.problem is None else ("wrong", "bold red")
            if finding.value == "?":
                state = ("-    ", "dim")  # not checked: what it depends on is wrong
            note = f"  {finding.note}" if finding.note else ""
            output.console.print(
                Text.assemble(f"{finding.name:<7} ", state, f"  {finding.value}{note}"),
                highlight=False,
                soft_wrap=True,
            )
        for finding in findings:
            if finding.problem is not None:
                output.errors.print(
                    Text.assemble(("error: ", "bold red"), f"{finding.name}: {finding.problem}"),
                    highlight=False,
                    soft_wrap=True,
                )
    if any(f.problem is not None for f in findings):
        raise typer.Exit(1)
