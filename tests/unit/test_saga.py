"""The saga's steps against the ORM store and the SQL ledger, publishing to memory."""

import time

import pytest

from settlement import saga
from settlement.deposits import deposit_to_funding
from settlement.ledger.ids import spot_pool_account_id, user_funding_account_id
from settlement.ledger.sql import SqlFundingLedger
from transfer_site import topics
from transfer_site.bus import InMemoryMessageBus
from transfer_site.messages import BalanceEvent, BalanceOperation, TransferRequested
from transfers.domain import Direction, TransferRecord, TransferStatus
from transfers.store.orm import OrmTransferStore

pytestmark = pytest.mark.django_db

USDT = 1
USER = 1001
_next_request_id = iter(range(7_000_000_000, 8_000_000_000))


@pytest.fixture
def ports():
    return saga.Ports(store=OrmTransferStore(), ledger=SqlFundingLedger(), bus=InMemoryMessageBus())


def new_transfer(ports, direction, amount, status=TransferStatus.PENDING, updated_at_ms=None) -> TransferRecord:
    now = time.time_ns() // 1_000_000
    record = TransferRecord(
        request_id=next(_next_request_id), user_id=USER, asset_id=USDT, asset_code="USDT", direction=direction,
        amount=amount, status=status, client_transfer_id=None, error_message=None,
        created_at_ms=now, updated_at_ms=updated_at_ms or now,
    )
    ports.store.create(record)
    return record


def funding_account(ports):
    (account,) = ports.ledger.lookup_accounts([user_funding_account_id(USER, USDT)])
    return account


def spot_pool(ports):
    (account,) = ports.ledger.lookup_accounts([spot_pool_account_id(USDT)])
    return account


def answer(record, status="applied", reason=None, amount=None) -> BalanceEvent:
    operation = saga.balance_operation_for(record)
    return BalanceEvent(ref_id=record.request_id, operation=operation.operation, user_id=record.user_id,
                        asset_id=record.asset_id, amount=amount or record.amount, status=status, reason=reason)


def status_of(ports, record):
    stored = ports.store.get(record.request_id)
    return stored.status, stored.error_message


def test_reserve_holds_funds_and_asks_ubscore_to_credit_spot(ports):
    deposit_to_funding(USER, USDT, 100, reference=1)
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30, status=TransferStatus.REQUESTING)

    saga.reserve_funding([record.request_id], ports)

    account = funding_account(ports)
    assert (account.debits_pending, account.available) == (30, 70)
    assert status_of(ports, record) == (TransferStatus.PENDING, None)
    (published,) = ports.bus.published
    assert published.topic == topics.BALANCE_OPERATIONS
    assert published.key == USER
    assert published.message == BalanceOperation(
        ref_id=record.request_id, operation="TransferIn", user_id=USER, asset_id=USDT, amount=30)


def test_reserve_twice_reserves_once(ports):
    deposit_to_funding(USER, USDT, 100, reference=2)
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30)

    saga.reserve_funding([record.request_id], ports)
    saga.reserve_funding([record.request_id], ports)

    assert funding_account(ports).debits_pending == 30
    # Re-sending TransferIn is harmless: UBSCore applies a ref_id once.
    assert [p.message.ref_id for p in ports.bus.published] == [record.request_id] * 2


def test_reserve_without_funds_fails_with_insufficient_balance(ports):
    deposit_to_funding(USER, USDT, 10, reference=3)
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30)

    saga.reserve_funding([record.request_id], ports)
    saga.reserve_funding([record.request_id], ports)  # a re-drive finds it failed and leaves it

    assert status_of(ports, record) == (TransferStatus.FAILED, saga.INSUFFICIENT_BALANCE)
    assert funding_account(ports).debits_pending == 0
    assert ports.bus.published == []


def test_reserve_of_a_user_who_never_deposited_fails_with_insufficient_balance(ports):
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 1)

    saga.reserve_funding([record.request_id], ports)

    assert status_of(ports, record) == (TransferStatus.FAILED, saga.INSUFFICIENT_BALANCE)


def test_one_short_transfer_does_not_fail_its_batch_neighbours(ports):
    deposit_to_funding(USER, USDT, 50, reference=4)
    short = new_transfer(ports, Direction.FUNDING_TO_SPOT, 60)
    covered = new_transfer(ports, Direction.FUNDING_TO_SPOT, 50)

    saga.reserve_funding([short.request_id, covered.request_id], ports)

    assert status_of(ports, short)[0] == TransferStatus.FAILED
    assert status_of(ports, covered)[0] == TransferStatus.PENDING
    assert funding_account(ports).debits_pending == 50


def test_applied_transfer_in_posts_the_reserve(ports):
    deposit_to_funding(USER, USDT, 100, reference=5)
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30)
    saga.reserve_funding([record.request_id], ports)

    assert saga.settle_balance_events([answer(record)], ports) == []
    assert saga.settle_balance_events([answer(record)], ports) == []  # redelivered

    account = funding_account(ports)
    assert (account.debits_pending, account.debits_posted, account.available) == (0, 30, 70)
    assert spot_pool(ports).credits_posted == 30
    assert status_of(ports, record) == (TransferStatus.SUCCESS, None)


def test_rejected_transfer_in_voids_the_reserve(ports):
    deposit_to_funding(USER, USDT, 100, reference=6)
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30)
    saga.reserve_funding([record.request_id], ports)

    saga.settle_balance_events([answer(record, "rejected", "spot account frozen")], ports)

    account = funding_account(ports)
    assert (account.debits_pending, account.debits_posted, account.available) == (0, 0, 100)
    assert status_of(ports, record) == (TransferStatus.FAILED, "spot account frozen")


def test_applied_transfer_out_credits_funding_once(ports):
    deposit_to_funding(USER, USDT, 100, reference=7)
    inbound = new_transfer(ports, Direction.FUNDING_TO_SPOT, 40)
    saga.reserve_funding([inbound.request_id], ports)
    saga.settle_balance_events([answer(inbound)], ports)
    outbound = new_transfer(ports, Direction.SPOT_TO_FUNDING, 15)

    saga.settle_balance_events([answer(outbound)], ports)
    saga.settle_balance_events([answer(outbound)], ports)

    assert funding_account(ports).available == 75
    pool = spot_pool(ports)
    assert pool.credits_posted - pool.debits_posted == 25
    assert status_of(ports, outbound) == (TransferStatus.SUCCESS, None)


def test_transfer_out_the_ledger_refuses_is_retried_not_failed(ports):
    # An empty spot pool means the ledger and UBSCore disagree: the credit
    # must not be dropped, and the transfer must not be called failed.
    outbound = new_transfer(ports, Direction.SPOT_TO_FUNDING, 15)

    assert saga.settle_balance_events([answer(outbound)], ports) == [outbound.request_id]
    assert status_of(ports, outbound) == (TransferStatus.PENDING, None)


def test_rejected_transfer_out_fails_with_the_reason(ports):
    outbound = new_transfer(ports, Direction.SPOT_TO_FUNDING, 15)

    saga.settle_balance_events([answer(outbound, "rejected", "insufficient balance")], ports)

    assert status_of(ports, outbound) == (TransferStatus.FAILED, "insufficient balance")


def test_event_that_does_not_match_its_transfer_is_not_acted_on(ports):
    deposit_to_funding(USER, USDT, 100, reference=8)
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30)
    saga.reserve_funding([record.request_id], ports)

    saga.settle_balance_events([answer(record, amount=31)], ports)

    assert status_of(ports, record) == (TransferStatus.PENDING, None)
    assert funding_account(ports).debits_pending == 30


def test_redrive_drives_on_stuck_transfers_from_persisted_state(ports):
    deposit_to_funding(USER, USDT, 100, reference=9)
    long_ago = time.time_ns() // 1_000_000 - 60_000
    inbound = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30, TransferStatus.REQUESTING, long_ago)
    outbound = new_transfer(ports, Direction.SPOT_TO_FUNDING, 5, TransferStatus.REQUESTING, long_ago)
    fresh = new_transfer(ports, Direction.SPOT_TO_FUNDING, 5, TransferStatus.PENDING)

    assert saga.redrive_stuck_transfers(not_moved_for_ms=30_000, ports=ports) == 2

    assert funding_account(ports).debits_pending == 30
    sent = {(p.topic, p.message.ref_id, p.message.operation) for p in ports.bus.published}
    assert sent == {
        (topics.BALANCE_OPERATIONS, inbound.request_id, "TransferIn"),
        (topics.BALANCE_OPERATIONS, outbound.request_id, "TransferOut"),
    }
    assert fresh.request_id not in {p.message.ref_id for p in ports.bus.published}


def test_transfer_requested_message_carries_the_record():
    record = TransferRecord(
        request_id=5, user_id=USER, asset_id=USDT, asset_code="USDT", direction=Direction.FUNDING_TO_SPOT,
        amount=9, status=TransferStatus.PENDING, client_transfer_id=None, error_message=None,
        created_at_ms=0, updated_at_ms=0,
    )
    assert saga.transfer_requested_message(record) == TransferRequested(
        request_id=5, user_id=USER, asset_id=USDT, amount=9, direction="funding_to_spot")
