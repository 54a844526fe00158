"""The service's Kafka topics as an operator creates them, and the check every process makes of them.

Every message is keyed by user id, so one user's messages share a partition
and keep their order. That holds only while a topic's partition count stays
what it was: add partitions and a user's next messages hash to another
partition, where they may be consumed before the earlier ones. So the layout
(partitions, replication factor, `min.insync.replicas`) comes from the
environment, `manage.py kafka_topics` creates or checks it, and a process
refuses to start on a topic whose partition count differs from the configured
one (see docs/deployment.md for changing it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings

from transfer_site import topics

logger = logging.getLogger(__name__)


class TopicLayoutMismatch(Exception):
    """A topic is missing or is not laid out as configured: per-user order is not guaranteed."""


@dataclass(frozen=True)
class TopicLayout:
    name: str
    partitions: int
    replication_factor: int


def wanted_layouts() -> list[TopicLayout]:
    """Every topic of this stack as the environment configures it."""
    return [
        TopicLayout(name, settings.KAFKA_TOPIC_PARTITIONS, settings.KAFKA_REPLICATION_FACTOR)
        for name in topics.ALL
    ]


def layout_problems(wanted: Iterable[TopicLayout], found: dict[str, TopicLayout]) -> list[str]:
    """What differs between the configured layout and the broker's, in words; empty when they agree."""
    problems = []
    for layout in wanted:
        actual = found.get(layout.name)
        if actual is None:
            problems.append(f"{layout.name}: missing")
            continue
        if actual.partitions != layout.partitions:
            problems.append(
                f"{layout.name}: {actual.partitions} partitions, configured {layout.partitions} "
                "(KAFKA_TOPIC_PARTITIONS); a different count reorders users' messages"
            )
        if actual.replication_factor != layout.replication_factor:
            problems.append(
                f"{layout.name}: replication factor {actual.replication_factor}, configured "
                f"{layout.replication_factor} (KAFKA_REPLICATION_FACTOR)"
            )
    return problems


def describe(admin, names: Iterable[str]) -> dict[str, TopicLayout]:
    """The layout of those of `names` the broker has (a fresh metadata request)."""
    found = {}
    for topic in admin.describe_topics(list(names)):
        partitions = topic.get("partitions") or []
        if topic.get("error_code") or not partitions:
            continue  # unknown topic, or not yet in the brokers' metadata
        replication = max(len(partition.get("replicas") or ()) for partition in partitions)
        found[topic["topic"]] = TopicLayout(topic["topic"], len(partitions), replication)
    return found


def create_missing(admin, wanted: Iterable[TopicLayout]) -> list[str]:
    """Create the topics the broker lacks, as configured; the names created."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    existing = set(describe(admin, [layout.name for layout in wanted]))
    configs = {}
    if settings.KAFKA_MIN_INSYNC_REPLICAS:
        configs["min.insync.replicas"] = str(settings.KAFKA_MIN_INSYNC_REPLICAS)
    created = []
    for layout in wanted:
        if layout.name in existing:
            continue
        try:
            admin.create_topics(
                [NewTopic(layout.name, layout.partitions, layout.replication_factor, topic_configs=configs)]
            )
        except TopicAlreadyExistsError:
            continue  # another process made it meanwhile; checked below like any other
        logger.info("created topic", extra={"topic": layout.name, "partitions": layout.partitions,
                                            "replication_factor": layout.replication_factor})
        created.append(layout.name)
    return created


def connect_admin(timeout_seconds: float):
    """A Kafka admin client, waiting up to `timeout_seconds` for the broker to come up."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaConnectionError, NoBrokersAvailable

    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            # Kafka 2.2's request versions (Metadata v7, which Kafka 4 still serves): from v8 kafka-python
            # parses each topic's authorized operations and fails on one the development broker reports.
            return KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, api_version=(2, 2))
        except (NoBrokersAvailable, KafkaConnectionError):  # down, or going down or up (seen in the chaos run)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def ensure_topics(*, create: bool = True, timeout_seconds: float = 60) -> tuple[dict[str, TopicLayout], list[str]]:
    """Create the missing topics (unless `create` is false), wait until the brokers' metadata has them
    all, and check their layout. Answers (the layout found, the topics created); TopicLayoutMismatch if
    a topic differs from the configured layout or is missing."""
    wanted = wanted_layouts()
    admin = connect_admin(timeout_seconds)
    try:
        created = create_missing(admin, wanted) if create else []
        # Wait even when another process created them (it got there first): they may not be in the metadata yet.
        found = _wait_for_metadata(lambda: describe(admin, [layout.name for layout in wanted]), wanted,
                                   timeout_seconds if create else 0)
    finally:
        admin.close()
    problems = layout_problems(wanted, found)
    if problems:
        raise TopicLayoutMismatch("; ".join(problems))
    return found, created


def require_layout() -> None:
    """At a process's start: the topics as configured (created if missing), or exit saying what differs."""
    try:
        ensure_topics()
    except TopicLayoutMismatch as error:
        logger.critical("refusing to start: the topics differ from the configured layout",
                        extra={"problems": str(error)})
        raise SystemExit(f"refusing to start: {error} (see docs/deployment.md)") from None


def _wait_for_metadata(
    read: Callable[[], dict[str, TopicLayout]], wanted: list[TopicLayout], timeout_seconds: float
) -> dict[str, TopicLayout]:
    # A created topic reaches the brokers' metadata a moment later. A consumer that subscribes before then
    # is assigned no partition of it, and kafka-python looks again only after metadata_max_age_ms.
    deadline = time.monotonic() + timeout_seconds
    while True:
        found = read()
        if all(layout.name in found for layout in wanted) or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


class PartitionWatch:
    """Notices, from the consumer's own metadata, that a topic's partition count changed while running."""

    CHECK_EVERY_SECONDS = 10.0

    def __init__(self, consumer, topic_names: Iterable[str]) -> None:
        self._consumer = consumer
        self._topic_names = list(topic_names)
        self._next_check = time.monotonic() + self.CHECK_EVERY_SECONDS

    def changed(self) -> list[str]:
        """The topics whose partition count is no longer the configured one (no network call)."""
        now = time.monotonic()
        if now < self._next_check:
            return []
        self._next_check = now + self.CHECK_EVERY_SECONDS
        expected = settings.KAFKA_TOPIC_PARTITIONS
        counts = {name: len(self._consumer.partitions_for_topic(name) or ()) for name in self._topic_names}
        return [f"{name}: {count} partitions, configured {expected}" for name, count in counts.items()
                if count and count != expected]
