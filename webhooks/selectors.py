"""Webhooks that read: a user's endpoints, and the numbers /metrics exports."""

from __future__ import annotations

import dataclasses

from django.db.models import Min, QuerySet

from webhooks.models import AttemptCount, AttemptOutcome, DeliveryStatus, WebhookDelivery, WebhookEndpoint


def endpoints_of_user(user_id: int) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(user_id=user_id, deleted_at_ms__isnull=True).order_by("pk")


@dataclasses.dataclass(frozen=True)
class DeliveryNumbers:
    attempts_by_outcome: dict[str, int]
    pending: int
    oldest_pending_event_ms: int | None  # when the oldest undelivered event happened


def delivery_numbers() -> DeliveryNumbers:
    counts = dict.fromkeys(AttemptOutcome.values, 0)
    counts.update(AttemptCount.objects.values_list("outcome", "count"))
    pending = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
    return DeliveryNumbers(
        attempts_by_outcome=counts,
        pending=pending.count(),
        oldest_pending_event_ms=pending.aggregate(oldest=Min("event__created_at_ms"))["oldest"],
    )
