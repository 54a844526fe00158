"""The re-drive (settlement.redrive_stuck_transfers): claims, no storm, no starvation, no poison."""

import time

import pytest

from settlement import saga
from settlement.deposits import deposit_to_funding
from settlement.ledger.ids import TransferStep, transfer_id, user_funding_account_id
from settlement.ledger.sql import SqlFundingLedger
from transfer_site import topics
from transfer_site.bus import InMemoryMessageBus
from transfers.domain import Direction, TransferRecord, TransferStatus
from transfers.store.orm import OrmTransferStore

pytestmark = pytest.mark.django_db

USDT = 1
USER = 2002
STUCK_MS = 30_000
_next_request_id = iter(range(8_000_000_000, 9_000_000_000))


@pytest.fixture
def ports():
    return saga.Ports(store=OrmTransferStore(), ledger=SqlFundingLedger(), bus=InMemoryMessageBus())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def stuck_transfer(ports, direction, amount, status=TransferStatus.PENDING, age_ms=60_000) -> TransferRecord:
    at = now_ms() - age_ms
    record = TransferRecord(
        request_id=next(_next_request_id), user_id=USER, asset_id=USDT, asset_code="USDT", direction=direction,
        amount=amount, status=status, client_transfer_id=None, error_message=None,
        created_at_ms=at, updated_at_ms=at,
    )
    ports.store.create(record)
    return record


def sent_ref_ids(ports) -> list[int]:
    return [p.message.ref_id for p in ports.bus.published]


def test_a_driven_transfer_is_not_driven_again_within_the_period(ports):
    deposit_to_funding(USER, USDT, 100, reference=21)
    record = stuck_transfer(ports, Direction.FUNDING_TO_SPOT, 10)

    assert saga.redrive_stuck_transfers(STUCK_MS, ports=ports) == 1
    # Beat fires again (or two runs overlap) before the transfer moved on.
    assert saga.redrive_stuck_transfers(STUCK_MS, ports=ports) == 0
    assert saga.redrive_stuck_transfers(STUCK_MS, ports=ports) == 0

    assert sent_ref_ids(ports) == [record.request_id]  # one TransferIn, not one per beat
    stored = ports.store.get(record.request_id)
    assert stored.status == TransferStatus.PENDING
    assert stored.error_message is None
    assert stored.updated_at_ms >= now_ms() - 5_000  # claimed: back of the queue


def test_a_transfer_still_stuck_a_period_later_is_driven_again(ports):
    deposit_to_funding(USER, USDT, 100, reference=22)
    record = stuck_transfer(ports, Direction.FUNDING_TO_SPOT, 10)

    saga.redrive_stuck_transfers(STUCK_MS, ports=ports)
    time.sleep(0.01)
    saga.redrive_stuck_transfers(1, ports=ports)  # "a period later"

    assert sent_ref_ids(ports) == [record.request_id] * 2
    assert ports.ledger.lookup_accounts([user_funding_account_id(USER, USDT)])[0].debits_pending == 10


def test_transfers_that_stay_stuck_do_not_starve_the_ones_behind_them(ports):
    # Spot -> funding transfers that UBSCore never answers stay stuck for ever;
    # more of them than one run takes must not keep the next ones waiting.
    forever = [stuck_transfer(ports, Direction.SPOT_TO_FUNDING, 1, age_ms=90_000 - i) for i in range(3)]
    behind = stuck_transfer(ports, Direction.SPOT_TO_FUNDING, 1, age_ms=60_000)

    assert saga.redrive_stuck_transfers(STUCK_MS, limit=3, ports=ports) == 3
    assert saga.redrive_stuck_transfers(STUCK_MS, limit=3, ports=ports) == 1

    assert sent_ref_ids(ports) == [r.request_id for r in forever] + [behind.request_id]


def test_a_requesting_spot_to_funding_transfer_is_published_and_marked_pending(ports):
    record = stuck_transfer(ports, Direction.SPOT_TO_FUNDING, 5, status=TransferStatus.REQUESTING)

    saga.redrive_stuck_transfers(STUCK_MS, ports=ports)

    (sent,) = ports.bus.published
    assert (sent.topic, sent.key, sent.message.ref_id, sent.message.operation) == (
        topics.BALANCE_OPERATIONS, USER, record.request_id, "TransferOut")
    assert ports.store.get(record.request_id).status == TransferStatus.PENDING


def test_a_requesting_spot_to_funding_transfer_stays_requesting_if_publishing_fails(ports):
    record = stuck_transfer(ports, Direction.SPOT_TO_FUNDING, 5, status=TransferStatus.REQUESTING)
    ports = saga.Ports(store=ports.store, ledger=ports.ledger, bus=FailingBus())

    with pytest.raises(RuntimeError):
        saga.redrive_stuck_transfers(STUCK_MS, ports=ports)

    assert ports.store.get(record.request_id).status == TransferStatus.REQUESTING


def test_a_requesting_funding_to_spot_transfer_is_reserved_published_and_marked_pending(ports):
    deposit_to_funding(USER, USDT, 100, reference=23)
    record = stuck_transfer(ports, Direction.FUNDING_TO_SPOT, 7, status=TransferStatus.REQUESTING)

    saga.redrive_stuck_transfers(STUCK_MS, ports=ports)

    assert sent_ref_ids(ports) == [record.request_id]
    assert ports.store.get(record.request_id).status == TransferStatus.PENDING
    reserve_id = transfer_id(TransferStep.FUNDING_TO_SPOT_RESERVE, record.request_id)
    assert [t.amount for t in ports.ledger.lookup_transfers([reserve_id])] == [7]


def test_a_transfer_that_finished_after_it_was_listed_is_left_alone(ports):
    record = stuck_transfer(ports, Direction.SPOT_TO_FUNDING, 5)
    listed = ports.store.list_not_moved_since({TransferStatus.PENDING}, now_ms(), 10)
    ports.store.compare_and_set_status(record.request_id, {TransferStatus.PENDING}, TransferStatus.SUCCESS)
    ports = saga.Ports(store=StaleListing(listed), ledger=ports.ledger, bus=ports.bus)

    assert saga.redrive_stuck_transfers(STUCK_MS, ports=ports) == 0

    assert ports.bus.published == []
    assert ports.store.get(record.request_id).status == TransferStatus.SUCCESS


def test_one_transfer_that_breaks_its_batch_does_not_hold_back_the_others(ports):
    deposit_to_funding(USER, USDT, 100, reference=24)
    poison = stuck_transfer(ports, Direction.FUNDING_TO_SPOT, 3, age_ms=70_000)
    healthy = stuck_transfer(ports, Direction.FUNDING_TO_SPOT, 4, age_ms=60_000)
    outbound = stuck_transfer(ports, Direction.SPOT_TO_FUNDING, 5, age_ms=60_000)
    ports = saga.Ports(store=ports.store, ledger=LedgerFailingFor(poison.request_id), bus=ports.bus)

    with pytest.raises(RuntimeError, match="poison"):
        saga.redrive_stuck_transfers(STUCK_MS, ports=ports)

    assert sorted(sent_ref_ids(ports)) == sorted([healthy.request_id, outbound.request_id])
    assert ports.store.get(healthy.request_id).status == TransferStatus.PENDING
    assert ports.store.get(poison.request_id).status == TransferStatus.PENDING  # tried again next period


class FailingBus(InMemoryMessageBus):
    def publish_many(self, outgoing):
        raise RuntimeError("broker down")


class StaleListing(OrmTransferStore):
    def __init__(self, listed):
        self._listed = listed

    def list_not_moved_since(self, statuses, updated_before_ms, limit):
        return self._listed


class LedgerFailingFor(SqlFundingLedger):
    def __init__(self, request_id):
        super().__init__()
        self._poison = transfer_id(TransferStep.FUNDING_TO_SPOT_RESERVE, request_id)

    def create_transfers(self, transfers):
        if any(t.id == self._poison for t in transfers):
            raise RuntimeError("poison")
        return super().create_transfers(transfers)
