import logging

from django.core.management.base import BaseCommand

from transfer_site import faults, topics
from transfer_site.bus import Delivery, Outgoing, get_message_bus, run_consumer
from transfer_site.messages import BalanceOperation
from ubscore.services import apply_operations

logger = logging.getLogger(__name__)


def handle_operations(deliveries: list[Delivery]) -> None:
    """Apply a batch, then publish every answer before the offsets are committed."""
    operations = []
    for delivery in deliveries:
        if isinstance(delivery.message, BalanceOperation):
            operations.append(delivery.message)
        else:
            logger.warning("ignored %s on %s", type(delivery.message).__name__, delivery.topic)
    if not operations:
        return
    events = apply_operations(operations)
    # A crash here, after the commit and before publishing, is safe: the
    # operations come again and get the stored answers again.
    faults.crash_point(faults.UBSCORE_AFTER_APPLY)  # test hook
    get_message_bus().publish_many([Outgoing(topics.BALANCE_EVENTS, event.user_id, event) for event in events])


class Command(BaseCommand):
    help = "Run the UBSCore consumer: apply balance.operations once each, answer on balance.events."

    def handle(self, *args: object, **options: object) -> None:
        run_consumer(
            group_id=topics.UBSCORE_GROUP,
            topic_names=[topics.BALANCE_OPERATIONS],
            handle_batch=handle_operations,
            publishes_to=[topics.BALANCE_EVENTS],
            # No linger: a batch is one transaction and one publish here, done before the next poll,
            # so whatever arrives meanwhile is the next batch (batches grow with the load by themselves).
            linger_ms=0,
        )
