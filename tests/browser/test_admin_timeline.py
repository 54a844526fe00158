"""In a real browser: support staff log in, find a transfer by request id, read its timeline and re-drive one.

On either transfer store: with the ORM store through the Transfer model's
admin list and page; with TRANSFER_STORE=scylla the same "Transfers" link
leads to the store page (transfers/admin_scylla.py), where the same records
are found, read and re-driven.

Headless Chromium from Debian's packages (`apt-get install -y chromium`),
driven by Playwright for Python against pytest-django's live server. The
screenshots are kept as artifacts: test-artifacts/admin-timeline.png,
admin-balances.png and admin-redrive.png (with the store's name in the file name).
Skips where Chromium or Playwright is missing, except on CI (CI=true), where
that is a failure: .ci/run installs them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings

from settlement import saga
from settlement.deposits import deposit_to_funding
from settlement.ledger import get_funding_ledger
from transfer_site.bus import get_message_bus
from transfer_site.messages import BalanceOperation
from transfers import services
from transfers.relay import TransferRelay
from transfers.store import get_transfer_store
from ubscore.services import apply_operations

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "browser-test-password"  # a throwaway test database


def _need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing on CI (.ci/run installs it)")
    pytest.skip(f"{what} is missing: apt-get install -y chromium; pip install -r requirements-dev.txt")


@pytest.fixture
def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("Playwright for Python")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _need(f"Chromium ({CHROMIUM})")
    return sync_playwright


@pytest.fixture
def finished_transfer(transactional_db):
    """A funding -> spot transfer driven through every step, so its timeline is full."""
    # A transactional test before this one may have flushed the seeded assets.
    importlib.import_module("transfers.migrations.0002_seed_assets").seed_assets(apps, None)
    user_id = 5150
    deposit_to_funding(user_id, 1, 100_000_000, reference=515_001)
    bus = get_message_bus()
    bus.published.clear()
    ports = saga.Ports(store=get_transfer_store(), ledger=get_funding_ledger(), bus=bus)
    request = services.TransferRequest("funding", "USDT", "spot", "USDT", "12.5", "browser-test-1")
    record = services.create_transfer(user_id, request).record
    services.create_transfer(user_id, services.TransferRequest("funding", "USDT", "spot", "USDT", "1"))  # a neighbour
    TransferRelay(bus=bus).relay_batch()
    saga.reserve_funding([record.request_id], ports)
    operations = [p.message for p in bus.published if isinstance(p.message, BalanceOperation)]
    saga.settle_balance_events(apply_operations(operations), ports)
    bus.published.clear()
    assert get_transfer_store().get(record.request_id).status.value == "success"
    return record


@pytest.fixture
def stuck_transfer(transactional_db):
    """A spot -> funding transfer published to UBSCore whose answer never came: `pending`, in flight."""
    importlib.import_module("transfers.migrations.0002_seed_assets").seed_assets(apps, None)
    bus = get_message_bus()
    request = services.TransferRequest("spot", "USDT", "funding", "USDT", "3", "browser-stuck-1")
    record = services.create_transfer(5151, request).record
    TransferRelay(bus=bus).relay_batch()
    bus.published.clear()
    assert get_transfer_store().get(record.request_id).status.value == "pending"
    return record


def log_in_and_open_transfers(page, base_url: str) -> None:
    """Log in as the support lead and follow the admin's "Transfers" link."""
    page.goto(f"{base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", "support-lead")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    page.click("#content-main a:text-is('Transfers')")
    page.wait_for_selector("#result_list, input[name=request_id]")


def find_transfer(page, request_id: str) -> None:
    """Search by request id (the list's search box, or the store page's field) and open the one row."""
    if settings.TRANSFER_STORE == "orm":
        page.fill("#searchbar", request_id)
        page.press("#searchbar", "Enter")
        page.wait_for_url(f"**q={request_id}*")
    else:
        assert "/admin/transfers/store/" in page.url
        page.fill("input[name=request_id]", request_id)
        page.click("input[type=submit][value=Search]")
        page.wait_for_url(f"**request_id={request_id}*")
    assert page.locator("#result_list tbody tr").count() == 1
    page.click(f"#result_list a:text-is('{request_id}')")
    page.wait_for_selector("#timeline")


@contextlib.contextmanager
def transfer_opened_by_support(sync_playwright, base_url: str, request_id: str):
    """Chromium with the support lead logged in and this transfer's page (with its timeline) open."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            log_in_and_open_transfers(page, base_url)
            find_transfer(page, request_id)
            yield page
        finally:
            browser.close()


def test_support_finds_a_transfer_and_reads_its_timeline(live_server, django_user_model, finished_transfer,
                                                         sync_playwright):
    django_user_model.objects.create_superuser("support-lead", password=PASSWORD)
    request_id = str(finished_transfer.request_id)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / f"admin-timeline-{settings.TRANSFER_STORE}.png"

    # No ORM calls from here on: Playwright's sync API runs an event loop in this thread.
    with transfer_opened_by_support(sync_playwright, live_server.url, request_id) as page:
        events = page.locator("#timeline tbody tr").all_inner_texts()
        page.locator("#timeline").scroll_into_view_if_needed()
        page.screenshot(path=str(screenshot), full_page=True)
        body = page.inner_text("body")

        page.click("text=User's balances")  # the same user's balances, read-only
        page.wait_for_selector("#balances")
        usdt = page.locator("#balances tbody tr", has_text="USDT").inner_text()
        reconcile = page.locator("#reconcile tbody tr", has_text="USDT").inner_text()
        page.screenshot(path=str(ARTIFACTS / f"admin-balances-{settings.TRANSFER_STORE}.png"), full_page=True)

    kinds = [row.split("\t")[1].strip() for row in events]
    assert kinds == ["accepted", "published", "status_changed", "ledger_reserved", "transfer_in_sent",
                     "ubscore_answer", "ledger_posted", "status_changed"], events
    assert "Status pending → success" in events[-1]
    assert "UBSCore answered applied" in events[5]
    assert ("12.5 USDT" in body or "USDT\t12.5" in body) and "browser-test-1" in body  # the list page or the store's
    assert screenshot.stat().st_size > 10_000
    assert usdt.split("\t")[:5] == ["USDT", "87.5", "0", "12.5", "0"], usdt
    assert reconcile.split("\t")[-1].strip() == "ok", reconcile


def test_support_redrives_a_stuck_transfer(live_server, django_user_model, stuck_transfer, sync_playwright):
    django_user_model.objects.create_superuser("support-lead", password=PASSWORD)
    request_id = str(stuck_transfer.request_id)
    bus = get_message_bus()
    ARTIFACTS.mkdir(exist_ok=True)

    with transfer_opened_by_support(sync_playwright, live_server.url, request_id) as page:
        page.click("#redrive-form button[type=submit]")
        page.wait_for_selector("ul.messagelist li.success")
        message = page.inner_text("ul.messagelist li.success")
        page.screenshot(path=str(ARTIFACTS / f"admin-redrive-{settings.TRANSFER_STORE}.png"), full_page=True)

    assert "Re-drove" in message and ("1 transfer" in message or request_id in message), message
    # The re-drive is the recovery task's step: TransferOut to UBSCore again, with the same ref_id.
    assert [(p.message.ref_id, p.message.operation) for p in bus.published] == [
        (stuck_transfer.request_id, "TransferOut")]
    timeline = [event.kind.value for event in get_transfer_store().timeline(stuck_transfer.request_id)]
    assert "redrive" in timeline, timeline
