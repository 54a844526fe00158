"""The outbox relay (transfers.relay): publishes `requesting` transfers, marks them `pending`, at least once."""

from __future__ import annotations

import time
from unittest import mock

import pytest

from transfer_site import topics
from transfer_site.bus import BusUnavailable, InMemoryMessageBus
from transfer_site.messages import BalanceOperation, TransferRequested
from transfer_site.shards import UserShards
from transfers.domain import Direction, EventKind, TransferRecord, TransferStatus
from transfers.relay import TransferRelay
from transfers.store.orm import OrmTransferStore

pytestmark = pytest.mark.django_db

USDT = 1
USER = 3003
_next_request_id = iter(range(9_100_000_000, 9_200_000_000))


@pytest.fixture
def store() -> OrmTransferStore:
    return OrmTransferStore()


@pytest.fixture
def bus() -> InMemoryMessageBus:
    return InMemoryMessageBus()


def accepted(store, direction: Direction, amount: int = 5, age_ms: int = 0,
             status: TransferStatus = TransferStatus.REQUESTING, user_id: int = USER) -> TransferRecord:
    """A transfer as the API stores it."""
    at = time.time_ns() // 1_000_000 - age_ms
    record = TransferRecord(
        request_id=next(_next_request_id), user_id=user_id, asset_id=USDT, asset_code="USDT", direction=direction,
        amount=amount, status=status, client_transfer_id=None, error_message=None,
        created_at_ms=at, updated_at_ms=at,
    )
    store.create(record)
    return record


def status_of(store, record) -> TransferStatus:
    return store.get(record.request_id).status


def timeline_kinds(store, record) -> list[str]:
    return [event.kind.value for event in store.timeline(record.request_id)]


def test_publishes_each_directions_first_message_and_marks_pending(store, bus):
    to_spot = accepted(store, Direction.FUNDING_TO_SPOT, 7, age_ms=2)
    to_funding = accepted(store, Direction.SPOT_TO_FUNDING, 9, age_ms=1)

    assert TransferRelay(store, bus).relay_batch() == 2

    assert [(out.topic, out.key, out.message) for out in bus.published] == [
        (topics.TRANSFER_REQUESTS, USER, TransferRequested(
            request_id=to_spot.request_id, user_id=USER, asset_id=USDT, amount=7, direction="funding_to_spot")),
        (topics.BALANCE_OPERATIONS, USER, BalanceOperation(
            ref_id=to_funding.request_id, operation="TransferOut", user_id=USER, asset_id=USDT, amount=9)),
    ]
    assert status_of(store, to_spot) is status_of(store, to_funding) is TransferStatus.PENDING
    assert timeline_kinds(store, to_spot) == ["published", "status_changed"]
    assert timeline_kinds(store, to_funding) == ["transfer_out_sent", "status_changed"]


def test_only_requesting_transfers_go_out_and_each_once(store, bus):
    already_pending = accepted(store, Direction.FUNDING_TO_SPOT, status=TransferStatus.PENDING)
    finished = accepted(store, Direction.SPOT_TO_FUNDING, status=TransferStatus.SUCCESS)
    waiting = accepted(store, Direction.SPOT_TO_FUNDING)
    relay = TransferRelay(store, bus)

    assert relay.relay_batch() == 1
    assert relay.relay_batch() == 0  # now `pending`: not published again
    assert [out.message.ref_id for out in bus.published] == [waiting.request_id]
    assert status_of(store, already_pending) is TransferStatus.PENDING
    assert status_of(store, finished) is TransferStatus.SUCCESS


def test_a_batch_is_the_oldest_transfers_first(store, bus):
    newest = accepted(store, Direction.SPOT_TO_FUNDING, age_ms=0)
    oldest = accepted(store, Direction.SPOT_TO_FUNDING, age_ms=30)
    middle = accepted(store, Direction.SPOT_TO_FUNDING, age_ms=20)
    relay = TransferRelay(store, bus, batch_size=2)

    assert relay.relay_batch() == 2
    assert relay.relay_batch() == 1
    assert relay.relay_batch() == 0
    assert [out.message.ref_id for out in bus.published] == [oldest.request_id, middle.request_id, newest.request_id]


def test_a_transfer_stamped_by_a_web_host_whose_clock_is_ahead_goes_out_at_once(store, bus):
    record = accepted(store, Direction.FUNDING_TO_SPOT, age_ms=-60_000)  # "created" a minute from now
    assert TransferRelay(store, bus).relay_batch() == 1
    assert [out.message.request_id for out in bus.published] == [record.request_id]


def test_a_transfer_the_saga_moved_on_meanwhile_keeps_its_status(store, bus):
    record = accepted(store, Direction.SPOT_TO_FUNDING)
    publish = bus.publish_many

    def quick_consumer(outgoing):
        # UBSCore answered and settlement finished the transfer before the relay's compare-and-set.
        publish(outgoing)
        assert store.compare_and_set_status(record.request_id, {TransferStatus.REQUESTING}, TransferStatus.FAILED,
                                            "insufficient balance")

    with mock.patch.object(bus, "publish_many", side_effect=quick_consumer):
        assert TransferRelay(store, bus).relay_batch() == 1
    stored = store.get(record.request_id)
    assert (stored.status, stored.error_message) == (TransferStatus.FAILED, "insufficient balance")
    assert timeline_kinds(store, record) == ["transfer_out_sent"]  # no requesting -> pending by the relay


def test_while_the_broker_is_down_nothing_is_marked_and_the_next_batch_publishes(store, bus):
    record = accepted(store, Direction.FUNDING_TO_SPOT)
    relay = TransferRelay(store, bus)
    with mock.patch.object(bus, "publish_many", side_effect=BusUnavailable("broker down")):
        with pytest.raises(BusUnavailable):
            relay.relay_batch()
    assert status_of(store, record) is TransferStatus.REQUESTING
    assert bus.published == []

    assert relay.relay_batch() == 1
    assert [out.message.request_id for out in bus.published] == [record.request_id]
    assert status_of(store, record) is TransferStatus.PENDING


def test_stopping_between_publish_and_mark_publishes_again(store, bus):
    # At least once: a relay that dies after the broker took the batch sends it again.
    record = accepted(store, Direction.SPOT_TO_FUNDING)
    with mock.patch.object(store, "compare_and_set_many", side_effect=RuntimeError("relay died")):
        with pytest.raises(RuntimeError):
            TransferRelay(store, bus).relay_batch()
    assert status_of(store, record) is TransferStatus.REQUESTING

    assert TransferRelay(store, bus).relay_batch() == 1
    assert [out.message.ref_id for out in bus.published] == [record.request_id, record.request_id]
    assert status_of(store, record) is TransferStatus.PENDING
    assert timeline_kinds(store, record).count(EventKind.STATUS_CHANGED.value) == 1


class CountedStop:
    """A stop flag that records the loop's sleeps and stops it after `sleeps` of them."""

    def __init__(self, sleeps: int) -> None:
        self.stopped = False
        self.slept: list[float] = []
        self._sleeps = sleeps

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.stopped = len(self.slept) >= self._sleeps


def test_the_loop_backs_off_while_the_broker_is_down_and_polls_once_it_is_back(store, bus, settings):
    settings.RELAY_POLL_MS = 20
    record = accepted(store, Direction.SPOT_TO_FUNDING)
    publish = bus.publish_many
    attempts = iter([BusUnavailable("down")] * 3)

    def down_three_times(outgoing):
        error = next(attempts, None)
        if error is not None:
            raise error
        publish(outgoing)

    stop = CountedStop(sleeps=5)
    with mock.patch.object(bus, "publish_many", side_effect=down_three_times):
        TransferRelay(store, bus).run(stop)
    assert stop.slept == [0.2, 0.4, 0.8, 0.02, 0.02]  # backing off, then published and polling
    assert status_of(store, record) is TransferStatus.PENDING


def test_the_loop_goes_on_at_once_while_batches_are_full(store, bus, settings):
    settings.RELAY_POLL_MS = 20
    for _ in range(5):
        accepted(store, Direction.SPOT_TO_FUNDING)
    stop = CountedStop(sleeps=1)
    TransferRelay(store, bus, batch_size=2).run(stop)
    # Two full batches without a pause, then the last one (1 transfer) and the first idle sleep.
    assert len(bus.published) == 5
    assert stop.slept == [0.02]


def test_copies_each_publish_their_own_users_transfers_and_together_all(store, bus):
    users = [USER * 10 + n for n in range(4)]
    records = [accepted(store, Direction.SPOT_TO_FUNDING, user_id=user_id, age_ms=10 - n)
               for n, user_id in enumerate(users)]
    relay = TransferRelay(store, bus)
    first_copy, second_copy = UserShards(2, frozenset({0})), UserShards(2, frozenset({1}))

    assert relay.relay_batch(first_copy) == 2
    assert {out.key for out in bus.published} == {u for u in users if u % 2 == 0}
    assert relay.relay_batch(first_copy) == 0  # the other users' transfers are not this copy's
    assert relay.relay_batch(second_copy) == 2
    assert sorted(out.message.ref_id for out in bus.published) == sorted(r.request_id for r in records)
    assert all(status_of(store, record) is TransferStatus.PENDING for record in records)


def test_a_copy_without_shards_publishes_nothing(store, bus):
    record = accepted(store, Direction.FUNDING_TO_SPOT)
    assert TransferRelay(store, bus).relay_batch(UserShards(4, frozenset())) == 0
    assert bus.published == []
    assert status_of(store, record) is TransferStatus.REQUESTING


class StopThatAcceptsOnce(CountedStop):
    """Accepts one transfer during its `at`-th sleep (a user sends one after a quiet spell)."""

    def __init__(self, sleeps: int, at: int, accept) -> None:
        super().__init__(sleeps)
        self._at, self._accept = at, accept

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if len(self.slept) == self._at:
            self._accept()


def test_an_idle_relay_polls_less_and_less_often_and_often_again_once_transfers_come(store, bus, settings):
    settings.RELAY_POLL_MS = 20
    settings.RELAY_IDLE_POLL_MS = 160
    stop = StopThatAcceptsOnce(sleeps=9, at=5, accept=lambda: accepted(store, Direction.SPOT_TO_FUNDING))
    TransferRelay(store, bus).run(stop)

    # Nothing: 20 ms doubling up to 160 ms; the transfer accepted meanwhile is published at the next
    # poll, and polling is quick again.
    assert stop.slept == [0.02, 0.04, 0.08, 0.16, 0.16, 0.02, 0.02, 0.04, 0.08]
    assert len(bus.published) == 1


def test_after_a_full_batch_an_empty_poll_pauses_briefly_not_as_long_as_when_idle(store, bus, settings):
    settings.RELAY_POLL_MS = 20
    settings.RELAY_IDLE_POLL_MS = 160
    two_at_once = lambda: [accepted(store, Direction.SPOT_TO_FUNDING) for _ in range(2)]  # noqa: E731
    stop = StopThatAcceptsOnce(sleeps=7, at=5, accept=two_at_once)
    TransferRelay(store, bus, batch_size=2).run(stop)

    # Idle up to 160 ms; a full batch (no pause after it) and the empty poll after it waits 20 ms again.
    assert stop.slept == [0.02, 0.04, 0.08, 0.16, 0.16, 0.02, 0.04]
    assert len(bus.published) == 2
