"""Is settlement keeping up? The number of tasks waiting in the Celery broker, for the bridge.

The bridge hands a batch over at once while no settlement task waits, and
gathers messages (up to KAFKA_CONSUMER_LINGER_MS) while some do: a task's
fixed price (its transactions, its publish) is then paid once for many
transfers exactly when the worker is behind, and not at all in the latency
when it is not. With CELERY_WORKER_PREFETCH_MULTIPLIER = 1 a worker process
holds only the task it runs, so a waiting task is one no process has taken.
"""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)


class SettlementQueue:
    """The settlement queue in the Celery broker (Redis: LLEN; the filesystem broker: its files)."""

    def __init__(self, queue_name: str | None = None) -> None:
        self.queue_name = queue_name or settings.CELERY_TASK_DEFAULT_QUEUE
        self._connection = None

    def waiting(self) -> int:
        from transfer_site.celery import app

        if self._connection is None:
            self._connection = app.connection_for_read()
        # A declare (not passive: an empty Redis list does not exist) answers with the message count.
        return self._connection.default_channel.queue_declare(
            queue=self.queue_name, durable=True, auto_delete=False
        ).message_count

    def is_idle(self) -> bool:
        """True when no settlement task waits; also when the broker cannot say (the batch then goes,
        and handing it over finds the broker's trouble and is retried as before)."""
        try:
            return self.waiting() == 0
        except Exception as error:
            logger.warning("settlement queue depth unknown: %s", error)
            self.close()
            return True

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.release()
            except Exception:  # noqa: S110 - a broken connection is dropped either way
                pass
