"""Re-screening through the real worker: a new list comes into force, the fan-out workflow asks every
live request and licence to screen again; a licensed buyer newly listed has its licence suspended, a
request queued for an allocation batch is held until a reviewer clears it with a reason. Each result is an
event."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.rescreening import LICENCES_FROM, RescreeningActivities
from chipclear import client as ops
from chipclear.contracts import LICENCE_WORKFLOW, RescreeningTally, RescreenPageInput, licence_workflow_id
from chipclear.domain.commands import ClearScreeningHold, Withdraw
from chipclear.domain.events import PartiesRescreened, ScreeningHoldCleared
from chipclear.domain.gates import cn_import, us_export
from chipclear.domain.licence import LicenceRescreened, LicenceStatus, LicenceSuspended, licence_stream
from chipclear.domain.models import Status
from chipclear.domain.screening import ScreeningIndex, ScreeningList, parties_of
from chipclear.store.sqlite import SQLiteEventStore
from tests.conftest import running_worker
from tests.domain.test_screening import EL, csl_list
from tests.factories import make_policy, make_request
from tests.store.support import NOW, append_all, scenario
from tests.workflows.licences import Rig
from tests.workflows.support import at_gate, decision, start, wait_for

LISTED_LATER = "Newcastle Compute Systems Co., Ltd."
HELD_LATER = "Riverbend Cloud Intelligence Co., Ltd."


def new_list() -> ScreeningList:
    """A list that names both buyers, as a later download of the CSL might."""
    rows = [
        {"_id": f"n-{number}", "source": EL, "entity_number": f"EL-9{number}", "type": "Entity",
         "programs": "EAR", "name": name, "addresses": "Shenzhen, CN", "alt_names": ""}
        for number, name in enumerate((LISTED_LATER, HELD_LATER))
    ]  # fmt: skip
    return csl_list(*rows)


async def test_a_new_list_suspends_a_valid_licence_and_holds_a_request_under_review(
    client: Client, store: SQLiteEventStore
) -> None:
    screening = {"screening": True}
    auto = make_policy("auto", us_export=screening)
    manual = make_policy("manual", us_export=screening, cn_import={"allocate_from_batches": True})
    buyer = {"country": "CN", "kind": "private"}
    licensed = make_request(units=500, buyer={"name": LISTED_LATER, **buyer})
    reviewed = make_request(units=500, buyer={"name": HELD_LATER, **buyer})
    async with (
        running_worker(client, store, auto) as licensing,
        running_worker(client, store, manual) as reviewing,
    ):
        rig = Rig(client, store, licensing)
        assert (await (await start(client, store, licensing, licensed)).result()).status is Status.LICENSED
        # Nobody has acted on the licence yet, so no workflow of its own runs: the fan-out finds it in
        # the event store and opens it.
        assert await ops.licence_live(client, licensed.request_id) is None
        await start(client, store, reviewing, reviewed)
        await wait_for(client, reviewed.request_id, at_gate(us_export.NAME))
        await ops.update(client, reviewed.request_id, decision(us_export.NAME, "alice"))
        # No batch is open: the request waits in the allocation queue.
        await wait_for(client, reviewed.request_id, lambda state: state.status == "cn_import_queued")

        listing = new_list()
        assert ScreeningIndex(listing).screen(parties_of(licensed), 90.0)  # the new list names them
        assert store.save_screening_list(listing, by="ops")
        version = listing.info.version
        tallies = {}
        for worker in (licensing, reviewing):
            handle = await ops.start_rescreening(client, worker.task_queue, version)
            tallies[worker.task_queue] = RescreeningTally.model_validate(await handle.result())
        # The licence is suspended, naming the match; the request at cn-import is held. Both deployments
        # keep their records in this one store, so the second fan-out finds the licence too, screened
        # against this list already: nothing more is recorded.
        assert tallies[licensing.task_queue].licences == tallies[reviewing.task_queue].licences == 1
        assert tallies[licensing.task_queue].licences_suspended == 1
        assert tallies[reviewing.task_queue].licences_suspended == 0
        assert (
            tallies[reviewing.task_queue].requests == 1 and tallies[reviewing.task_queue].requests_held == 1
        )
        assert tallies[licensing.task_queue].failures == tallies[reviewing.task_queue].failures == 0

        licence_events = [e.data for e in store.read_stream(licence_stream(licensed.request_id))]
        rescreened, suspended = licence_events
        assert isinstance(rescreened, LicenceRescreened) and rescreened.list_version == version
        assert isinstance(suspended, LicenceSuspended) and LISTED_LATER in suspended.reason
        live = await ops.licence_live(client, licensed.request_id)
        assert live is not None and live.status is LicenceStatus.SUSPENDED
        await rig.declare(10_000)
        with pytest.raises(ops.Rejected, match="is suspended"):
            await rig.ship(licensed.request_id, "R1", 10)

        # Held: no approval at any gate until a us-export reviewer clears the false positive.
        with pytest.raises(ops.Rejected, match="held by re-screening against list"):
            await ops.update(client, reviewed.request_id, decision(cn_import.NAME, "wang"))
        with pytest.raises(ops.Rejected, match="only a us-export reviewer"):
            await ops.update(client, reviewed.request_id, ClearScreeningHold(reviewer="wang", reason="mine"))
        cleared = await ops.update(
            client, reviewed.request_id, ClearScreeningHold(reviewer="alice", reason="a namesake in Hefei")
        )
        assert cleared.events == ["ScreeningHoldCleared"] and cleared.held is None
        assert cleared.status == "cn_import_queued"  # back where it was: waiting for a batch
        request_events = [e.data for e in store.read_stream(reviewed.request_id)]
        assert any(isinstance(e, PartiesRescreened) and e.matches for e in request_events)
        assert any(isinstance(e, ScreeningHoldCleared) for e in request_events)

        # The same list loaded again finds its fan-out done: nobody is screened twice against it.
        again = await ops.start_rescreening(client, reviewing.task_queue, version)
        assert (
            RescreeningTally.model_validate(await again.result()).requests_held == 1
        )  # the same run's tally
        rescreenings = [
            e for e in store.read_stream(reviewed.request_id) if isinstance(e.data, PartiesRescreened)
        ]
        assert len(rescreenings) == 1
        await ops.update(client, reviewed.request_id, Withdraw(reason="the test is done"))
    assert store.verify().ok


async def test_the_fan_out_pages_through_the_stores_valid_licences_and_skips_expired_ones(
    client: Client, store: SQLiteEventStore
) -> None:
    """Licences come from the event store, a page at a time: every licensed request whose licence can
    still be acted on, once each, and none whose validity has passed (nobody ever opened those)."""
    valid = [scenario("licensed", f"lic-{number}") for number in range(5)]
    lapsed = scenario("licensed", "lic-old", start=NOW - timedelta(days=6 * 365))
    append_all(store, [*valid, lapsed, scenario("denied", "den-1")])
    finding = RescreeningActivities(client, store)
    found: list[str] = []
    token: str | None = LICENCES_FROM
    pages = 0
    while token is not None:
        page = await ActivityEnvironment().run(
            finding.live_targets, RescreenPageInput(page_token=token, page_size=2)
        )
        assert all(target.workflow_type == LICENCE_WORKFLOW for target in page.targets)
        found += [target.workflow_id for target in page.targets]
        token, pages = page.next_page_token, pages + 1
    assert sorted(found) == [licence_workflow_id(f"lic-{number}") for number in range(5)]
    assert pages == 4  # six licensed requests, two a page, and the short last page says it is the last
