"""A disguised name is held through the real worker: a consignee written "Hu\u0430wei" with a Cyrillic
a (and a zero-width space, for the record) is held at the us-export gate against the bundled sample
list, and the stored screening says what was folded to see it.

One request, one real dev server and worker (tests/conftest.py); about two seconds.
"""

from __future__ import annotations

from temporalio.client import Client

from chipclear import client as ops
from chipclear.domain.commands import Withdraw
from chipclear.domain.events import PartiesScreened
from chipclear.domain.gates import us_export
from chipclear.domain.models import Status
from chipclear.store.sqlite import SQLiteEventStore
from tests.conftest import running_worker
from tests.factories import make_policy, make_request
from tests.workflows.support import start, wait_for

DISGUISED = "Hu\u0430\u200bwei"  # Cyrillic a (U+0430) and a zero-width space: prints as "Huawei"


async def test_a_consignee_disguised_with_a_cyrillic_letter_is_held(
    client: Client, store: SQLiteEventStore
) -> None:
    request = make_request(consignees=[{"name": DISGUISED, "country": "CN", "kind": "private"}])
    rid = request.request_id
    policy = make_policy("manual", us_export={"screening": True})
    async with running_worker(client, store, policy) as worker:
        handle = await start(client, store, worker, request)
        held = await wait_for(client, rid, us_export.on_hold)
        assert "held" in held.flags
        [stored] = [e.data for e in store.read_stream(rid) if isinstance(e.data, PartiesScreened)]
        assert stored.parties[-1].suspicious == ["zero-width U+200B removed"]
        [match] = stored.matches
        assert (match.role, match.party_name, match.entry_name) == (
            "consignee",
            DISGUISED,
            "Huawei Technologies Co., Ltd.",
        )
        assert match.score >= 90
        assert match.tokens == ["huawei"]
        assert "homoglyph: Cyrillic '\u0430' read as 'a'" in match.folds
        assert "zero-width U+200B removed" in match.folds
        lines = us_export.GATE.slice(held).describe(held)
        assert any("homoglyph" in line and "on huawei" in line for line in lines), lines
        assert any(line.startswith("  suspicious: consignee") for line in lines), lines
        await ops.update(client, rid, Withdraw(reason="test over"))
        assert (await handle.result()).status == Status.WITHDRAWN
