"""The Temporal Web UI as operators see it, driven by Playwright in Debian's Chromium.

A dev server with its UI, encryption on, and a codec server the UI decodes through: the workflow
list filtered by a search attribute, a request's page with its decoded input, summary and gate table.
Screenshots go to $CHIPCLEAR_ARTIFACTS (default ./test-artifacts/web-ui).
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from playwright.async_api import Page, ViewportSize, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from temporalio.client import Client

from chipclear import client as ops
from chipclear.codec import ENCODING, EncryptionCodec, data_converter, new_key
from chipclear.codec_server import build_app
from chipclear.config import WorkerTuning
from chipclear.devserver import DevServer, free_port, stop
from chipclear.domain.commands import Decide
from chipclear.domain.models import ImportRequest
from chipclear.projections import PROJECTIONS
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.worker import build_worker
from tests import keys as test_keys
from tests.factories import make_policy, make_request
from tests.workflows.support import at_gate, submit_signed, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("CHIPCLEAR_ARTIFACTS", "test-artifacts")) / "web-ui"
# The README's screenshots are taken by these tests: into docs/ when asked for
# (CHIPCLEAR_SCREENSHOTS=docs), else beside the other artifacts, so a test run leaves the tree as it was.
IN_DOCS = os.environ.get("CHIPCLEAR_SCREENSHOTS") == "docs"
DOCS = Path(__file__).resolve().parents[2] / "docs" if IN_DOCS else ARTIFACTS
DOCS_VIEWPORT: ViewportSize = {"width": 1600, "height": 900}


@dataclass
class Site:
    ui: str
    plain: Client  # without the codec: what anyone without the keys sees
    held: ImportRequest  # waiting at us-export
    moved: ImportRequest  # approved on to cn-import


@pytest.fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    assert CHROMIUM.exists(), "Debian's chromium is needed: apt-get install -y chromium (.ci/run does)"
    home = tmp_path_factory.mktemp("web-ui")
    port, ui_port, codec_port = free_port(), free_port(), free_port()
    ui = f"http://127.0.0.1:{ui_port}"
    dev = DevServer(
        port=port,
        ui_port=ui_port,
        db=home / "temporal.db",
        extra=["--ui-codec-endpoint", f"http://127.0.0.1:{codec_port}"],
    )
    process = dev.start(log=home / "temporal.log")
    keys = {"ui-test": base64.b64decode(new_key())}
    runner = web.AppRunner(build_app(EncryptionCodec(keys), ui_origins=[ui]))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", codec_port).start()
    recorder = test_keys.private(test_keys.RECORDER)
    store = SQLiteEventStore(home / "events.db", projections=PROJECTIONS, recorder=recorder)
    try:
        plain = await dev.wait_ready(process)
        sealed = Client(plain.service_client, namespace=plain.namespace, data_converter=data_converter(keys))
        held, moved = (
            make_request(request_id=f"ui-{name}-{uuid.uuid4().hex[:6]}", buyer=buyer)
            for name, buyer in (
                ("held", {"name": "Alpha Compute Ltd.", "country": "CN", "kind": "private"}),
                ("moved", {"name": "Beta Cloud Ltd.", "country": "CN", "kind": "private"}),
            )
        )
        with ThreadPoolExecutor(max_workers=WorkerTuning.activity_threads) as executor:
            worker = build_worker(
                sealed,
                task_queue="web-ui",
                store=store,
                policy=make_policy("manual"),
                executor=executor,
                search_attributes=True,
            )
            async with worker:
                for request in (held, moved):
                    await submit_signed(sealed, store, request, "web-ui")
                    await wait_for(sealed, request.request_id, at_gate("us-export"))
                await ops.update(
                    sealed, moved.request_id, Decide(gate="us-export", reviewer="alice", approve=True)
                )
                await wait_for(sealed, moved.request_id, at_gate("cn-import"))
                yield Site(ui=ui, plain=plain, held=held, moved=moved)
    finally:
        store.close()
        await runner.cleanup()
        stop(process)


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield await browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            await browser.close()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def docs_shot(page: Page, name: str) -> None:
    """A picture the README shows (written into docs/ only with CHIPCLEAR_SCREENSHOTS=docs)."""
    DOCS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(DOCS / name))


async def test_the_list_filtered_by_gate_shows_the_right_requests(site: Site, page: Page) -> None:
    query = quote('ChipclearGate = "us-export"')
    held, moved = f"import-{site.held.request_id}", f"import-{site.moved.request_id}"
    body = ""
    # Visibility is eventually consistent: reload until the filter has caught up with both requests,
    # the held one there and the moved one gone.
    for _ in range(20):
        await page.goto(f"{site.ui}/namespaces/default/workflows?query={query}")
        with suppress(PlaywrightTimeoutError):  # the page is read either way; the loop decides
            # Generous: under a full run's load the list can take seconds to fill after the page loads,
            # and a read before it fills sees an empty table (a clean-clone run failed so, its screenshot
            # showing the right list a moment later).
            await page.get_by_text(held, exact=True).first.wait_for(timeout=10_000)
        body = await page.inner_text("body")
        if held in body and moved not in body:
            break
        await asyncio.sleep(0.5)
    await shot(page, "list-us-export")
    assert held in body
    assert moved not in body  # it moved on to cn-import


async def test_the_buyer_units_and_gate_columns_as_the_readme_adds_them(site: Site, page: Page) -> None:
    """The README's steps: Configure Columns, add ChipclearBuyer, ChipclearUnits and ChipclearGate."""
    query = quote('WorkflowType = "ImportRequest"')
    await page.set_viewport_size(DOCS_VIEWPORT)  # the README's pictures: wide enough for every column
    await page.goto(f"{site.ui}/namespaces/default/workflows?query={query}")
    held = f"import-{site.held.request_id}"
    await page.get_by_text(held, exact=True).first.wait_for(timeout=15_000)
    await page.get_by_role("button", name="Configure Columns").click()
    for column in ("ChipclearBuyer", "ChipclearUnits", "ChipclearGate"):
        await page.get_by_role("button", name=f"Add {column} column").click()
    for column in ("Run ID", "End"):  # room for them in the picture
        await page.get_by_role("button", name=f"Remove {column} column").click()
    await page.get_by_test_id("drawer-close-button").click()
    row = page.locator("tr", has_text=held).first
    cells = ""
    for _ in range(20):  # the table redraws with its new columns
        cells = " ".join((await row.inner_text()).split())
        if "Alpha Compute Ltd." in cells:
            break
        await asyncio.sleep(0.25)
    header = " ".join((await page.locator("thead").first.inner_text()).split())
    for column in ("ChipclearBuyer", "ChipclearUnits", "ChipclearGate"):
        assert column in header, header
    assert "Alpha Compute Ltd." in cells and "50000" in cells.replace(",", "") and "us-export" in cells, cells
    await docs_shot(page, "web-ui-list.png")


async def test_a_request_page_shows_decoded_input_summary_and_gate_table(site: Site, page: Page) -> None:
    await page.set_viewport_size(DOCS_VIEWPORT)  # the gate table whole, time column included
    await page.goto(f"{site.ui}/namespaces/default/workflows/import-{site.moved.request_id}")
    # The input is ciphertext on the server; the UI shows it decoded through the codec server.
    await page.get_by_text('"Beta Cloud Ltd."').first.wait_for(timeout=15_000)
    await shot(page, "request-input")
    await page.get_by_role("tab", name="User Metadata").click()
    # Summary, details and current details are markdown, rendered in frames of their own.
    metadata = ""
    for _ in range(30):
        metadata = "\n".join([await frame.inner_text("body") for frame in page.frames[1:]])
        if "H200 \u00d7 50,000 \u2192 Beta Cloud Ltd." in metadata and "not reached" in metadata:
            break
        await asyncio.sleep(0.5)
    await shot(page, "request-gate-table")
    assert "H200 \u00d7 50,000 \u2192 Beta Cloud Ltd." in metadata
    assert "data centre: Wuhu Cluster 3, Anhui" in metadata
    for expected in ("us-export", "approved", "50,000", "alice", "cn-import", "current", "not reached"):
        assert expected in metadata, f"{expected!r} not in the gate table:\n{metadata}"
    # The gate table renders aligned: one monospaced block whose column rules stand one above another.
    table = await _gate_table(page)
    lines = [line for line in table.splitlines() if line.strip()]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["us-export", "cn-import", "domestic-quota"]
    rules = {tuple(i for i, char in enumerate(line) if char == "|") for line in lines}
    assert len(rules) == 1 and len(next(iter(rules))) == 6, f"columns not aligned:\n{table}"
    assert "| 50,000 | alice " in table, table  # units and reviewer apart, never "50,000alice"
    # The README's picture of the page is the one this test takes.
    await docs_shot(page, "web-ui-request.png")


async def _gate_table(page: Page) -> str:
    """The gate table's text, from the monospaced block in the current details' frame."""
    for frame in page.frames[1:]:
        blocks = frame.locator("pre")
        for index in range(await blocks.count()):
            block = blocks.nth(index)
            text = await block.inner_text()
            if "time (UTC)" in text:
                font = await block.evaluate("element => getComputedStyle(element).fontFamily")
                assert "mono" in font.lower() or "courier" in font.lower(), font
                return text
    raise AssertionError("no monospaced gate table in the User Metadata tab")


async def test_without_the_keys_the_history_is_ciphertext(site: Site) -> None:
    handle = site.plain.get_workflow_handle(f"import-{site.moved.request_id}")
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert started.metadata["encoding"] == ENCODING
    assert b"Beta Cloud" not in started.data
