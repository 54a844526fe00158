from django.core.management.base import BaseCommand

from transfer_site.bus import StopFlag
from transfer_site.kafka_topics import require_layout
from transfers.relay import TransferRelay


class Command(BaseCommand):
    help = "Run the outbox relay: publish accepted (requesting) transfers and mark them pending."

    def handle(self, *args: object, **options: object) -> None:
        require_layout()
        TransferRelay().run(StopFlag())
