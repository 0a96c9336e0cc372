"""`chipclear bench` runs end to end, on a throwaway SQLite store or on the event store it is given."""

from __future__ import annotations

import json
from contextlib import closing

from chipclear.domain.models import Status
from chipclear.projections import list_requests
from chipclear.store import open_store
from tests.cli.test_cli import chipclear, hermetic_env, ok


def test_bench_on_a_postgresql_event_store_records_every_request(pg_url: str) -> None:
    result = ok(
        chipclear(
            hermetic_env(),
            "bench", "-n", "4", "--concurrency", "4", "--no-allocation", "--event-store", pg_url, "--json",
        )
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["event_store"] == "postgresql" and report["allocation"] is False
    assert {row["workflows"] for row in report["results"].values()} == {4}
    assert all(row["per_second"] > 0 for row in report["results"].values())
    with closing(open_store(pg_url)) as store:
        requests = list_requests(store)
        assert len(requests) >= 4 and {row.status for row in requests} == {Status.LICENSED}  # + warm-up
        assert store.verify().ok
