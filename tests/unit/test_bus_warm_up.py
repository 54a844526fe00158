"""A process connects to the broker and learns its topics before its first publish (MessageBus.warm_up)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import SimpleNamespace

import kafka
from celery.signals import worker_process_init

from settlement import tasks
from transfer_site import bus, topics
from transfer_site.bus import InMemoryMessageBus
from transfer_site.messages import BalanceOperation


class RecordingProducer:
    made = 0

    def __init__(self, **config):
        RecordingProducer.made += 1
        self.asked: list[str] = []
        self.sent: list[str] = []

    def partitions_for(self, topic):
        self.asked.append(topic)
        return {0, 1}

    def send(self, topic, **kwargs):
        self.sent.append(topic)
        return self

    def get(self, timeout):
        return None


def test_warm_up_makes_the_producer_and_asks_for_each_topic_and_the_first_publish_reuses_them(monkeypatch):
    monkeypatch.setattr(kafka, "KafkaProducer", RecordingProducer)
    RecordingProducer.made = 0
    kafka_bus = bus.KafkaMessageBus("127.0.0.1:1")

    kafka_bus.warm_up([topics.TRANSFER_REQUESTS, topics.BALANCE_OPERATIONS])
    producer = kafka_bus._get_producer()
    assert producer.asked == [topics.TRANSFER_REQUESTS, topics.BALANCE_OPERATIONS]

    kafka_bus.publish(topics.BALANCE_OPERATIONS, 1, BalanceOperation(
        ref_id=1, operation="TransferIn", user_id=1, asset_id=1, amount=1))
    assert producer.sent == [topics.BALANCE_OPERATIONS]
    assert RecordingProducer.made == 1


def test_warm_up_without_a_broker_logs_and_lets_the_process_start(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    caplog.set_level(logging.WARNING, logger="transfer_site.bus")

    bus.KafkaMessageBus(f"127.0.0.1:{closed}").warm_up([topics.BALANCE_EVENTS])  # does not raise

    assert any("not warmed up" in record.getMessage() for record in caplog.records)


class SlowWarmUpBus(InMemoryMessageBus):
    """Warms up as slowly as against a broker that is down."""

    def __init__(self) -> None:
        super().__init__()
        self.warmed: list[list[str]] = []
        self.done = threading.Event()

    def warm_up(self, topic_names):
        time.sleep(0.5)
        self.warmed.append(list(topic_names))
        self.done.set()


def test_each_new_celery_worker_process_warms_up_in_the_background(monkeypatch):
    slow = SlowWarmUpBus()
    monkeypatch.setattr(tasks.saga, "default_ports", lambda: SimpleNamespace(bus=slow))

    started = time.monotonic()
    worker_process_init.send(sender=None)
    # The child reports itself up at once (Celery ends one that takes over 4 s); the warm-up goes on.
    assert time.monotonic() - started < 0.25

    assert slow.done.wait(5)
    assert slow.warmed == [[]]  # the producer only: the topics may not exist yet
