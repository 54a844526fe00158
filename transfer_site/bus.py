"""The message-bus port (publish, consume) and its Kafka adapter.

Publishing is durable: `publish` returns only once the broker has the message
(acks=all), so a caller may commit state that depends on it. Consuming is at
least once: offsets are committed only after the handler has finished with a
whole batch, so every handler must be idempotent.
"""

from __future__ import annotations

import abc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from django.conf import settings

from transfer_site import faults, kafka_topics, topics
from transfer_site.messages import MalformedMessage, Message, decode
from transfer_site.shards import EVERY_USER, UserShards

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 10

# Messages this process has sent to the dead-letter topic since it started,
# counted once the broker has them (a batch handled again after a failure
# sends and counts its dead letters again): for a metrics endpoint later.
dead_letter_count = 0
_dead_letter_count_lock = threading.Lock()


class BusUnavailable(Exception):
    """The broker did not take the message; it may or may not be stored."""


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: int
    message: Message


class MessageBus(abc.ABC):
    @abc.abstractmethod
    def publish_many(self, outgoing: Sequence[Outgoing]) -> None:
        """Publish all, returning once the broker holds every one of them."""

    def publish(self, topic: str, key: int, message: Message) -> None:
        self.publish_many([Outgoing(topic, key, message)])

    def ping(self) -> None:  # noqa: B027 - adapters without a server have nothing to check
        """Raise BusUnavailable if the broker does not answer."""

    def warm_up(self, topic_names: Sequence[str]) -> None:  # noqa: B027 - adapters without a server have none
        """Connect now and learn where `topic_names` live, so the process's first publish does not pay
        for it. Never raises: a broker that is down is met again, as BusUnavailable, at that publish.

        Only topics that exist (after `kafka_topics.require_layout()`): asking a broker that creates
        topics on demand for a missing one would create it with its defaults, not the layout's.
        """

    def claim_shards(self, group_id: str) -> ShardClaim:
        """Join the copies of a process in `group_id`; the claim says which users' work is this copy's."""
        return WholeClaim()


class ShardClaim(abc.ABC):
    """This copy's share of the users, among the copies of one process (transfer_site/shards.py)."""

    @abc.abstractmethod
    def current(self) -> UserShards:
        """The shards owned now. Call it between batches only: a rebalance hands shards over in this call."""

    def close(self) -> None:  # noqa: B027 - a claim without a server has nothing to leave
        """Leave the group at once, so the other copies take the shards over without waiting."""


class WholeClaim(ShardClaim):
    """One copy owns every user (no broker to share through)."""

    def current(self) -> UserShards:
        return EVERY_USER


class KafkaMessageBus(MessageBus):
    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._producer = None
        self._producer_pid: int | None = None
        self._lock = threading.Lock()

    def _get_producer(self):
        # A producer owns a background thread: never share one across fork().
        with self._lock:
            if self._producer is None or self._producer_pid != os.getpid():
                from kafka import KafkaProducer

                self._producer = KafkaProducer(
                    bootstrap_servers=self._bootstrap_servers,
                    acks="all",
                    linger_ms=settings.KAFKA_PRODUCER_LINGER_MS,  # why 0: transfer_site/settings.py
                    retries=5,
                    max_in_flight_requests_per_connection=1,  # keep per-key order under retries
                    request_timeout_ms=PUBLISH_TIMEOUT_SECONDS * 1000,
                    # send() waits this long for metadata (default 60 s): with the broker
                    # gone, a publisher gets BusUnavailable and tries again later -- the
                    # relay's next batch, the next re-drive -- and an admin's re-drive,
                    # which publishes in a web request, answers before gunicorn's 30 s timeout.
                    max_block_ms=PUBLISH_TIMEOUT_SECONDS * 1000,
                    # kafka-python's own client metrics are never read (our /metrics reads
                    # offsets); recording them cost ~10% of the producer thread's CPU.
                    metrics_enabled=False,
                )
                self._producer_pid = os.getpid()
            return self._producer

    def publish_many(self, outgoing: Sequence[Outgoing]) -> None:
        from kafka.errors import KafkaError

        try:
            producer = self._get_producer()
            futures = [
                producer.send(item.topic, key=str(item.key).encode(), value=item.message.to_json())
                for item in outgoing
            ]
            for future in futures:
                future.get(timeout=PUBLISH_TIMEOUT_SECONDS)
        except KafkaError as error:
            raise BusUnavailable(f"Kafka did not take the message: {error!r}") from error

    def claim_shards(self, group_id: str) -> ShardClaim:
        return KafkaShardClaim(self._bootstrap_servers, group_id, topics.TRANSFER_REQUESTS)

    def warm_up(self, topic_names: Sequence[str]) -> None:
        # Without it a process's first publish makes the producer (connection, version probe) and then
        # waits for the topic's metadata: 150-300 ms that fell on the first transfers after a start.
        from kafka.errors import KafkaError

        started = time.monotonic()
        try:
            producer = self._get_producer()
            for topic in topic_names:
                producer.partitions_for(topic)
        except KafkaError as error:
            logger.warning("message bus not warmed up: %r", error)
            return
        logger.info("message bus warmed up", extra={"topics": list(topic_names),
                                                    "ms": round(1000 * (time.monotonic() - started))})

    def ping(self) -> None:
        from kafka.errors import KafkaError

        try:
            if not self._get_producer().partitions_for(topics.TRANSFER_REQUESTS):
                raise BusUnavailable("no partitions for " + topics.TRANSFER_REQUESTS)
        except KafkaError as error:
            raise BusUnavailable(repr(error)) from error


class KafkaShardClaim(ShardClaim):
    """Shards = the partitions of `topic` that Kafka's group coordinator assigns this copy in `group_id`.

    The consumer is a member of the group and nothing more: its partitions are
    paused as soon as they are assigned, so it never fetches a message (they are
    the bridge's). Kafka's eager rebalance takes every shard from every copy
    before it gives any out again, and a copy lets go only inside `current()`,
    between its batches: two copies never own one shard at once, except a copy
    cut off from Kafka for longer than the session timeout (it may then publish
    a batch its successor publishes too: a duplicate, which every consumer
    absorbs). A SIGKILLed copy's shards move after the session timeout (10 s).
    """

    JOIN_TIMEOUT_MS = 30_000

    def __init__(self, bootstrap_servers: str, group_id: str, topic: str) -> None:
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        claim = self
        self._owned: frozenset[int] = frozenset()
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            metrics_enabled=False,
            metadata_max_age_ms=30_000,
            # A copy learns of a rebalance from its next heartbeat, and owns nothing until it has rejoined.
            heartbeat_interval_ms=1_000,
        )
        deadline = time.monotonic() + self.JOIN_TIMEOUT_MS / 1000
        while not (partitions := self._consumer.partitions_for_topic(topic)):  # a broker coming back up
            if time.monotonic() > deadline:
                raise BusUnavailable(f"no partitions for {topic}")
            time.sleep(0.5)
        self._count = len(partitions)

        class TakeShards(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                claim._owned = frozenset()
                logger.info("shards revoked", extra={"group_id": group_id})

            def on_partitions_assigned(self, assigned):
                if assigned:
                    claim._consumer.pause(*assigned)
                claim._owned = frozenset(tp.partition for tp in assigned)
                logger.info("shards assigned", extra={"group_id": group_id, "shards": sorted(claim._owned),
                                                      "of": claim._count})

        self._consumer.subscribe([topic], listener=TakeShards())
        # The first join takes a few round trips; later calls only heartbeat and follow rebalances.
        while not self._consumer.assignment() and time.monotonic() < deadline:
            self._consumer.poll(timeout_ms=200)

    def current(self) -> UserShards:
        self._consumer.poll(timeout_ms=0)
        return UserShards(self._count, self._owned)

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class InMemoryMessageBus(MessageBus):
    """Records what was published. For unit and API tests only."""

    def __init__(self) -> None:
        self.published: list[Outgoing] = []

    def publish_many(self, outgoing: Sequence[Outgoing]) -> None:
        self.published.extend(outgoing)


@cache
def get_message_bus() -> MessageBus:
    if settings.MESSAGE_BUS == "kafka":
        return KafkaMessageBus(settings.KAFKA_BOOTSTRAP_SERVERS)
    if settings.MESSAGE_BUS == "memory":
        return InMemoryMessageBus()
    raise ValueError(f"unknown MESSAGE_BUS {settings.MESSAGE_BUS!r} (kafka or memory)")


@dataclass(frozen=True)
class Delivery:
    """A decoded message with where it came from."""

    topic: str
    partition: int
    offset: int
    key: str | None
    message: Message


class StopFlag:
    """Set by SIGTERM/SIGINT: a long-running loop finishes its current batch, then returns."""

    def __init__(self) -> None:
        self.stopped = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)

    def _stop(self, signum: int, frame: object) -> None:
        logger.info("stopping on signal %s after the current batch", signum)
        self.stopped = True

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake within 0.1 s of a stop signal."""
        deadline = time.monotonic() + seconds
        while not self.stopped and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, 0.1))


def run_consumer(
    *,
    group_id: str,
    topic_names: Sequence[str],
    handle_batch: Callable[[list[Delivery]], None],
    max_records: int | None = None,
    linger_ms: int | None = None,
    downstream_idle: Callable[[], bool] | None = None,
    publishes_to: Sequence[str] = (),
) -> None:
    """Consume `topic_names` in group `group_id` until SIGTERM/SIGINT.

    Each poll's messages go to `handle_batch` as one list, in partition order.
    Malformed ones go to the dead-letter topic instead, with the reason, so
    they never block their partition. Offsets are committed only after
    `handle_batch` returns; if it raises, the same messages are handled again.
    Handled offsets are committed together (`OffsetCommits`): once
    KAFKA_CONSUMER_COMMIT_INTERVAL_MS has passed since the last commit (after a
    batch, or a poll that found nothing), on a rebalance and on the way out.

    `linger_ms` (default KAFKA_CONSUMER_LINGER_MS): how long a batch may
    gather after its first message; 0 for a handler that does the work itself,
    whose next poll takes whatever arrived meanwhile (batches grow with the
    load). With `downstream_idle` (the bridge: "is the settlement queue
    empty?") a batch goes at once while the work downstream keeps up, and
    gathers, up to the linger, only while it does not. `publishes_to`: the topics
    `handle_batch` publishes to, warmed up (`MessageBus.warm_up`) once the layout is there.
    """
    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    class LogAssignments(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            logger.info("partitions revoked", extra={"partitions": sorted(map(str, revoked))})
            commits.commit()  # what this consumer handled is not handled again by the next owner

        def on_partitions_assigned(self, assigned):
            logger.info(
                "partitions assigned",
                extra={"group_id": group_id, "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)},
            )

    kafka_topics.require_layout()
    if publishes_to:  # the bridge publishes only the rare dead letter: its producer is made on the first
        get_message_bus().warm_up(publishes_to)
    stop = StopFlag()
    consumer = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records or settings.KAFKA_CONSUMER_MAX_RECORDS,
        # How long the broker may hold a fetch that found nothing new: the longest a message waits
        # for the next fetch, since the development broker does not answer early when one arrives.
        fetch_max_wait_ms=settings.KAFKA_CONSUMER_FETCH_MAX_WAIT_MS,
        metrics_enabled=False,  # never read; as for the producer, recording them costs CPU per fetch
        metadata_max_age_ms=30_000,  # so a changed partition count is seen within half a minute
    )
    fetch_wait = FetchWait(consumer)
    commits = OffsetCommits(consumer, settings.KAFKA_CONSUMER_COMMIT_INTERVAL_MS / 1000)
    partition_watch = kafka_topics.PartitionWatch(consumer, topic_names)
    batch_limit = max_records or settings.KAFKA_CONSUMER_MAX_RECORDS
    linger_seconds = (settings.KAFKA_CONSUMER_LINGER_MS if linger_ms is None else linger_ms) / 1000
    consumer.subscribe(list(topic_names), listener=LogAssignments())
    retry_delay = 0.2
    logger.info("consumer started", extra={"group_id": group_id, "topics": list(topic_names)})
    try:
        while not stop.stopped:
            if changed := partition_watch.changed():
                # Messages of one user may now sit on two partitions: stop rather than apply them out of order.
                logger.critical("partition count changed under the consumer; stopping", extra={"topics": changed})
                raise SystemExit("partition count changed: " + "; ".join(changed))
            polled = consumer.poll(timeout_ms=200)
            fetch_wait.after_poll(bool(polled))
            if not polled:
                commits.commit_if_due()
                continue
            polled = _linger(consumer, polled, batch_limit, linger_seconds, stop, downstream_idle)
            batch_start = {tp: records[0].offset for tp, records in polled.items()}
            try:
                deliveries = _decode_or_dead_letter(polled)
                if deliveries:
                    handle_batch(deliveries)
                faults.crash_point(faults.CONSUMER_BEFORE_COMMIT)  # test hook: the batch comes again
                commits.handled(polled)
                retry_delay = 0.2
            except Exception:
                logger.exception("batch failed; it will be handled again", extra={"group_id": group_id})
                for tp, offset in batch_start.items():
                    consumer.seek(tp, offset)
                stop.sleep(retry_delay)
                retry_delay = min(retry_delay * 2, 5.0)
    finally:
        commits.commit()
        consumer.close(autocommit=False)
        logger.info("consumer stopped", extra={"group_id": group_id})


class OffsetCommits:
    """The offsets of handled batches, committed together rather than after every batch.

    A commit is a round trip to the broker and work for it; with batches that
    go at once (a few messages each at low load) committing each one cost the
    bridge and UBSCore more than a tenth of their CPU. Committing later only
    widens what a crash hands over again -- handled messages of up to
    `interval_seconds` -- and every handler absorbs a repeat by its id, as it
    must for any at-least-once delivery. Only offsets of batches the handler
    finished are kept, so a commit never covers a message polled but not
    handled. A failed commit is logged and dropped: at worst those messages
    come again, and the next handled batch of a partition moves it on anyway.
    """

    def __init__(self, consumer, interval_seconds: float) -> None:
        self._consumer = consumer
        self._interval = interval_seconds
        self._pending: dict = {}
        self._last_commit = time.monotonic()

    def handled(self, batch: dict) -> None:
        """Record a handled batch ({partition: records}); commit if the interval has passed."""
        from kafka.structs import OffsetAndMetadata

        for partition, records in batch.items():
            self._pending[partition] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        self.commit_if_due()

    def commit_if_due(self) -> None:
        """Commit if the interval has passed since the last commit (also after a poll that found nothing)."""
        if time.monotonic() - self._last_commit >= self._interval:
            self.commit()

    def commit(self) -> None:
        """Commit every handled offset not committed yet."""
        self._last_commit = time.monotonic()
        if not self._pending:
            return
        offsets, self._pending = self._pending, {}
        try:
            self._consumer.commit(offsets=offsets)
        except Exception:
            logger.warning("offset commit failed; those messages may come again", exc_info=True)


class FetchWait:
    """How long the broker may hold a consumer's fetch: short while messages flow, long once idle.

    The development broker (Tansu) does not answer a waiting fetch when a
    message arrives while messages keep coming: it looks again at W/2, 3W/4,
    ... of the wait W. Under load the wait decides how late a message is seen
    and how many a batch holds, so it is short there
    (KAFKA_CONSUMER_FETCH_MAX_WAIT_MS). An idle consumer with that wait sends a
    fetch 20 times a second for nothing; after a poll that found nothing it
    waits KAFKA_CONSUMER_IDLE_FETCH_MAX_WAIT_MS instead, and the first message
    after the quiet still comes back at once (both brokers answer a fetch early
    when data arrives at an idle partition). Kafka answers early in both cases.
    kafka-python reads the wait from its fetcher's config for every fetch it
    builds; it has no public setter.
    """

    def __init__(self, consumer) -> None:
        self._config = consumer._fetcher.config
        self.busy_ms = settings.KAFKA_CONSUMER_FETCH_MAX_WAIT_MS
        self.idle_ms = max(self.busy_ms, settings.KAFKA_CONSUMER_IDLE_FETCH_MAX_WAIT_MS)
        self._config["fetch_max_wait_ms"] = self.busy_ms

    def after_poll(self, found_messages: bool) -> None:
        self._config["fetch_max_wait_ms"] = self.busy_ms if found_messages else self.idle_ms


# While the work downstream is behind, a lingering batch looks again this often whether it may go.
DOWNSTREAM_CHECK_SECONDS = 0.005


def _linger(
    consumer,
    polled: dict,
    limit: int,
    linger_seconds: float,
    stop: StopFlag,
    downstream_idle: Callable[[], bool] | None = None,
) -> dict:
    """Keep polling for up to `linger_seconds` after the first message, up to `limit` records: one batch.

    Each batch handed over costs the handler a fixed price (a Celery task's
    transactions and publish); gathering makes it one price for many
    messages. Without `downstream_idle` the batch gathers the whole linger.
    With it, the batch goes as soon as the work downstream is idle: at low
    load at once (no linger in the latency), under load when the worker is
    free again, so batches grow with the backlog instead of the worker's queue
    filling with small tasks. Records keep their partition order; the batch is
    committed, or sought back to, as one.
    """
    count = sum(len(records) for records in polled.values())
    if linger_seconds <= 0 or count >= limit:
        return polled
    merged = {tp: list(records) for tp, records in polled.items()}
    deadline = time.monotonic() + linger_seconds
    while count < limit and not stop.stopped:
        if downstream_idle is not None and downstream_idle():
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        wait = remaining if downstream_idle is None else min(remaining, DOWNSTREAM_CHECK_SECONDS)
        for tp, records in consumer.poll(timeout_ms=max(1, int(wait * 1000)), max_records=limit - count).items():
            merged.setdefault(tp, []).extend(records)
            count += len(records)
    return merged


def _decode_or_dead_letter(polled: dict) -> list[Delivery]:
    deliveries = []
    dead_letters = []
    for records in polled.values():
        for record in records:
            try:
                message = decode(record.value)
            except MalformedMessage as error:
                dead_letters.append((record, str(error)))
                continue
            key = record.key.decode(errors="replace") if record.key is not None else None
            deliveries.append(Delivery(record.topic, record.partition, record.offset, key, message))
    if dead_letters:
        _publish_dead_letters(dead_letters)
        # Counted only once published: a failed publish re-polls the batch.
        total = _count_dead_letters(len(dead_letters))
        for number, (record, reason) in enumerate(dead_letters, start=total - len(dead_letters) + 1):
            logger.error(
                "malformed message sent to the dead-letter topic",
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset,
                       "reason": reason, "dead_letters_total": number},
            )
    return deliveries


def _count_dead_letters(added: int) -> int:
    global dead_letter_count
    with _dead_letter_count_lock:
        dead_letter_count += added
        return dead_letter_count


def _publish_dead_letters(records: list[tuple[object, str]]) -> None:
    from kafka import KafkaProducer

    # Raw bytes go on as they came, with where they came from in headers.
    producer = KafkaProducer(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, acks="all")
    try:
        for record, reason in records:
            headers = [
                ("reason", reason.encode()),
                ("source_topic", record.topic.encode()),
                ("source_partition", str(record.partition).encode()),
                ("source_offset", str(record.offset).encode()),
            ]
            producer.send(topics.DEAD_LETTERS, key=record.key, value=record.value, headers=headers).get(
                timeout=PUBLISH_TIMEOUT_SECONDS
            )
    finally:
        producer.close()
