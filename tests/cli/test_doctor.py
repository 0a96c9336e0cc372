"""One store, wherever you stand: the home never depends on the current directory, a read never
creates a store, and `chipclear doctor` says what is in use and what is wrong."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.client import Client

from chipclear.config import Settings
from chipclear.projections import open_event_store
from tests import keys
from tests.cli import forked
from tests.cli.test_cli import CHIPCLEAR, Result, flat, hermetic_env, ok, parallel, refused

# Every command that only reads the record, with arguments that would find something in a real store.
READ_COMMANDS: list[tuple[str, ...]] = [
    ("status", "bytedance-2026-001"),
    ("status", "bytedance-2026-001", "--json"),
    ("list",),
    ("list", "--status", "licensed"),
    ("events", "bytedance-2026-001"),
    ("events",),
    ("licence", "bytedance-2026-001"),
    ("licence", "bytedance-2026-001", "--json"),
    ("exporter", "show", "NVIDIA Corporation"),
    ("audit", "verify"),
    ("audit", "checkpoint", "-o", "checkpoint.json"),
    ("batch", "list"),
    ("batch", "show", "B1"),
    ("screening", "check", "Sugon"),
    ("screening", "versions"),
    ("store", "export", "-o", "export.jsonl"),
    ("projections", "rebuild"),
]


def _run(cwd: Path, env: dict[str, str], *args: str) -> Result:
    return forked.run([str(CHIPCLEAR), *args], env, timeout=60, cwd=cwd)


# -- the home --------------------------------------------------------------------------------------
def test_the_default_home_is_the_platform_data_directory_never_the_current_one(tmp_path: Path) -> None:
    home = Path.home()
    assert Settings.from_env({}).home == home / ".local" / "share" / "chipclear"
    assert Settings.from_env({"XDG_DATA_HOME": str(tmp_path)}).home == tmp_path / "chipclear"
    # A relative XDG_DATA_HOME is ignored (the XDG rule): it would hang on the current directory again.
    assert Settings.from_env({"XDG_DATA_HOME": "data"}).home == home / ".local" / "share" / "chipclear"
    chosen = Settings.from_env({"CHIPCLEAR_HOME": str(tmp_path / "mine")})
    assert chosen.home == tmp_path / "mine" and chosen.home_source == "$CHIPCLEAR_HOME"
    assert chosen.event_store_url == f"sqlite:///{tmp_path / 'mine' / 'events.db'}"
    assert Settings.from_env({"CHIPCLEAR_HOME": "rel"}).home.is_absolute()


def test_every_read_command_on_a_missing_store_exits_1_naming_it_and_creates_nothing(
    tmp_path: Path,
) -> None:
    # A home with keys (as `chipclear keys new` leaves it) but no store yet, and a command run elsewhere.
    home = tmp_path / "home"
    keys.install(home)
    before = sorted(home.rglob("*"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "checkpoint.json").write_text("{}")
    env = hermetic_env(CHIPCLEAR_HOME=str(home), TEMPORAL_ADDRESS="127.0.0.1:1")

    def one(args: tuple[str, ...]) -> Result:
        return _run(elsewhere, env, *args)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, READ_COMMANDS))
    for args, result in zip(READ_COMMANDS, results, strict=True):
        refused(result, f"no event store at {home / 'events.db'}")
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert len(flat(result.stderr)) <= 300, (args, result.stderr)
    assert sorted(home.rglob("*")) == before  # no store, no log, nothing new
    assert sorted(p.name for p in elsewhere.iterdir()) == ["checkpoint.json"]


# -- doctor ----------------------------------------------------------------------------------------
@pytest.fixture
def ready_home(tmp_path: Path) -> Path:
    """A home as `chipclear up` leaves it: every key the default policy names, and a store."""
    home = tmp_path / "home"
    keys.install(home)
    open_event_store(f"sqlite:///{home / 'events.db'}").close()
    return home


def test_doctor_prints_what_is_in_use_and_exits_0_when_all_is_well(client: Client, ready_home: Path) -> None:
    address = client.service_client.config.target_host
    env = hermetic_env(CHIPCLEAR_HOME=str(ready_home), TEMPORAL_ADDRESS=address)
    shown, as_json = parallel(env, [("doctor",), ("doctor", "--json")])
    text = flat(ok(shown).stdout)
    for needle in (
        f"server ok {address} (namespace default)",
        f"home ok {ready_home} (from $CHIPCLEAR_HOME)",
        f"store ok sqlite:///{ready_home / 'events.db'}",
        "policy ok 2026-01-15 (sha256 ",
        "codec ok off",
        "keys ok alice, chen, li, sam, wang, recorder in",
    ):
        assert needle in text, f"{needle!r} not in\n{shown.stdout}"
    document = json.loads(ok(as_json).stdout)
    assert all(check["ok"] for check in document.values()), document
    assert set(document) == {"server", "home", "store", "policy", "codec", "keys"}


def test_doctor_names_each_problem_in_one_sentence_and_exits_1(ready_home: Path) -> None:
    # alice's private key is another's; no server listens; a codec key that is not a key.
    (ready_home / "keys" / "alice.key").write_bytes((ready_home / "keys" / "bob.key").read_bytes())
    env = hermetic_env(
        CHIPCLEAR_HOME=str(ready_home), TEMPORAL_ADDRESS="127.0.0.1:1", CHIPCLEAR_CODEC_KEYS="k1=not-base64"
    )
    result = _run(ready_home, env, "doctor")
    refused(result, "server: no Temporal server answers at 127.0.0.1:1", "codec:", "keys:")
    assert f"{ready_home / 'keys' / 'alice.key'} is not the key policy 2026-01-15 names for alice" in flat(
        result.stderr
    )
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors), result.stderr
    assert "store   ok" in result.stdout and "policy  ok" in result.stdout
