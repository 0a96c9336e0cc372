"""Payload encryption: the codec, key rotation, the codec server, and ciphertext in a real history."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from chipclear import client as ops
from chipclear.codec import (
    ENCODING,
    KEY_ID,
    CodecKeyError,
    EncryptionCodec,
    UnknownKey,
    data_converter,
    keys_from_env,
    new_key,
    parse_keys,
)
from chipclear.codec_server import build_app
from chipclear.domain.commands import Withdraw
from chipclear.domain.models import Status
from chipclear.store.sqlite import SQLiteEventStore
from tests.cli.test_cli import chipclear, hermetic_env, refused
from tests.conftest import running_worker
from tests.factories import make_policy, make_request
from tests.workflows.support import at_gate, submit_signed, wait_for

UI = "http://127.0.0.1:8233"


def keyring(*ids: str) -> dict[str, bytes]:
    return {key_id: base64.b64decode(new_key()) for key_id in ids}


def clear(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


# -- the codec ----------------------------------------------------------------------------------------
async def test_round_trip_hides_the_data_and_names_the_key() -> None:
    codec = EncryptionCodec(keyring("2026-11"))
    original = [clear('{"buyer": "ByteDance Ltd.", "unit_price_usd": 32000}'), clear("[]")]
    sealed = await codec.encode(original)
    assert all(p.metadata["encoding"] == ENCODING and p.metadata[KEY_ID] == b"2026-11" for p in sealed)
    assert all(b"ByteDance" not in p.data and b"32000" not in p.data for p in sealed)
    assert sealed[0].data[:12] != (await codec.encode(original))[0].data[:12]  # a fresh nonce each time
    assert await codec.decode(sealed) == original


async def test_rotation_seals_with_the_first_key_and_opens_with_any() -> None:
    old, new = keyring("2026-10"), keyring("2026-11")
    before = await EncryptionCodec(old).encode([clear("sealed last month")])
    rotated = EncryptionCodec(new | old)  # the new key first: it seals; the old one still opens
    after = await rotated.encode([clear("sealed today")])
    assert after[0].metadata[KEY_ID] == b"2026-11"
    assert await rotated.decode(before + after) == [clear("sealed last month"), clear("sealed today")]
    with pytest.raises(UnknownKey, match="2026-11"):
        await EncryptionCodec(old).decode(after)  # retired workers cannot read what they never had


async def test_tampering_and_plain_payloads() -> None:
    codec = EncryptionCodec(keyring("k1"))
    [sealed] = await codec.encode([clear("approve 50000 units")])
    tampered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(ValueError, match="fails authentication"):
        await codec.decode([tampered])
    # Payloads written before encryption was turned on still read.
    assert await codec.decode([clear("old")]) == [clear("old")]


def test_keys_from_the_environment_and_a_file(tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    keys = keys_from_env({"CHIPCLEAR_CODEC_KEYS": f"b={first}, a={second}"})
    assert list(keys) == ["b", "a"] and keys["b"] == base64.b64decode(first)
    key_file = tmp_path / "keys"
    key_file.write_text(f"# rotated 2026-11\nnew={first}\nold={second}\n")
    assert list(keys_from_env({"CHIPCLEAR_CODEC_KEY_FILE": str(key_file)})) == ["new", "old"]
    assert keys_from_env({}) == {}
    assert data_converter({}).payload_codec is None
    assert isinstance(data_converter(keys).payload_codec, EncryptionCodec)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("k1", "expected ID=BASE64KEY"),
        ("=abc", "expected ID=BASE64KEY"),
        ("k1=not base64!", "not valid base64"),
        (f"k1={base64.b64encode(b'short').decode()}", "32 bytes, got 5"),
        ("k1={key},k1={key}", "listed twice"),
    ],
)
def test_bad_keys_are_refused_by_name(text: str, problem: str) -> None:
    with pytest.raises(CodecKeyError, match=problem):
        parse_keys(text.replace("{key}", new_key()), source="CHIPCLEAR_CODEC_KEYS")


def test_an_unreadable_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CodecKeyError, match=r"CHIPCLEAR_CODEC_KEY_FILE .*missing"):
        keys_from_env({"CHIPCLEAR_CODEC_KEY_FILE": str(tmp_path / "missing")})


# -- the codec server ---------------------------------------------------------------------------------
@pytest.fixture
async def codec_client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    app = build_app(EncryptionCodec(keyring("k1")), ui_origins=[UI])
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def as_json(payload: Payload) -> dict[str, object]:
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


async def test_codec_server_encodes_and_decodes_for_the_ui(codec_client: TestClient) -> None:  # type: ignore[type-arg]
    body = {"payloads": [as_json(clear('"ByteDance Ltd."'))]}
    headers = {"Origin": UI, "X-Namespace": "default"}
    encoded = await codec_client.post("/encode", json=body, headers=headers)
    assert encoded.status == 200 and encoded.headers["Access-Control-Allow-Origin"] == UI
    sealed = (await encoded.json())["payloads"]
    assert base64.b64decode(sealed[0]["metadata"]["encoding"]) == ENCODING
    assert b"ByteDance" not in base64.b64decode(sealed[0]["data"])
    decoded = await codec_client.post("/decode", json={"payloads": sealed}, headers=headers)
    assert decoded.status == 200
    assert (await decoded.json())["payloads"] == body["payloads"]


async def test_codec_server_answers_the_preflight_for_the_ui_origin_only(codec_client: TestClient) -> None:  # type: ignore[type-arg]
    ours = await codec_client.options("/decode", headers={"Origin": UI})
    assert ours.status == 200 and ours.headers["Access-Control-Allow-Origin"] == UI
    assert "X-Namespace" in ours.headers["Access-Control-Allow-Headers"]
    theirs = await codec_client.options("/decode", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in theirs.headers


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '{"payloads": "nope"}',
        '{"payloads": [{"metadata": {"encoding": 5}}]}',
        '{"unknown": 1}',
    ],
)
async def test_codec_server_rejects_malformed_bodies_with_400(codec_client: TestClient, body: str) -> None:  # type: ignore[type-arg]
    response = await codec_client.post("/decode", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert "body: expected Payloads" in (await response.json())["error"]


async def test_codec_server_rejects_a_payload_sealed_with_another_key(codec_client: TestClient) -> None:  # type: ignore[type-arg]
    [foreign] = await EncryptionCodec(keyring("k9")).encode([clear("secret")])
    response = await codec_client.post("/decode", json={"payloads": [as_json(foreign)]})
    assert response.status == 400 and "k9" in (await response.json())["error"]


# -- a real history -----------------------------------------------------------------------------------
async def test_history_holds_ciphertext_and_the_keys_read_it(
    temporal_env: WorkflowEnvironment, client: Client, store: SQLiteEventStore
) -> None:
    keys = keyring("k1")
    sealed_client = Client(
        client.service_client, namespace=client.namespace, data_converter=data_converter(keys)
    )
    request = make_request(request_id=f"sealed-{uuid.uuid4().hex[:8]}", unit_price_usd=31_999)
    async with running_worker(sealed_client, store, make_policy("manual")) as worker:
        submission = await submit_signed(sealed_client, store, request, worker.task_queue)
        await wait_for(sealed_client, request.request_id, at_gate("us-export"))
        await ops.update(sealed_client, request.request_id, Withdraw(reason="test over"))
        assert (await submission.handle.result()).status == Status.WITHDRAWN

    # Without the codec the stored history is ciphertext: no buyer, no price, only the key's id.
    raw = await client.get_workflow_handle(submission.handle.id).fetch_history()
    started = raw.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert started.metadata["encoding"] == ENCODING and started.metadata[KEY_ID] == b"k1"
    everything = json.dumps(raw.to_json_dict())
    assert "ByteDance" not in everything and "31999" not in everything
    # With the keys, the same input reads back as the request that was submitted.
    [opened] = await EncryptionCodec(keys).decode([started])
    assert json.loads(opened.data)["request"]["request_id"] == request.request_id
    # The event store, the legal record, is ours and stays readable without the keys.
    assert store.read_stream(request.request_id)[0].type == "RequestSubmitted"


def test_cli_makes_keys_and_refuses_to_serve_without_them() -> None:
    made = chipclear(hermetic_env(), "codec-key", "2026-11")
    assert made.returncode == 0 and re.fullmatch(r"2026-11=[A-Za-z0-9+/]{43}=\n", made.stdout)
    assert len(parse_keys(made.stdout, source="stdout")["2026-11"]) == 32
    refused(chipclear(hermetic_env(), "codec-server"), "CHIPCLEAR_CODEC_KEYS", "no keys", code=2)
    bad = chipclear(hermetic_env(CHIPCLEAR_CODEC_KEYS="2026-11=short"), "codec-server")
    refused(bad, "CHIPCLEAR_CODEC_KEYS, entry 1 (key '2026-11')", code=2)
