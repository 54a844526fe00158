import logging

from django.conf import settings
from django.core.management.base import BaseCommand

from settlement import tasks
from settlement.queue import SettlementQueue
from transfer_site import topics
from transfer_site.bus import Delivery, run_consumer
from transfer_site.logging import log_context
from transfer_site.messages import BalanceEvent, BalanceOperationType, TransferRequested

logger = logging.getLogger(__name__)

TASK_BATCH_SIZE = 100


def hand_over(deliveries: list[Delivery]) -> None:
    """Hand a polled batch to Celery; offsets are committed once this returns.

    `apply_async` returns once the Celery broker holds the task, so a crash
    after it at worst hands the same messages over again, which the
    idempotent tasks absorb.
    """
    request_ids: list[str] = []
    events: list[str] = []
    for delivery in deliveries:
        message = delivery.message
        if isinstance(message, TransferRequested):
            request_ids.append(str(message.request_id))
        elif isinstance(message, BalanceEvent):
            if message.operation in (BalanceOperationType.TRANSFER_IN, BalanceOperationType.TRANSFER_OUT):
                events.append(message.to_json().decode())
        else:
            logger.warning("ignored %s on %s", type(message).__name__, delivery.topic)
            continue
        reference = message.request_id if isinstance(message, TransferRequested) else message.ref_id
        with log_context(request_id=reference, user_id=message.user_id):
            logger.info("handed to settlement", extra={"topic": delivery.topic, "offset": delivery.offset})
    for start in range(0, max(len(request_ids), len(events)), TASK_BATCH_SIZE):
        chunk = slice(start, start + TASK_BATCH_SIZE)
        tasks.settle_batch.apply_async(args=[request_ids[chunk], events[chunk]])


class Command(BaseCommand):
    help = "Run the Kafka -> Celery bridge for settlement (transfer requests and balance events)."

    def handle(self, *args: object, **options: object) -> None:
        settlement_queue = SettlementQueue()
        try:
            run_consumer(
                group_id=topics.consumer_group(settings.SETTLEMENT_CONSUMER_GROUP),
                topic_names=[topics.TRANSFER_REQUESTS, topics.BALANCE_EVENTS],
                handle_batch=hand_over,
                # A batch goes at once while the worker keeps up, and grows while it does not.
                downstream_idle=settlement_queue.is_idle,
            )
        finally:
            settlement_queue.close()
