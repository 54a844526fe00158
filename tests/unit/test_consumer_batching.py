"""A Kafka consumer's batches (gathered only while the work downstream is behind), fetch waits and commits."""

import time
from types import SimpleNamespace

import pytest

from transfer_site.bus import FetchWait, OffsetCommits, StopFlag, _linger

PARTITION = ("topic", 0)


class ScriptedConsumer:
    """poll() hands out one record per call from a list, then nothing (waiting out the timeout)."""

    def __init__(self, records: int) -> None:
        self._left = list(range(records))
        self.polls = 0
        self._fetcher = SimpleNamespace(config={"fetch_max_wait_ms": 500})

    def poll(self, timeout_ms: int, max_records: int | None = None) -> dict:
        self.polls += 1
        if not self._left:
            time.sleep(timeout_ms / 1000)
            return {}
        return {PARTITION: [self._left.pop(0)]}


def first_poll(consumer: ScriptedConsumer) -> dict:
    return consumer.poll(timeout_ms=0)


def test_a_batch_goes_at_once_while_the_worker_keeps_up():
    consumer = ScriptedConsumer(records=10)
    batch = _linger(consumer, first_poll(consumer), 200, 1.0, StopFlag(), downstream_idle=lambda: True)

    assert batch == {PARTITION: [0]}
    assert consumer.polls == 1  # no linger at all


def test_a_batch_gathers_while_tasks_wait_and_goes_when_the_worker_is_free():
    consumer = ScriptedConsumer(records=10)
    answers = iter([False, False, False, True])
    batch = _linger(consumer, first_poll(consumer), 200, 1.0, StopFlag(), downstream_idle=lambda: next(answers))

    assert batch == {PARTITION: [0, 1, 2, 3]}


def test_a_batch_gathers_no_longer_than_the_linger_when_the_worker_stays_behind():
    consumer = ScriptedConsumer(records=3)
    started = time.monotonic()
    batch = _linger(consumer, first_poll(consumer), 200, 0.1, StopFlag(), downstream_idle=lambda: False)

    assert batch == {PARTITION: [0, 1, 2]}
    assert 0.09 <= time.monotonic() - started < 0.5


def test_a_batch_stops_gathering_when_full():
    consumer = ScriptedConsumer(records=50)
    batch = _linger(consumer, first_poll(consumer), 5, 1.0, StopFlag(), downstream_idle=lambda: False)

    assert batch == {PARTITION: [0, 1, 2, 3, 4]}


def test_without_a_downstream_signal_a_batch_gathers_the_whole_linger():
    consumer = ScriptedConsumer(records=3)
    started = time.monotonic()
    batch = _linger(consumer, first_poll(consumer), 200, 0.1, StopFlag())

    assert batch == {PARTITION: [0, 1, 2]}
    assert time.monotonic() - started >= 0.09


@pytest.fixture
def fetch_waits(settings):
    settings.KAFKA_CONSUMER_FETCH_MAX_WAIT_MS = 25
    settings.KAFKA_CONSUMER_IDLE_FETCH_MAX_WAIT_MS = 500


def test_the_fetch_wait_is_short_while_messages_flow_and_long_once_idle(fetch_waits):
    consumer = ScriptedConsumer(records=0)
    wait = FetchWait(consumer)
    assert consumer._fetcher.config["fetch_max_wait_ms"] == 25

    wait.after_poll(found_messages=False)
    assert consumer._fetcher.config["fetch_max_wait_ms"] == 500
    wait.after_poll(found_messages=True)
    assert consumer._fetcher.config["fetch_max_wait_ms"] == 25


def test_kafka_python_builds_each_fetch_with_the_wait_its_fetcher_holds(fetch_waits):
    """FetchWait writes into kafka-python's fetcher config (no public setter): a kafka-python that reads
    the wait from anywhere else when it builds a fetch would make FetchWait do nothing."""
    import inspect

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers="127.0.0.1:1", api_version=(2, 2))
    try:
        FetchWait(consumer).after_poll(found_messages=False)
        assert consumer._fetcher.config["fetch_max_wait_ms"] == 500
        assert "self.config['fetch_max_wait_ms']" in inspect.getsource(type(consumer._fetcher)._create_fetch_requests)
    finally:
        consumer.close()


class CommitRecorder:
    def __init__(self, fail: bool = False) -> None:
        self.commits: list[dict] = []
        self.fail = fail

    def commit(self, offsets: dict) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})
        if self.fail:
            raise RuntimeError("the group rebalanced")


def records(*offsets: int) -> list:
    return [SimpleNamespace(offset=offset) for offset in offsets]


def test_handled_offsets_are_committed_together_once_the_interval_has_passed():
    consumer = CommitRecorder()
    commits = OffsetCommits(consumer, interval_seconds=0.05)
    other = ("topic", 1)

    commits.handled({PARTITION: records(0, 1)})
    commits.handled({PARTITION: records(2), other: records(7)})
    assert consumer.commits == []

    time.sleep(0.06)
    commits.handled({PARTITION: records(3)})
    # The next offset to read of each partition: one past the last handled record.
    assert consumer.commits == [{PARTITION: 4, other: 8}]


def test_a_commit_covers_only_handled_batches_and_nothing_twice():
    consumer = CommitRecorder()
    commits = OffsetCommits(consumer, interval_seconds=60)

    commits.commit()
    assert consumer.commits == []  # nothing handled: no round trip to the broker

    commits.handled({PARTITION: records(5)})
    commits.commit()  # the flow stopped, a rebalance, or the way out
    commits.commit()
    assert consumer.commits == [{PARTITION: 6}]


def test_a_failed_commit_is_dropped_and_the_next_batch_moves_the_partition_on():
    consumer = CommitRecorder(fail=True)
    commits = OffsetCommits(consumer, interval_seconds=0)

    commits.handled({PARTITION: records(0)})  # logged, not raised: the batch was handled
    consumer.fail = False
    commits.handled({PARTITION: records(1)})
    assert consumer.commits == [{PARTITION: 1}, {PARTITION: 2}]


def test_offsets_left_when_the_flow_stops_are_committed_once_the_interval_has_passed():
    consumer = CommitRecorder()
    commits = OffsetCommits(consumer, interval_seconds=0.05)
    commits.handled({PARTITION: records(0)})

    commits.commit_if_due()  # a poll found nothing right after the batch
    assert consumer.commits == []
    time.sleep(0.06)
    commits.commit_if_due()  # a poll found nothing later on
    assert consumer.commits == [{PARTITION: 1}]
