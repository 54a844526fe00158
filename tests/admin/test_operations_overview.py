"""The operations overview (/admin/operations/overview/) on whichever transfer store is configured."""

from __future__ import annotations

import re
import time

import pytest

from operations.charts import per_minute_chart
from settlement.models import ReconcileRun
from settlement.services import record_reconcile
from transfers.domain import TransferStatus
from transfers.store import get_transfer_store

URL = "/admin/operations/overview/"
pytestmark = pytest.mark.django_db


def finish(record, status: TransferStatus, reason: str | None = None) -> None:
    assert get_transfer_store().compare_and_set_status(
        record.request_id, {TransferStatus.PENDING}, status, reason)


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</div>', html, re.S)
    assert match, element_id
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def test_the_overview_counts_this_hours_transfers(support_client, make_transfer, settings):
    settings.STUCK_TRANSFER_SECONDS = 3600  # nothing made here is stuck yet
    records = [make_transfer(amount=str(n + 1)) for n in range(5)]
    finish(records[0], TransferStatus.SUCCESS)
    finish(records[1], TransferStatus.FAILED, "insufficient balance")
    finish(records[2], TransferStatus.FAILED, "insufficient balance")
    finish(records[3], TransferStatus.FAILED, "asset disabled")
    record_reconcile([])

    response = support_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="per-minute-chart"' in html
    assert re.search(r'class="total-accepted">5<', html) and re.search(r'class="total-success">1<', html)
    assert re.search(r'class="total-failed">3<', html)
    assert 'data-total="5"' in html  # the accepted line of the chart
    failed = text_of(html, "failed")
    assert failed.startswith("Failed in the last 60 minutes: 3")
    assert failed.index("insufficient balance 2") < failed.index("asset disabled 1")  # most frequent first
    in_flight = text_of(html, "in-flight")
    assert "pending 1 0" in in_flight and "Nothing stuck." in in_flight
    assert "clean" in text_of(html, "reconcile")
    assert "unavailable" not in html


def test_stuck_transfers_are_counted_and_linked(support_client, make_transfer, settings):
    settings.STUCK_TRANSFER_SECONDS = 1
    make_transfer()
    make_transfer()
    time.sleep(1.1)
    html = support_client.get(URL).content.decode()
    assert "pending 2 2" in text_of(html, "in-flight")
    link = re.search(r'id="stuck-link" href="([^"]+)"', html).group(1)
    assert link == "/admin/transfers/store/?stuck_seconds=1"
    listed = support_client.get(link).content.decode()
    assert len(re.findall(r'href="\?request_id=\d+"', listed)) == 2  # the two stuck ones, listed


def test_a_different_reconcile_is_shown_as_such(support_client):
    ReconcileRun.objects.create(checked_at="2026-12-03T10:00:00Z", clean=False,
                                assets=[{"asset": "USDT", "spot": "-5", "ledger": "0", "pending": "0"}])
    reconcile = text_of(support_client.get(URL).content.decode(), "reconcile")
    assert "2026-12-03 10:00:00 UTC: different" in reconcile and "USDT -5 0 0" in reconcile


def test_a_section_whose_source_fails_is_shown_unavailable_and_the_rest_still_is(support_client, monkeypatch):
    from operations import selectors

    def broken():
        raise ConnectionError("store down")

    monkeypatch.setattr(selectors, "get_transfer_store", broken)
    html = support_client.get(URL).content.decode()
    assert 'data-section="activity"' in html and 'data-section="in_flight"' in html
    assert "store down" in html
    assert "No reconcile has run yet" in html


def test_the_admin_home_links_it(support_client):
    assert f'href="{URL}"' in support_client.get("/admin/").content.decode()


def test_staff_without_the_view_permission_are_refused(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("no-rights", password="pw", is_staff=True))
    assert client.get(URL).status_code == 403


def test_anonymous_visitors_are_sent_to_the_login(client):
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_chart_draws_one_point_per_minute_on_a_readable_scale():
    minutes = [1_700_000_040_000 + i * 60_000 for i in range(60)]
    svg = per_minute_chart(minutes, {"accepted": [0] * 59 + [7], "failed": [0] * 60}, "a <title>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "a &lt;title&gt;" in svg and "<title>a <" not in svg
    accepted = re.search(r'series-accepted" data-total="7"[^>]*points="([^"]+)"', svg).group(1).split()
    assert len(accepted) == 60
    last_x, last_y = map(float, accepted[-1].split(","))
    first_x, first_y = map(float, accepted[0].split(","))
    assert last_x > first_x and last_y < first_y  # the 7 is above the zeros
    assert ">10</text>" in svg  # the y axis tops at 10, the next 1-2-5 step above 7


def test_support_reads_the_reconcile_runs_and_cannot_change_them(support_client):
    run = record_reconcile([])
    assert support_client.get("/admin/settlement/reconcilerun/").status_code == 200
    assert support_client.get(f"/admin/settlement/reconcilerun/{run.pk}/delete/").status_code == 403
