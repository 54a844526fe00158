"""Celery tasks of the operations app (beat runs them)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from operations.broker_upkeep import prune_dead_queues


@shared_task(name="operations.prune_dead_broker_queues")
def prune_dead_broker_queues() -> int:
    """Filesystem broker only: drop event/remote-control queues whose reader is gone (Flower stopped)."""
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return 0
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    removed = prune_dead_queues(options["data_folder_in"], options["control_folder"],
                                settings.CELERY_DEAD_QUEUE_SECONDS)
    return len(removed)
