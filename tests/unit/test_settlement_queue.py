"""The bridge's view of settlement: how many tasks wait in the Celery broker (filesystem or Redis)."""

import uuid

import pytest

from settlement.queue import SettlementQueue
from transfer_site.celery import app


@pytest.fixture
def queue_name():
    return f"settlement-test-{uuid.uuid4().hex[:8]}"


def put(queue_name: str, count: int) -> None:
    with app.connection_for_write() as connection:
        simple = connection.SimpleQueue(queue_name)
        for number in range(count):
            simple.put({"n": number})
        simple.close()


def take_all(queue_name: str) -> int:
    taken = 0
    with app.connection_for_read() as connection:
        simple = connection.SimpleQueue(queue_name)
        while True:
            try:
                simple.get(block=False).ack()
            except simple.Empty:
                break
            taken += 1
        simple.close()
    return taken


def test_the_queue_is_idle_when_no_task_waits_and_busy_while_some_do(queue_name):
    queue = SettlementQueue(queue_name)
    try:
        assert queue.waiting() == 0 and queue.is_idle()
        put(queue_name, 3)
        assert queue.waiting() == 3 and not queue.is_idle()
        assert take_all(queue_name) == 3
        assert queue.is_idle()
    finally:
        queue.close()


def test_a_broker_that_cannot_answer_does_not_hold_batches_back(queue_name, monkeypatch):
    queue = SettlementQueue(queue_name)

    def broken() -> int:
        raise ConnectionError("broker gone")

    monkeypatch.setattr(queue, "waiting", broken)
    assert queue.is_idle()
