"""The topic layout check (transfer_site/kafka_topics.py): pure parts; the broker side is in
tests/e2e/test_kafka_topics_e2e.py."""

from __future__ import annotations

from unittest import mock

import pytest

from transfer_site import kafka_topics
from transfer_site.kafka_topics import PartitionWatch, TopicLayout, layout_problems

WANTED = [TopicLayout("a", 4, 3), TopicLayout("b", 4, 3)]


def test_the_configured_layout_has_no_problems():
    assert layout_problems(WANTED, {layout.name: layout for layout in WANTED}) == []


def test_each_difference_is_named():
    found = {"a": TopicLayout("a", 6, 1)}
    assert layout_problems(WANTED, found) == [
        "a: 6 partitions, configured 4 (KAFKA_TOPIC_PARTITIONS); a different count reorders users' messages",
        "a: replication factor 1, configured 3 (KAFKA_REPLICATION_FACTOR)",
        "b: missing",
    ]


def test_wanted_layouts_come_from_the_settings(settings):
    settings.KAFKA_TOPIC_PARTITIONS, settings.KAFKA_REPLICATION_FACTOR = 12, 3
    layouts = kafka_topics.wanted_layouts()
    assert len(layouts) == 4 and {(layout.partitions, layout.replication_factor) for layout in layouts} == {(12, 3)}


class ConsumerMetadata:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def partitions_for_topic(self, name: str) -> set[int] | None:
        return set(range(self.counts[name])) if name in self.counts else None


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(kafka_topics.time, "monotonic", lambda: now[0])
    return now


def test_the_watch_reports_a_changed_count_at_its_next_check(settings, clock):
    settings.KAFKA_TOPIC_PARTITIONS = 4
    metadata = ConsumerMetadata({"a": 4, "b": 4})
    watch = PartitionWatch(metadata, ["a", "b"])
    metadata.counts["b"] = 5
    assert watch.changed() == []  # not yet time to look
    clock[0] += PartitionWatch.CHECK_EVERY_SECONDS
    assert watch.changed() == ["b: 5 partitions, configured 4"]


def test_the_watch_ignores_a_topic_not_yet_in_the_metadata(settings, clock):
    settings.KAFKA_TOPIC_PARTITIONS = 4
    watch = PartitionWatch(ConsumerMetadata({"a": 4}), ["a", "b"])
    clock[0] += PartitionWatch.CHECK_EVERY_SECONDS
    assert watch.changed() == []


def test_connecting_waits_while_the_broker_refuses_connections(settings):
    """A process started while Kafka restarts waits for it instead of crashing (seen in the chaos run)."""
    from kafka.errors import KafkaConnectionError, NoBrokersAvailable

    admin = object()
    attempts = [NoBrokersAvailable(), KafkaConnectionError("Connection to bootstrap-0 failed."), admin]

    def connect(**_options):
        outcome = attempts.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with mock.patch("kafka.KafkaAdminClient", side_effect=connect), mock.patch("time.sleep"):
        assert kafka_topics.connect_admin(timeout_seconds=60) is admin
    assert attempts == []


def test_connecting_gives_up_after_its_timeout(settings):
    from kafka.errors import KafkaConnectionError

    with mock.patch("kafka.KafkaAdminClient", side_effect=KafkaConnectionError("refused")), \
            mock.patch("time.sleep"), pytest.raises(KafkaConnectionError):
        kafka_topics.connect_admin(timeout_seconds=0)
