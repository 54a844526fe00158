"""Support staff in a real browser, on the running service as `make run` starts it.

Headless Chromium (Debian's package) driven by Playwright for Python against
the end-to-end stack: gunicorn serving the admin and its static files
(WhiteNoise, after `collectstatic`), with the broker, relay, bridge, Celery
worker and beat and UBSCore running. No test server, no in-process shortcuts:
transfers are made over the HTTP API and settled by the real processes.

The pages must look and work as a person sees them, so the test fails when
the stylesheets or scripts do not load: the header's computed style, the
filter sidebar beside its list, the theme script, and "select all" + re-drive
done with clicks. Either transfer store (TRANSFER_STORE=scylla: the store
page). Screenshots: test-artifacts/admin-*-<store>.png.

Skips where Chromium or Playwright is missing, except on CI (CI=true), where
that is a failure: .ci/run installs them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import TERMINAL
from tests.e2e.stack import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
STAFF_USER, PASSWORD = "support-lead", "browser-test-password"
HEADER_BLUE = "rgb(65, 118, 144)"  # the admin's --header-bg (#417690), from its base.css


def _need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing on CI (.ci/run installs it)")
    pytest.skip(f"{what} is missing: apt-get install -y chromium; pip install -r requirements-dev.txt")


@pytest.fixture(scope="module")
def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("Playwright for Python")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _need(f"Chromium ({CHROMIUM})")
    return sync_playwright


@pytest.fixture(scope="module")
def support_lead(stack) -> str:
    """A staff member in the "support" group (the role the migrations make), not a superuser."""
    stack.manage("shell", "-c", (
        "from django.contrib.auth.models import Group, User\n"
        f"user, _ = User.objects.get_or_create(username={STAFF_USER!r}, defaults={{'is_staff': True}})\n"
        f"user.set_password({PASSWORD!r}); user.save()\n"
        "user.groups.add(Group.objects.get(name='support'))\n"
    ))
    return STAFF_USER


def store_name(stack) -> str:
    return stack.env.get("TRANSFER_STORE", "orm")


def screenshot(page, name: str, stack) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"admin-{name}-{store_name(stack)}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, path
    return path


@contextlib.contextmanager
def logged_in_page(sync_playwright, stack):
    """Chromium with the support lead logged in on the admin's home page."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{stack.base_url}/admin/login/?next=/admin/")
            page.fill("#id_username", STAFF_USER)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/")
            yield page
        finally:
            browser.close()


def assert_styled_and_scripted(page) -> None:
    """The admin's CSS and JS loaded from gunicorn: fails on a bare-HTML page."""
    header = page.evaluate("""() => { const s = getComputedStyle(document.getElementById('header'));
                                      return [s.backgroundColor, s.display]; }""")
    assert header == [HEADER_BLUE, "flex"], f"the admin's stylesheet did not load: header {header}"
    theme = page.evaluate("() => document.documentElement.dataset.theme")
    assert theme in ("auto", "light", "dark"), "the admin's theme script did not run"


def open_transfer(page, stack, request_id: str) -> None:
    """From the admin home: "Transfers", search by request id, open the one row (its timeline)."""
    page.goto(f"{stack.base_url}/admin/")
    page.click("#content-main a:text-is('Transfers')")
    page.wait_for_selector("#result_list, input[name=request_id]")
    if store_name(stack) == "orm":
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


def test_support_finds_a_transfer_reads_its_timeline_and_the_users_balances(stack, user, support_lead,
                                                                            sync_playwright):
    user.deposit("USDT", "100", to="funding")
    status, body = user.transfer("funding", "spot", "USDT", "12.5", client_transfer_id="browser-test-1")
    assert status == 202, body
    request_id = body["request_id"]
    assert user.wait_terminal(request_id)["status"] == "success"

    with logged_in_page(sync_playwright, stack) as page:
        assert_styled_and_scripted(page)
        screenshot(page, "home", stack)
        open_transfer(page, stack, request_id)
        assert_styled_and_scripted(page)
        events = page.locator("#timeline tbody tr").all_inner_texts()
        body_text = page.inner_text("body")
        page.locator("#timeline").scroll_into_view_if_needed()
        screenshot(page, "timeline", stack)

        page.click("text=User's balances")
        page.wait_for_selector("#balances")
        usdt = page.locator("#balances tbody tr", has_text="USDT").inner_text()
        reconcile = page.locator("#reconcile tbody tr", has_text="USDT").inner_text()
        screenshot(page, "balances", stack)

    kinds = [row.split("\t")[1].strip() for row in events]
    assert kinds[0] == "accepted" and kinds[-1] == "status_changed", events
    for kind in ("published", "ledger_reserved", "transfer_in_sent", "ubscore_answer", "ledger_posted"):
        assert kind in kinds, (kind, events)
    assert "pending → success" in events[-1], events
    assert "browser-test-1" in body_text
    assert usdt.split("\t")[:5] == ["USDT", "87.5", "0", "12.5", "0"], usdt
    assert reconcile.split("\t")[-1].strip() == "ok", reconcile


def test_a_changelist_has_its_filter_sidebar_beside_the_list(stack, support_lead, sync_playwright):
    # UBSCore's applied operations: a changelist in the relational database on either store.
    with logged_in_page(sync_playwright, stack) as page:
        page.goto(f"{stack.base_url}/admin/ubscore/appliedoperation/")
        page.wait_for_selector("#changelist-filter")
        assert_styled_and_scripted(page)
        table = page.locator("#changelist .results, #result_list").first.bounding_box()
        sidebar = page.locator("#changelist-filter").bounding_box()
        screenshot(page, "changelist", stack)
    assert table and sidebar
    assert sidebar["x"] >= table["x"] + table["width"] - 1, (table, sidebar)  # to the right, not below
    assert sidebar["y"] < table["y"] + table["height"], (table, sidebar)


def test_support_redrives_all_stuck_transfers_from_the_operations_overview(stack, user, support_lead,
                                                                           sync_playwright):
    user.deposit("USDT", "10", to="spot")
    # UBSCore does not answer, so the transfers stay in flight; beat is stopped too, or its own re-drive
    # would touch them every STUCK_TRANSFER_SECONDS and take them off the stuck list now and then.
    paused = [stack.processes["ubscore"], stack.processes["beat"]]
    for process in paused:
        os.killpg(process.pid, signal.SIGSTOP)
    try:
        request_ids = []
        for amount in ("1", "2"):
            status, body = user.transfer("spot", "funding", "USDT", amount)
            assert status == 202, body
            request_ids.append(body["request_id"])
        stuck_seconds = int(stack.env["STUCK_TRANSFER_SECONDS"])

        with logged_in_page(sync_playwright, stack) as page:
            page.click("#content-main a:text-is('Operations overview')")
            page.wait_for_selector("#overview svg.per-minute-chart")
            assert_styled_and_scripted(page)

            def stuck_link_shown():
                page.reload()
                return page.locator("#stuck-link").count() > 0

            wait_until(stuck_link_shown, stuck_seconds + 30, "the overview to count the transfers as stuck",
                       interval=1)
            accepted = int(page.inner_text(".total-accepted"))
            assert accepted >= 2
            screenshot(page, "overview", stack)

            page.click("#stuck-link")
            page.wait_for_selector("#result_list")
            for request_id in request_ids:
                assert page.locator(f"#result_list a:text-is('{request_id}')").count() == 1
            rows = page.locator("#result_list input.action-select").count()
            page.click("#action-toggle")  # "select all": the admin's actions.js must run
            assert page.locator("#result_list input.action-select:checked").count() == rows
            assert page.inner_text(".action-counter") == f"{rows} of {rows} selected"
            page.click("#changelist-form button[name=index]")
            page.wait_for_selector("ul.messagelist li")
            message = page.inner_text("ul.messagelist li")
            screenshot(page, "redrive", stack)

            assert re.fullmatch(rf"Re-drove (\d+) of {rows} transfers\.", message) or (
                rows == 1 and message.startswith("Re-drove transfer")), message
            page.goto(f"{stack.base_url}/admin/transfers/store/?request_id={request_ids[0]}")
            timeline = page.locator("#timeline tbody tr").all_inner_texts()
    finally:
        for process in paused:
            os.killpg(process.pid, signal.SIGCONT)

    by_support = [row for row in timeline if row.split("\t")[1].strip() == "redrive" and "admin:support-lead" in row]
    assert by_support, timeline  # the click re-drove it, in the support lead's name
    for request_id in request_ids:
        assert user.wait_terminal(request_id)["status"] in TERMINAL
        assert user.get_transfer(request_id)[1]["status"] == "success"


def test_support_finds_a_transfers_webhook_delivery_and_redelivers_it(stack, user, support_lead, sync_playwright):
    from tests.webhooks.receiver import Receiver

    receiver = Receiver()
    try:
        status, endpoint = stack.http("POST", "/api/v1/user/webhooks", user.api_key, {"url": receiver.url})
        assert status == 201, endpoint
        user.deposit("USDT", "10", to="funding")
        status, body = user.transfer("funding", "spot", "USDT", "3")
        assert status == 202, body
        request_id = body["request_id"]
        event_id = f"evt_{request_id}"
        wait_until(lambda: receiver.delivered_ids() == {event_id}, 30, "the webhook delivery")

        with logged_in_page(sync_playwright, stack) as page:
            open_transfer(page, stack, request_id)
            page.click("a:text-is('Webhook deliveries')")
            page.wait_for_url("**/admin/webhooks/webhookdelivery/**")
            page.wait_for_selector("#result_list")
            assert_styled_and_scripted(page)
            [row] = page.locator("#result_list tbody tr").all_inner_texts()
            assert event_id in row and "transfer.succeeded" in row and "Delivered" in row, row
            page.click("#result_list input.action-select")
            page.select_option("select[name=action]", "redeliver")
            page.click("#changelist-form button[name=index]")
            page.wait_for_selector("ul.messagelist li")
            message = page.inner_text("ul.messagelist li")
            screenshot(page, "webhook-redeliver", stack)
        assert message == "Queued 1 delivery again.", message
        # Sent again: the same event, once more.
        wait_until(lambda: len(receiver.answered_ok) == 2, 30, "the redelivery")
        assert receiver.delivered_ids() == {event_id}
    finally:
        receiver.close()
