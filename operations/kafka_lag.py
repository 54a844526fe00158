"""Kafka consumer lag, read from the brokers when asked (for /metrics).

Lag of a group on a topic = Σ over the topic's partitions of (end offset -
the group's committed offset); a partition the group never committed counts
from 0 (the consumers start at the earliest offset). Reading committed
offsets needs no member of the group: it works while the consumer is down,
which is when lag matters most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def consumer_lag(
    bootstrap_servers: str, groups: Mapping[str, Sequence[str]], timeout_seconds: float
) -> dict[tuple[str, str], int]:
    """{(group, topic): lag} for each group and its topics. Raises if the brokers do not answer."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    timeout_ms = max(1, int(timeout_seconds * 1000))
    common = {
        "bootstrap_servers": bootstrap_servers,
        "request_timeout_ms": timeout_ms,
        "api_version_auto_timeout_ms": timeout_ms,
        "client_id": "internal-transfer-metrics",
    }
    admin = KafkaAdminClient(**common)
    try:
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **common)
        try:
            lag: dict[tuple[str, str], int] = {}
            for group, topic_names in groups.items():
                partitions = [
                    TopicPartition(topic, partition)
                    for topic in topic_names
                    for partition in sorted(consumer.partitions_for_topic(topic) or ())
                ]
                # Partitions named: the "all of the group's offsets" form of the request is
                # newer, and not every Kafka-protocol broker (Tansu) answers it.
                committed = admin.list_consumer_group_offsets(group, partitions=partitions) if partitions else {}
                ends = consumer.end_offsets(partitions) if partitions else {}
                for topic in topic_names:
                    lag[(group, topic)] = 0
                for partition in partitions:
                    offset = committed.get(partition)
                    position = offset.offset if offset is not None and offset.offset >= 0 else 0
                    lag[(group, partition.topic)] += max(0, ends.get(partition, 0) - position)
            return lag
        finally:
            consumer.close()
    finally:
        admin.close()


def topic_totals(bootstrap_servers: str, topic_names: Sequence[str], timeout_seconds: float) -> dict[str, int]:
    """{topic: Σ end offsets}: how many messages were ever written to it (retention does not lower it)."""
    from kafka import KafkaConsumer, TopicPartition

    timeout_ms = max(1, int(timeout_seconds * 1000))
    consumer = KafkaConsumer(
        group_id=None, enable_auto_commit=False, bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms,
        api_version_auto_timeout_ms=timeout_ms, client_id="internal-transfer-metrics",
    )
    try:
        totals = {}
        for topic in topic_names:
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            totals[topic] = sum(consumer.end_offsets(partitions).values()) if partitions else 0
        return totals
    finally:
        consumer.close()


def service_consumer_lag() -> dict[tuple[str, str], int]:
    """{(group, topic): lag} of this service's consumer groups (the bridge's and UBSCore's)."""
    from django.conf import settings

    from transfer_site import topics

    groups = {
        topics.consumer_group(settings.SETTLEMENT_CONSUMER_GROUP): [topics.TRANSFER_REQUESTS, topics.BALANCE_EVENTS],
        topics.UBSCORE_GROUP: [topics.BALANCE_OPERATIONS],
    }
    return consumer_lag(settings.KAFKA_BOOTSTRAP_SERVERS, groups, settings.METRICS_KAFKA_TIMEOUT_SECONDS)


def dead_letter_total() -> int:
    """Every message any consumer ever dead-lettered, from whichever process: the topic's end offsets."""
    from django.conf import settings

    from transfer_site import topics

    totals = topic_totals(settings.KAFKA_BOOTSTRAP_SERVERS, [topics.DEAD_LETTERS],
                          settings.METRICS_KAFKA_TIMEOUT_SECONDS)
    return totals[topics.DEAD_LETTERS]
