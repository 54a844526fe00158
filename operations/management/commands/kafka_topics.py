from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from transfer_site import kafka_topics


class Command(BaseCommand):
    help = (
        "Create the service's Kafka topics as configured (KAFKA_TOPIC_PARTITIONS, KAFKA_REPLICATION_FACTOR, "
        "KAFKA_MIN_INSYNC_REPLICAS) and check them; --check only checks. Fails if a topic is missing or laid "
        "out otherwise."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--check", action="store_true", help="create nothing; only verify the layout")
        parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for the broker")

    def handle(self, *args: object, check: bool, timeout: float, **options: object) -> None:
        try:
            found, created = kafka_topics.ensure_topics(create=not check, timeout_seconds=timeout)
        except kafka_topics.TopicLayoutMismatch as error:
            raise CommandError(f"topics differ from the configured layout: {error}") from None
        for name, layout in found.items():
            state = "created" if name in created else "ok"
            self.stdout.write(
                f"{state:8} {name}  partitions={layout.partitions} replication={layout.replication_factor}"
            )
        if created and settings.KAFKA_MIN_INSYNC_REPLICAS:
            self.stdout.write(f"min.insync.replicas={settings.KAFKA_MIN_INSYNC_REPLICAS} on the topics created")
