from django.core.management.base import BaseCommand

from transfer_site.bus import StopFlag, ensure_topics
from transfers.relay import TransferRelay


class Command(BaseCommand):
    help = "Run the outbox relay: publish accepted (requesting) transfers and mark them pending."

    def handle(self, *args: object, **options: object) -> None:
        ensure_topics()
        TransferRelay().run(StopFlag())
