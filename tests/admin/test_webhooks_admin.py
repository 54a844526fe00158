"""Webhooks in the admin: deliveries per transfer and per endpoint, their attempts, and "Redeliver"."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from transfers.domain import Direction, TransferRecord, TransferStatus
from transfers.store import get_transfer_store
from webhooks import services
from webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery

pytestmark = pytest.mark.django_db

DELIVERIES = reverse("admin:webhooks_webhookdelivery_changelist")
_request_ids = iter(range(8_100_000_000, 8_200_000_000))


@pytest.fixture
def delivered(settings, user_id):
    """A finished transfer of a user with an endpoint, its event delivered once (a 204 kept as its attempt)."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    endpoint, _ = services.register_endpoint(user_id, "http://127.0.0.1:9/hook")
    now = time.time_ns() // 1_000_000
    record = TransferRecord(
        request_id=next(_request_ids), user_id=user_id, asset_id=1, asset_code="USDT",
        direction=Direction.FUNDING_TO_SPOT, amount=5_000_000, status=TransferStatus.PENDING,
        client_transfer_id=None, error_message=None, created_at_ms=now, updated_at_ms=now,
    )
    get_transfer_store().create(record)
    from settlement import saga

    saga._finish_many(get_transfer_store(), [(record, TransferStatus.SUCCESS, None)])
    delivery = WebhookDelivery.objects.get(event__request_id=record.request_id)
    WebhookAttempt.objects.create(delivery=delivery, at_ms=now, outcome="delivered", status_code=204, latency_ms=12)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.DELIVERED, attempts=1,
                                                          delivered_at_ms=now)
    return record, endpoint, delivery


def test_support_finds_a_transfers_deliveries_and_their_attempts(support_client, delivered):
    record, endpoint, delivery = delivered
    page = support_client.get(DELIVERIES, {"q": str(record.request_id)})
    assert page.status_code == 200
    html = page.content.decode()
    assert f"evt_{record.request_id}" in html and "transfer.succeeded" in html and endpoint.url in html
    detail = support_client.get(reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk])).content.decode()
    assert "delivered" in html and "204" in detail
    # Per endpoint, and never its secret.
    endpoint_page = support_client.get(reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]))
    assert endpoint.secret not in endpoint_page.content.decode()
    per_endpoint = support_client.get(DELIVERIES, {"endpoint__id__exact": endpoint.pk})
    assert per_endpoint.status_code == 200 and f"evt_{record.request_id}" in per_endpoint.content.decode()


def test_the_transfers_page_links_to_its_deliveries(support_client, delivered):
    record, _, _ = delivered
    page = support_client.get(reverse("transfer_store_records"), {"request_id": str(record.request_id)})
    assert f'{DELIVERIES}?q={record.request_id}' in page.content.decode()


def test_support_redelivers_a_delivered_event(support_client, delivered, django_capture_on_commit_callbacks):
    _, _, delivery = delivered
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = support_client.post(
            DELIVERIES, {"action": "redeliver", "_selected_action": [delivery.pk]}, follow=True)
    assert "Queued 1 delivery again." in response.content.decode()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.give_up_at_ms > services.now_ms()
    assert len(queued) == 1


def test_redeliver_needs_its_permission(support_client, support_user, delivered):
    _, _, delivery = delivered
    support_user.groups.first().permissions.remove(Permission.objects.get(codename="redeliver_webhookdelivery"))
    response = support_client.post(DELIVERIES, {"action": "redeliver", "_selected_action": [delivery.pk]})
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert response.status_code in (200, 302)


def test_records_cannot_be_edited_or_deleted(support_client, admin_client_role, delivered):
    _, _, delivery = delivered
    change = reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk])
    support_client.post(change, {"status": "gave_up"})
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert support_client.get(reverse("admin:webhooks_webhookdelivery_delete", args=[delivery.pk])).status_code == 403
