"""Events of finished transfers and their delivery (webhooks.services), to a real receiver on loopback.

The saga's own status change (_finish_many) writes the events; attempts POST
over HTTP; Celery is not involved (the tasks only call these functions).
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from settlement import saga
from transfers.domain import Direction, TransferRecord, TransferStatus
from transfers.store.orm import OrmTransferStore
from webhooks import services, signing
from webhooks.models import AttemptCount, DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEvent

pytestmark = pytest.mark.django_db

USDT = 1
_next_request_id = iter(range(9_000_000_000, 9_100_000_000))
store = OrmTransferStore()


def new_transfer(user_id: int, status: TransferStatus = TransferStatus.PENDING) -> TransferRecord:
    now = time.time_ns() // 1_000_000
    record = TransferRecord(
        request_id=next(_next_request_id), user_id=user_id, asset_id=USDT, asset_code="USDT",
        direction=Direction.FUNDING_TO_SPOT, amount=12_500_000, status=status, client_transfer_id=None,
        error_message=None, created_at_ms=now, updated_at_ms=now,
    )
    store.create(record)
    return record


@pytest.fixture(autouse=True)
def _orm_store(monkeypatch):
    """The sweep reads this test's ORM records whichever store the run is configured with."""
    monkeypatch.setattr(services, "get_transfer_store", lambda: store)


@pytest.fixture
def endpoint(user_id, receiver, allow_private):
    endpoint, _secret = services.register_endpoint(user_id, receiver.url)
    return endpoint


def finish(record: TransferRecord, status: TransferStatus, error: str | None = None) -> None:
    saga._finish_many(store, [(record, status, error)])


def finished_as(record: TransferRecord, status: TransferStatus, at_ms: int, error: str | None = None):
    return dataclasses.replace(record, status=status, error_message=error, updated_at_ms=at_ms)


def deliveries_of(record: TransferRecord) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.filter(event__request_id=record.request_id))


def test_a_finished_transfer_is_delivered_signed(user_id, endpoint, receiver):
    record = new_transfer(user_id)
    finish(record, TransferStatus.SUCCESS)
    [delivery] = deliveries_of(record)
    assert delivery.status == DeliveryStatus.PENDING
    assert services.attempt_delivery(delivery.pk) == "delivered"

    [(headers, body)] = receiver.received
    assert signing.verify(endpoint.secret, headers["Webhook-Timestamp"], headers["Webhook-Signature"], body,
                          now=int(time.time()))
    document = json.loads(body)
    stored = store.get(record.request_id)
    assert document["id"] == f"evt_{record.request_id}" == headers["Webhook-Id"]
    assert document["type"] == "transfer.succeeded"
    assert document["created_at"] == stored.updated_at_ms
    assert document["data"]["request_id"] == str(record.request_id)
    assert document["data"]["status"] == "success" and document["data"]["amount"] == "12.5"
    assert headers["Content-Type"] == "application/json"
    assert "Authorization" not in headers and "Cookie" not in headers  # nothing but what a receiver needs

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.DELIVERED, 1, 200)
    [attempt] = WebhookAttempt.objects.filter(delivery=delivery)
    assert attempt.outcome == "delivered" and len(attempt.response_excerpt) == 256  # not the whole answer
    assert services.attempt_delivery(delivery.pk) is None  # delivered: nothing more to do
    assert len(receiver.received) == 1


def test_a_failed_transfer_says_why(user_id, endpoint, receiver):
    record = new_transfer(user_id)
    finish(record, TransferStatus.FAILED, "insufficient balance")
    [delivery] = deliveries_of(record)
    services.attempt_delivery(delivery.pk)
    document = json.loads(receiver.received[0][1])
    assert document["type"] == "transfer.failed"
    assert (document["data"]["status"], document["data"]["error_message"]) == ("failed", "insufficient balance")


def test_users_without_endpoints_get_no_events(user_id, other_user_id, endpoint):
    finish(new_transfer(other_user_id), TransferStatus.SUCCESS)
    assert not WebhookEvent.objects.filter(user_id=other_user_id).exists()


def test_finishing_twice_makes_one_event(user_id, endpoint):
    record = new_transfer(user_id)
    finish(record, TransferStatus.SUCCESS)
    finish(record, TransferStatus.FAILED, "late duplicate")  # a terminal status is never left
    [event] = WebhookEvent.objects.filter(request_id=record.request_id)
    assert (event.type, event.confirmed) == ("transfer.succeeded", True)
    assert len(deliveries_of(record)) == 1


def test_a_receiver_that_fails_is_retried_with_back_off_until_it_answers(user_id, endpoint, receiver, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 10
    record = new_transfer(user_id)
    finish(record, TransferStatus.SUCCESS)
    [delivery] = deliveries_of(record)
    receiver.status = 500
    delays = []
    for _ in range(3):
        before = services.now_ms()
        assert services.attempt_delivery(delivery.pk) == "http_error"
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.PENDING
        delays.append(delivery.next_attempt_at_ms - before)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at_ms=0)  # as if the time had come
    assert 8_000 <= delays[0] <= 12_100 and 16_000 <= delays[1] <= 24_100 and 32_000 <= delays[2] <= 48_100
    # Not due yet: the dispatcher leaves it; due: it queues it (and marks it queued).
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at_ms=services.now_ms() + 60_000)
    assert services.dispatch_due() == 0
    receiver.status = 204
    assert services.attempt_delivery(delivery.pk) == "delivered"
    assert len(receiver.received) == 4
    assert len({body for _, body in receiver.received}) == 1  # the same event every time
    counts = dict(AttemptCount.objects.values_list("outcome", "count"))
    assert counts["http_error"] == 3 and counts["delivered"] == 1


def test_a_delivery_is_given_up_after_the_retry_window_and_can_be_redelivered(user_id, endpoint, receiver, settings):
    record = new_transfer(user_id)
    finish(record, TransferStatus.SUCCESS)
    [delivery] = deliveries_of(record)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(give_up_at_ms=services.now_ms() + 1_000)
    receiver.status = 503
    assert services.attempt_delivery(delivery.pk) == "http_error"
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.GAVE_UP
    assert services.attempt_delivery(delivery.pk) is None
    receiver.status = 200
    assert services.redeliver([delivery.pk], actor="admin:test") == 1
    assert services.attempt_delivery(delivery.pk) == "delivered"


def test_unreachable_and_slow_receivers(user_id, endpoint, receiver, settings):
    settings.WEBHOOK_READ_TIMEOUT_SECONDS = 0.3
    record = new_transfer(user_id)
    finish(record, TransferStatus.SUCCESS)
    [delivery] = deliveries_of(record)
    receiver.delay_seconds = 1
    started = time.monotonic()
    assert services.attempt_delivery(delivery.pk) == "timeout"
    assert time.monotonic() - started < 0.9
    receiver.close()  # nobody listens any more
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at_ms=0)
    assert services.attempt_delivery(delivery.pk) == "connection_error"


def test_an_address_that_became_internal_is_refused_at_delivery(user_id, endpoint, receiver, settings):
    record = new_transfer(user_id)
    finish(record, TransferStatus.SUCCESS)
    [delivery] = deliveries_of(record)
    settings.WEBHOOK_ALLOW_PRIVATE = False  # as if the name now resolved to loopback
    assert services.attempt_delivery(delivery.pk) == "refused"
    assert receiver.received == []
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and "loopback" in delivery.last_error


def test_an_endpoint_has_at_most_its_share_in_flight(user_id, endpoint, receiver, settings):
    settings.WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT = 1
    records = [new_transfer(user_id) for _ in range(3)]
    for record in records:
        finish(record, TransferStatus.SUCCESS)
    ids = [deliveries_of(record)[0].pk for record in records]
    WebhookDelivery.objects.filter(pk__in=ids).update(next_attempt_at_ms=0)
    with_slot = services._take_endpoint_slot(endpoint.pk)  # as if an attempt were under way
    assert with_slot is not None
    assert services.attempt_delivery(ids[0]) is None  # waits, holding no worker
    assert WebhookDelivery.objects.get(pk=ids[0]).next_attempt_at_ms > services.now_ms()
    from django.core.cache import cache

    cache.delete(with_slot)
    # The dispatcher queues one per endpoint per run (the share); here: the two that are due.
    WebhookDelivery.objects.filter(pk__in=ids).update(next_attempt_at_ms=0)
    from unittest import mock

    with mock.patch.object(services, "_queue") as queue:
        assert services.dispatch_due() == 1
    assert len(queue.call_args.args[0]) == 1


def test_deleting_the_endpoint_cancels_what_is_pending(user_id, endpoint, receiver):
    record = new_transfer(user_id)
    finish(record, TransferStatus.SUCCESS)
    services.delete_endpoint(user_id, endpoint.pk)
    [delivery] = deliveries_of(record)
    assert delivery.status == DeliveryStatus.CANCELLED
    assert services.attempt_delivery(delivery.pk) is None
    assert services.redeliver([delivery.pk], actor="admin:test") == 0
    assert receiver.received == []


def test_a_crash_between_the_event_and_the_status_change_is_swept_from_the_store(user_id, endpoint, receiver):
    record = new_transfer(user_id)
    # The saga wrote the event, changed the status, and died before confirming it.
    at = services.now_ms()
    services.record_finishing([finished_as(record, TransferStatus.SUCCESS, at)])
    store.compare_and_set_status(record.request_id, {TransferStatus.PENDING}, TransferStatus.SUCCESS, now_ms=at)
    [delivery] = deliveries_of(record)
    assert delivery.status == DeliveryStatus.HELD
    assert services.attempt_delivery(delivery.pk) is None  # held: not sent before it is confirmed

    # Another one died before changing the status: its event stays held, the saga finishes it later.
    in_flight = new_transfer(user_id)
    services.record_finishing([finished_as(in_flight, TransferStatus.SUCCESS, services.now_ms())])

    assert services.sweep_unconfirmed(older_than_ms=services.now_ms() + 1) == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    assert services.attempt_delivery(delivery.pk) == "delivered"
    assert json.loads(receiver.received[0][1])["data"]["status"] == "success"
    assert WebhookEvent.objects.get(request_id=in_flight.request_id).confirmed is False
    finish(in_flight, TransferStatus.SUCCESS)
    assert WebhookEvent.objects.get(request_id=in_flight.request_id).confirmed is True


def test_the_stored_outcome_wins_over_a_stale_event(user_id, endpoint, receiver):
    record = new_transfer(user_id)
    # This process meant to fail it, but another one stored success first, then crashed.
    services.record_finishing([finished_as(record, TransferStatus.FAILED, services.now_ms(), "rejected")])
    store.compare_and_set_status(record.request_id, {TransferStatus.PENDING}, TransferStatus.SUCCESS)
    services.sweep_unconfirmed(older_than_ms=services.now_ms() + 1)
    event = WebhookEvent.objects.get(request_id=record.request_id)
    assert event.type == "transfer.succeeded" and event.data["status"] == "success"
