"""Webhooks that write: endpoints, the events of finished transfers, and delivery attempts.

The event of a transfer is written in two steps around its status change
(settlement.saga): `record_finishing` before (the event, unconfirmed, and a
held delivery per endpoint), `confirm_finished` after it is stored. A crash
between leaves an unconfirmed event that `sweep_unconfirmed` finishes from the
transfer store, so every finished transfer of a user with an endpoint gets its
event, at least once, without settlement ever waiting on a receiver.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections.abc import Iterable, Sequence

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from transfer_site import compiled_sql
from transfers.api.serializers import transfer_representation
from transfers.assets import decimals_of
from transfers.domain import TransferRecord, TransferStatus
from transfers.errors import TransferRejected
from transfers.store import get_transfer_store
from webhooks import addresses, sender, signing
from webhooks.models import (
    AttemptCount,
    AttemptOutcome,
    DeliveryStatus,
    EventType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of generated secrets, not a secret
# A queued delivery task that has not run by then is queued again by the dispatcher.
REQUEUE_AFTER_MS = 60_000
# How long one attempt may hold its delivery (and its endpoint slot): above both timeouts.
LEASE_MS = 60_000
# An endpoint with its share of deliveries in flight: the delivery waits this long (in the database).
ENDPOINT_BUSY_RETRY_MS = 1_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- endpoints ---------------------------------------------------------------


def register_endpoint(user_id: int, url: object) -> tuple[WebhookEndpoint, str]:
    """A new callback URL of the user and its signing secret (shown to the user this once)."""
    try:
        addresses.check(url, require_https=settings.WEBHOOK_REQUIRE_HTTPS,
                        allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
    except addresses.UrlRefused as error:
        raise TransferRejected("invalid_webhook_url", str(error)) from error
    active = WebhookEndpoint.objects.filter(user_id=user_id, deleted_at_ms__isnull=True).count()
    if active >= settings.WEBHOOK_MAX_ENDPOINTS_PER_USER:
        raise TransferRejected(
            "too_many_webhooks",
            f"at most {settings.WEBHOOK_MAX_ENDPOINTS_PER_USER} webhook endpoints per user: delete one first",
            http_status=409,
        )
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            endpoint = WebhookEndpoint.objects.create(user_id=user_id, url=url, secret=secret, created_at_ms=now_ms())
    except IntegrityError as error:
        raise TransferRejected("conflict", "this url is already registered", http_status=409) from error
    logger.info("webhook endpoint registered", extra={"webhook_endpoint_id": endpoint.pk})
    return endpoint, secret


def delete_endpoint(user_id: int, endpoint_id: int) -> None:
    """Stop sending to one of the user's endpoints; what was sent stays on record."""
    with transaction.atomic():
        deleted = WebhookEndpoint.objects.filter(
            pk=endpoint_id, user_id=user_id, deleted_at_ms__isnull=True
        ).update(deleted_at_ms=now_ms())
        if not deleted:
            raise TransferRejected("not_found", "no such webhook endpoint", http_status=404)
        WebhookDelivery.objects.filter(
            endpoint_id=endpoint_id, status__in=(DeliveryStatus.HELD, DeliveryStatus.PENDING)
        ).update(status=DeliveryStatus.CANCELLED)
    logger.info("webhook endpoint deleted", extra={"webhook_endpoint_id": endpoint_id})


# --- events of finished transfers -----------------------------------------------


def event_id_of(request_id: int) -> str:
    """A transfer finishes once, so it has one event: its id names the transfer."""
    return f"evt_{request_id}"


def record_finishing(finished: Sequence[TransferRecord]) -> set[int]:
    """Before transfers move to a terminal status: their events, unconfirmed, for users with endpoints.

    `finished`: the records as they will be stored. Returns the request ids
    that have an event to confirm. One query when none of the users has an
    endpoint. Raises if the database does not answer, before any status
    changed: the saga's step is retried.
    """
    endpoints_by_user = _active_endpoints_by_user({record.user_id for record in finished})
    if not endpoints_by_user:
        return set()
    events: list[WebhookEvent] = []
    deliveries: list[WebhookDelivery] = []
    recorded_at = now_ms()
    for record in finished:
        endpoints = endpoints_by_user.get(record.user_id)
        if not endpoints:
            continue
        event = _event_of(record, recorded_at)
        events.append(event)
        deliveries.extend(
            WebhookDelivery(
                event_id=event.id, endpoint_id=endpoint_id, status=DeliveryStatus.HELD,
                next_attempt_at_ms=recorded_at,
                give_up_at_ms=record.updated_at_ms + settings.WEBHOOK_RETRY_WINDOW_SECONDS * 1000,
            )
            for endpoint_id in endpoints
        )
    with transaction.atomic():
        # An event already there (a step re-run, or the transfer finished elsewhere) is kept as it is.
        WebhookEvent.objects.bulk_create(events, ignore_conflicts=True)
        WebhookDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
    return {event.request_id for event in events}


def confirm_finished(records: Iterable[TransferRecord]) -> None:
    """After the status change is stored: the events say what was stored, and go out now."""
    records = [record for record in records if record.status.is_terminal]
    if not records:
        return  # (no query: most batches have no user with an endpoint)
    ids = {event_id_of(record.request_id): record for record in records}
    unconfirmed = set(
        WebhookEvent.objects.filter(pk__in=ids, confirmed=False).values_list("pk", flat=True)
    )
    if not unconfirmed:
        return
    due = now_ms()
    with transaction.atomic():
        for event_id in unconfirmed:
            record = ids[event_id]
            WebhookEvent.objects.filter(pk=event_id).update(
                confirmed=True, type=_type_of(record.status), created_at_ms=record.updated_at_ms,
                data=transfer_representation(record, decimals_of(record.asset_id)),
            )
        released = list(
            WebhookDelivery.objects.filter(event_id__in=unconfirmed, status=DeliveryStatus.HELD).values_list(
                "pk", flat=True
            )
        )
        WebhookDelivery.objects.filter(pk__in=released).update(
            status=DeliveryStatus.PENDING, next_attempt_at_ms=due + REQUEUE_AFTER_MS
        )
        transaction.on_commit(lambda: _queue(released))


def sweep_unconfirmed(older_than_ms: int, limit: int = 1000) -> int:
    """Finish events whose transfer's status change was not confirmed (a crash between): from the store.

    A transfer still in flight is left for the saga, which records and confirms
    its event when it finishes it. Returns how many were confirmed.
    """
    event_ids = list(
        WebhookEvent.objects.filter(confirmed=False, recorded_at_ms__lt=older_than_ms)
        .order_by("recorded_at_ms")
        .values_list("request_id", flat=True)[:limit]
    )
    if not event_ids:
        return 0
    records = get_transfer_store().get_many(event_ids)
    finished = [record for record in records.values() if record.status.is_terminal]
    confirm_finished(finished)
    if finished:
        logger.warning("webhook events confirmed by the sweep", extra={"count": len(finished)})
    return len(finished)


def _active_endpoints_by_user(user_ids: set[int]) -> dict[int, list[int]]:
    """The ids of each user's registered endpoints (read for every settlement batch that finishes transfers)."""
    users = sorted(user_ids)
    endpoints: dict[int, list[int]] = {}

    def build():
        return WebhookEndpoint.objects.filter(user_id__in=users, deleted_at_ms__isnull=True).values_list(
            "pk", "user_id")

    for endpoint_id, user_id in compiled_sql.rows(connection.alias, ("active webhook endpoints", len(users)),
                                                  build, users):
        endpoints.setdefault(user_id, []).append(endpoint_id)
    return endpoints


def _type_of(status: TransferStatus) -> str:
    return EventType.TRANSFER_SUCCEEDED if status is TransferStatus.SUCCESS else EventType.TRANSFER_FAILED


def _event_of(record: TransferRecord, recorded_at_ms: int) -> WebhookEvent:
    return WebhookEvent(
        id=event_id_of(record.request_id), request_id=record.request_id, user_id=record.user_id,
        type=_type_of(record.status), created_at_ms=record.updated_at_ms,
        data=transfer_representation(record, decimals_of(record.asset_id)), recorded_at_ms=recorded_at_ms,
    )


def event_body(event: WebhookEvent) -> bytes:
    """What a delivery POSTs: the same bytes for every attempt of the event."""
    document = {"id": event.id, "type": event.type, "created_at": event.created_at_ms, "data": event.data}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


# --- deliveries -------------------------------------------------------------------


def _queue(delivery_ids: Sequence[int]) -> None:
    from webhooks.tasks import deliver

    for delivery_id in delivery_ids:
        try:
            deliver.delay(delivery_id)
        except Exception:  # the dispatcher queues it again when REQUEUE_AFTER_MS has passed
            logger.exception("webhook delivery not queued; the dispatcher will", extra={"delivery_id": delivery_id})


def dispatch_due(limit: int = 2000) -> int:
    """Queue deliveries that are due (retries, and any whose task was lost): at most each endpoint's share.

    Each is marked queued (due again REQUEUE_AFTER_MS later) before its task
    is sent, so a dispatcher run after this one does not send it twice.
    """
    now = now_ms()
    share = settings.WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT
    per_endpoint: dict[int, int] = {}
    chosen: list[int] = []
    for delivery_id, endpoint_id in (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at_ms__lte=now)
        .order_by("next_attempt_at_ms")
        .values_list("pk", "endpoint_id")[:limit]
    ):
        if per_endpoint.get(endpoint_id, 0) < share:  # the rest waits for the next run
            per_endpoint[endpoint_id] = per_endpoint.get(endpoint_id, 0) + 1
            chosen.append(delivery_id)
    if not chosen:
        return 0
    WebhookDelivery.objects.filter(pk__in=chosen, status=DeliveryStatus.PENDING).update(
        next_attempt_at_ms=now + REQUEUE_AFTER_MS
    )
    _queue(chosen)
    return len(chosen)


def attempt_delivery(delivery_id: int) -> str | None:
    """One attempt of a pending delivery; its outcome, or None when there was nothing to do now.

    At most WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT attempts go to one endpoint at
    a time: a slow or failing receiver holds that many workers at most, and
    delays only its own deliveries.
    """
    started = now_ms()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.PENDING, lease_until_ms__lt=started
    ).update(lease_until_ms=started + LEASE_MS)
    if not claimed:
        return None  # done, cancelled, or another worker's attempt is under way
    delivery = WebhookDelivery.objects.select_related("event", "endpoint").get(pk=delivery_id)
    slot = _take_endpoint_slot(delivery.endpoint_id)
    if slot is None:
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            lease_until_ms=0, next_attempt_at_ms=started + ENDPOINT_BUSY_RETRY_MS
        )
        return None
    try:
        outcome, response = _post(delivery)
    finally:
        cache.delete(slot)
    _record_attempt(delivery, outcome, response)
    return outcome


def _take_endpoint_slot(endpoint_id: int) -> str | None:
    for index in range(settings.WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT):
        key = f"webhook-endpoint-slot:{endpoint_id}:{index}"
        if cache.add(key, 1, timeout=LEASE_MS // 1000):
            return key
    return None


def _post(delivery: WebhookDelivery) -> tuple[str, sender.Response]:
    endpoint = delivery.endpoint
    try:
        # Resolved and checked again now: the name may point somewhere else than when it was registered.
        target = addresses.check(endpoint.url, require_https=settings.WEBHOOK_REQUIRE_HTTPS,
                                 allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
    except addresses.UrlRefused as error:
        return AttemptOutcome.REFUSED, sender.Response(None, 0, error=str(error)[:255])
    body = event_body(delivery.event)
    timestamp = int(time.time())
    response = sender.post(
        target, body,
        {signing.TIMESTAMP_HEADER: str(timestamp), signing.SIGNATURE_HEADER: signing.signature(
            endpoint.secret, timestamp, body), "Webhook-Id": delivery.event_id},
        connect_timeout=settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS, read_timeout=settings.WEBHOOK_READ_TIMEOUT_SECONDS,
    )
    if response.ok:
        return AttemptOutcome.DELIVERED, response
    if response.status_code is not None:
        return AttemptOutcome.HTTP_ERROR, response
    return (AttemptOutcome.TIMEOUT if response.timed_out else AttemptOutcome.CONNECTION_ERROR), response


def retry_delay_ms(failed_attempts: int) -> int:
    """Exponential back-off with jitter: base, 2 x base, 4 x base ... at most WEBHOOK_RETRY_MAX_SECONDS."""
    exponent = min(failed_attempts - 1, 30)
    delay = min(settings.WEBHOOK_RETRY_BASE_SECONDS * 2**exponent, settings.WEBHOOK_RETRY_MAX_SECONDS)
    return int(delay * 1000 * random.uniform(0.8, 1.2))  # noqa: S311 - spreading retries, not a secret


def _record_attempt(delivery: WebhookDelivery, outcome: str, response: sender.Response) -> None:
    at = now_ms()
    attempts = delivery.attempts + 1
    update: dict[str, object] = {
        "attempts": attempts, "lease_until_ms": 0, "last_status_code": response.status_code,
        "last_error": response.error,
    }
    if outcome == AttemptOutcome.DELIVERED:
        update.update(status=DeliveryStatus.DELIVERED, delivered_at_ms=at)
    else:
        due = at + retry_delay_ms(attempts)
        if due > delivery.give_up_at_ms:
            update["status"] = DeliveryStatus.GAVE_UP
        update["next_attempt_at_ms"] = due
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery_id=delivery.pk, at_ms=at, outcome=outcome, status_code=response.status_code,
            latency_ms=response.latency_ms, error=response.error, response_excerpt=response.excerpt,
        )
        # Only a delivery still pending: one cancelled meanwhile stays cancelled.
        WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(**update)
        counted = AttemptCount.objects.filter(outcome=outcome).update(count=F("count") + 1)
        if not counted:
            AttemptCount.objects.get_or_create(outcome=outcome)
            AttemptCount.objects.filter(outcome=outcome).update(count=F("count") + 1)
    level = logging.INFO if outcome == AttemptOutcome.DELIVERED else logging.WARNING
    logger.log(level, "webhook delivery %s", outcome, extra={
        "delivery_id": delivery.pk, "webhook_event_id": delivery.event_id, "status_code": response.status_code,
        "latency_ms": response.latency_ms, "attempt": attempts, "status": update.get("status", "pending")})


def redeliver(delivery_ids: Iterable[int], actor: str) -> int:
    """Send again (support staff): delivered or given-up deliveries become pending, with a new retry window."""
    now = now_ms()
    ids = list(
        WebhookDelivery.objects.filter(pk__in=list(delivery_ids), endpoint__deleted_at_ms__isnull=True)
        .exclude(status__in=(DeliveryStatus.HELD, DeliveryStatus.CANCELLED))
        .values_list("pk", flat=True)
    )
    WebhookDelivery.objects.filter(pk__in=ids).update(
        status=DeliveryStatus.PENDING, next_attempt_at_ms=now + REQUEUE_AFTER_MS, lease_until_ms=0,
        give_up_at_ms=now + settings.WEBHOOK_RETRY_WINDOW_SECONDS * 1000,
    )
    logger.info("webhook deliveries redelivered", extra={"count": len(ids), "actor": actor})
    transaction.on_commit(lambda: _queue(ids))
    return len(ids)
