"""Celery tasks of the webhooks worker (its own queue, WEBHOOK_QUEUE: never the settlement worker's)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from webhooks import services


@shared_task(name="webhooks.deliver")
def deliver(delivery_id: int) -> str | None:
    """One attempt of a delivery; a failure is retried by the dispatcher at the delivery's next attempt time."""
    return services.attempt_delivery(delivery_id)


@shared_task(name="webhooks.dispatch_due")
def dispatch_due() -> int:
    """Queue the deliveries whose next attempt is due (beat, every WEBHOOK_DISPATCH_INTERVAL_SECONDS)."""
    return services.dispatch_due()


@shared_task(name="webhooks.sweep_unconfirmed")
def sweep_unconfirmed() -> int:
    """Confirm, from the transfer store, events a crash left unconfirmed."""
    return services.sweep_unconfirmed(older_than_ms=services.now_ms() - settings.WEBHOOK_CONFIRM_AFTER_SECONDS * 1000)
