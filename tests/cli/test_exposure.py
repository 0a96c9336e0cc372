"""Secrets and files: the codec server's token and Origin check, private file modes, no secret in an error,
and the worker's own endpoints on loopback unless told otherwise.

Everything runs for real: the codec server over HTTP (aiohttp's test server, and `chipclear codec-server`
as a process), the console script in subprocesses with a permissive umask (0), and a Temporal dev server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from temporalio.api.common.v1 import Payload

from chipclear.codec import CodecKeyError, EncryptionCodec, new_key, parse_keys
from chipclear.codec_server import build_app, is_loopback, require_token_beyond_loopback, token_from_env
from chipclear.config import DEFAULT_LISTEN_HOST, ConfigError, Settings
from chipclear.devserver import free_port
from chipclear.health import LIVENESS_PATH, Health
from chipclear.health import serve as serve_health
from chipclear.store.factory import StoreURLError, open_store
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.store.urls import redact, scrub
from chipclear.temporal import metrics_runtime
from tests.cli.test_cli import CHIPCLEAR, accepts, chipclear, hermetic_env, ok, parallel, refused, show

UI = "http://127.0.0.1:8233"
TOKEN = "t0k3n-for-the-codec-server-tests"

ClientT = TestClient[web.Request, web.Application]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def as_json(payload: Payload) -> dict[str, object]:
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


CLEAR = {"payloads": [as_json(Payload(metadata={"encoding": b"json/plain"}, data=b'"ByteDance Ltd."'))]}


# -- the codec server -----------------------------------------------------------------------------------
@pytest.fixture
async def guarded() -> AsyncIterator[ClientT]:
    keys = {"k1": base64.b64decode(new_key())}
    app = build_app(EncryptionCodec(keys), ui_origins=[UI], token=TOKEN)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_without_the_token_the_codec_server_answers_401(guarded: ClientT) -> None:
    for headers in ({}, bearer("wrong-token-of-some-length"), {"Authorization": TOKEN}, {"Origin": UI}):
        response = await guarded.post("/decode", json=CLEAR, headers=headers)
        assert response.status == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "bearer token is required" in (await response.json())["error"]
    # The UI's own origin gets the CORS headers with its 401, so it can show why.
    answer = await guarded.post("/encode", json=CLEAR, headers={"Origin": UI})
    assert answer.status == 401 and answer.headers["Access-Control-Allow-Origin"] == UI


async def test_with_the_token_it_encodes_and_decodes(guarded: ClientT) -> None:
    sealed = await guarded.post("/encode", json=CLEAR, headers=bearer(TOKEN))  # the CLI: no Origin
    assert sealed.status == 200
    payloads = (await sealed.json())["payloads"]
    assert b"ByteDance" not in base64.b64decode(payloads[0]["data"])
    opened = await guarded.post(
        "/decode", json={"payloads": payloads}, headers=bearer(TOKEN) | {"Origin": UI}
    )
    assert opened.status == 200 and opened.headers["Access-Control-Allow-Origin"] == UI
    assert (await opened.json()) == CLEAR


async def test_another_origin_is_refused_403_even_with_the_token(guarded: ClientT) -> None:
    for origin in ("http://evil.example", "null", "http://127.0.0.1:8234"):
        response = await guarded.post("/decode", json=CLEAR, headers=bearer(TOKEN) | {"Origin": origin})
        assert response.status == 403, origin
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "not one of the Web UI origins" in (await response.json())["error"]
    # A preflight carries no token (browsers never send one with it): the UI's origin gets CORS, others 403.
    ours = await guarded.options("/decode", headers={"Origin": UI, "Access-Control-Request-Method": "POST"})
    assert ours.status == 200 and ours.headers["Access-Control-Allow-Origin"] == UI
    assert "Authorization" in ours.headers["Access-Control-Allow-Headers"]
    theirs = await guarded.options("/decode", headers={"Origin": "http://evil.example"})
    assert theirs.status == 403 and "Access-Control-Allow-Origin" not in theirs.headers


async def test_without_a_token_set_the_origin_is_still_checked() -> None:
    app = build_app(EncryptionCodec({"k1": base64.b64decode(new_key())}), ui_origins=[UI])
    async with TestClient(TestServer(app)) as test_client:
        assert (await test_client.post("/encode", json=CLEAR)).status == 200  # loopback CLI use
        assert (await test_client.post("/encode", json=CLEAR, headers={"Origin": UI})).status == 200
        evil = await test_client.post("/encode", json=CLEAR, headers={"Origin": "http://evil.example"})
        assert evil.status == 403


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("codec.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_cli_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    env = hermetic_env(CHIPCLEAR_CODEC_KEYS=f"k1={new_key()}")
    calls = [("codec-server", "--host", "0.0.0.0"), ("codec-server", "--host", "::")]
    for (*_, host), result in zip(calls, parallel(env, calls), strict=True):
        refused(result, f"--host {host}", "beyond loopback", "CHIPCLEAR_CODEC_TOKEN", code=2)
    with pytest.raises(ConfigError, match="too short") as caught:
        require_token_beyond_loopback("0.0.0.0", token_from_env({"CHIPCLEAR_CODEC_TOKEN": "abc123"}))
    assert "abc123" not in str(caught.value)
    require_token_beyond_loopback("127.0.0.1", None)  # this machine only: the dev Web UI's case
    require_token_beyond_loopback("0.0.0.0", TOKEN)


@pytest.fixture
def codec_process() -> Iterator[int]:
    """`chipclear codec-server` with a token, as an operator runs it, on a free loopback port."""
    port = free_port()
    env = hermetic_env(CHIPCLEAR_CODEC_KEYS=f"k1={new_key()}", CHIPCLEAR_CODEC_TOKEN=TOKEN)
    process = subprocess.Popen(
        [str(CHIPCLEAR), "codec-server", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not accepts(port):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the codec server did not start"
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)


async def test_the_codec_server_command_requires_its_token(codec_process: int) -> None:
    base = f"http://127.0.0.1:{codec_process}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/encode", json=CLEAR) as answer:
            assert answer.status == 401
        async with session.post(f"{base}/encode", json=CLEAR, headers=bearer(TOKEN)) as answer:
            assert answer.status == 200
            sealed = await answer.json()
        async with session.post(f"{base}/decode", json=sealed, headers=bearer(TOKEN)) as answer:
            assert answer.status == 200 and await answer.json() == CLEAR


# -- file modes -----------------------------------------------------------------------------------------
def permissive(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The console script with umask 0: any mode that is right is right because chipclear set it."""
    return subprocess.run(
        [str(CHIPCLEAR), *map(str, args)], env=env, capture_output=True, text=True, timeout=60, umask=0
    )


def test_home_store_and_export_are_private_whatever_the_umask(tmp_path: Path) -> None:
    home = tmp_path / "nested" / "home"
    env = hermetic_env(CHIPCLEAR_HOME=str(home))
    ok(permissive("store", "migrate", env=env))
    assert mode(home) == 0o700
    with closing(SQLiteEventStore(home / "events.db")):  # its WAL and SHM files exist while it is open
        for name in ("events.db", "events.db-wal", "events.db-shm"):
            assert mode(home / name) == 0o600, name
        export = tmp_path / "export.jsonl"
        ok(permissive("store", "export", "--output", export, env=env))
    assert mode(export) == 0o600


def test_an_existing_home_keeps_the_mode_its_owner_chose(tmp_path: Path) -> None:
    home = tmp_path / "shared"
    home.mkdir()
    home.chmod(0o750)
    with closing(SQLiteEventStore(home / "events.db")):
        pass
    assert mode(home) == 0o750 and mode(home / "events.db") == 0o600


DEV_SERVER = """
import asyncio, json, stat, sys
from pathlib import Path
from chipclear.devserver import DevServer, free_port, stop

home = Path(sys.argv[1])
dev = DevServer(port=free_port(), ui_port=None, db=home / "temporal.db")
process = dev.start(log=home / "temporal.log")
try:
    asyncio.run(dev.wait_ready(process))
    print(json.dumps({path.name: stat.S_IMODE(path.stat().st_mode) for path in home.iterdir()}))
finally:
    stop(process)
"""


def test_the_dev_servers_database_and_log_are_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    started = subprocess.run(
        [sys.executable, "-c", DEV_SERVER, str(home)], capture_output=True, text=True, timeout=120, umask=0
    )
    assert started.returncode == 0, started.stderr
    assert mode(home) == 0o700
    running = json.loads(started.stdout)  # while it ran: the database with its WAL and SHM files
    assert {"temporal.db", "temporal.db-wal", "temporal.db-shm", "temporal.log"} <= set(running), running
    assert running == dict.fromkeys(running, 0o600), running
    assert all(mode(path) == 0o600 for path in home.iterdir())


# -- no secret in an error ------------------------------------------------------------------------------
def test_a_codec_key_without_its_id_is_never_printed() -> None:
    key, other = new_key(), new_key()
    cases = {
        key: ("entry 1", "expected ID=BASE64KEY"),  # a pasted key: it ends in `=`
        key.rstrip("="): ("entry 1", "expected ID=BASE64KEY"),
        f"k1={other}\n# the old one\n{key}": ("entry 3", "expected ID=BASE64KEY"),
        f"{key}{other}": ("entry 1", "at most 32 characters"),  # two keys run together
    }
    for value, needles in cases.items():
        with pytest.raises(CodecKeyError) as caught:
            parse_keys(value, source="CHIPCLEAR_CODEC_KEYS")
        assert all(needle in str(caught.value) for needle in needles), caught.value
        assert key.rstrip("=")[:8] not in str(caught.value) and other[:8] not in str(caught.value)
    # And through the console script, as an operator meets it: exit 2, the entry named, no key shown.
    result = chipclear(hermetic_env(CHIPCLEAR_CODEC_KEYS=f"k1={other},{key}"), "codec-server")
    refused(result, "CHIPCLEAR_CODEC_KEYS, entry 2: expected ID=BASE64KEY", code=2)
    assert key.rstrip("=") not in result.stdout + result.stderr and other not in result.stdout + result.stderr


PASSWORD = "pw-s3cret-77"


@pytest.mark.parametrize(
    "url",
    [
        f"chipclear:{PASSWORD}@db.example/events",  # the scheme left out
        f":{PASSWORD}@db.example/events",
        f"//chipclear:{PASSWORD}@db.example/events",
        f"postgresql:chipclear:{PASSWORD}@db.example/events",  # `//` left out: libpq would quote it all
        f"postgresql://chipclear:{PASSWORD}%zz@127.0.0.1:1/events",  # libpq quotes a bad %-escape
        f"host=db.example user=chipclear password={PASSWORD}",  # a libpq string, not a URL
    ],
)
def test_a_store_url_error_never_shows_the_password(url: str) -> None:
    with pytest.raises(StoreURLError, match="CHIPCLEAR_EVENT_STORE") as caught:
        open_store(url)
    assert PASSWORD not in str(caught.value)


def test_the_cli_never_prints_a_store_password() -> None:
    calls = [
        (f"chipclear:{PASSWORD}@db.example/events", ("store", "export")),
        (f"chipclear:{PASSWORD}@db.example/events", ("store", "migrate")),
        (f"postgresql://chipclear:{PASSWORD}%zz@127.0.0.1:1/events", ("store", "export")),
    ]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        results = pool.map(
            lambda call: chipclear(hermetic_env(CHIPCLEAR_EVENT_STORE=call[0]), *call[1]), calls
        )
    for result in results:
        refused(result, "CHIPCLEAR_EVENT_STORE", code=2)
        assert PASSWORD not in result.stdout + result.stderr, show(result)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("bob:s3cret@db/x", "bob:***@db/x"),
        ("postgresql:bob:s3cret@db/x", "postgresql:***@db/x"),
        ("//bob:s3cret@db/x", "//bob:***@db/x"),
        ("host=db password='s3 cret' user=bob", "host=db password=*** user=bob"),
        ("bob@db/x", "bob@db/x"),
        ("events.db", "events.db"),
    ],
)
def test_redaction_without_a_scheme(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_scrub_takes_the_password_out_of_a_drivers_words() -> None:
    url = "postgresql://bob:p%40ss@db/x?sslpassword=k3y"
    said = f'could not parse "{url}": bad "p@ss" and "p%40ss", key "k3y"'
    cleaned = scrub(said, url)
    assert "p@ss" not in cleaned and "p%40ss" not in cleaned and "k3y" not in cleaned
    assert "postgresql://bob:***@db/x" in cleaned


# -- the worker's endpoints -----------------------------------------------------------------------------
def listening(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at `port`, from the kernel's own table."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A" and len(address) == width:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words))
    return found


def test_metrics_and_health_default_to_loopback() -> None:
    defaults = Settings.from_env({})
    assert defaults.metrics_host == defaults.health_host == DEFAULT_LISTEN_HOST == "127.0.0.1"
    chosen = Settings.from_env({"CHIPCLEAR_METRICS_HOST": "0.0.0.0", "CHIPCLEAR_HEALTH_HOST": "::"})
    assert (chosen.metrics_host, chosen.health_host) == ("0.0.0.0", "::")
    with pytest.raises(ConfigError, match="CHIPCLEAR_HEALTH_HOST: expected an IP address"):
        Settings.from_env({"CHIPCLEAR_HEALTH_HOST": "everywhere"})


async def test_the_health_endpoint_listens_on_loopback_unless_told() -> None:
    port = free_port()
    runner = await serve_health(Health(), port)
    try:
        assert listening(port) == {"127.0.0.1"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}{LIVENESS_PATH}") as r,
        ):
            assert r.status == 200
    finally:
        await runner.cleanup()
    port = free_port()
    runner = await serve_health(Health(), port, "0.0.0.0")
    try:
        assert listening(port) == {"0.0.0.0"}
    finally:
        await runner.cleanup()


async def test_the_metrics_endpoint_listens_on_loopback_unless_told() -> None:
    port, everywhere = free_port(), free_port()
    metrics_runtime(port)
    metrics_runtime(everywhere, "0.0.0.0")
    for _ in range(50):  # the SDK's runtime binds on a thread of its own
        if listening(port) and listening(everywhere):
            break
        await asyncio.sleep(0.1)
    assert listening(port) == {"127.0.0.1"}
    assert listening(everywhere) == {"0.0.0.0"}


def test_a_bad_listen_host_is_refused_with_exit_2() -> None:
    result = chipclear(hermetic_env(CHIPCLEAR_METRICS_HOST="all interfaces"), "worker")
    refused(result, "CHIPCLEAR_METRICS_HOST: expected an IP address", code=2)
