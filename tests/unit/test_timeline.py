"""Each transfer's timeline: what the API and the saga record, in one append per batch."""

from __future__ import annotations

import time
from unittest import mock

import pytest

from settlement import saga
from settlement.deposits import deposit_to_funding
from settlement.ledger.sql import SqlFundingLedger
from transfer_site.bus import BusUnavailable, InMemoryMessageBus
from transfer_site.messages import BalanceEvent
from transfers import services
from transfers.domain import Direction, EventKind, TimelineEvent, TransferRecord, TransferStatus
from transfers.relay import TransferRelay
from transfers.selectors import transfer_timeline
from transfers.store.orm import OrmTransferStore
from transfers.timeline import TimelineRecorder, describe, recording

pytestmark = pytest.mark.django_db

USDT = 1
USER = 3003
_next_request_id = iter(range(9_100_000_000, 9_200_000_000))


class CountingStore(OrmTransferStore):
    """The ORM store, counting append_events calls."""

    def __init__(self) -> None:
        self.appends: list[int] = []

    def append_events(self, events):
        self.appends.append(len(events))
        super().append_events(events)


@pytest.fixture
def ports():
    return saga.Ports(store=CountingStore(), ledger=SqlFundingLedger(), bus=InMemoryMessageBus())


def new_transfer(ports, direction, amount, status=TransferStatus.PENDING, age_ms=0) -> TransferRecord:
    at = time.time_ns() // 1_000_000 - age_ms
    record = TransferRecord(
        request_id=next(_next_request_id), user_id=USER, asset_id=USDT, asset_code="USDT", direction=direction,
        amount=amount, status=status, client_transfer_id=None, error_message=None, created_at_ms=at, updated_at_ms=at,
    )
    ports.store.create(record)
    return record


def answer(record, status="applied", reason=None) -> BalanceEvent:
    operation = saga.balance_operation_for(record)
    return BalanceEvent(ref_id=record.request_id, operation=operation.operation, user_id=record.user_id,
                        asset_id=record.asset_id, amount=record.amount, status=status, reason=reason)


def kinds(ports, record) -> list[tuple[str, dict]]:
    return [(event.kind.value, event.detail) for event in ports.store.timeline(record.request_id)]


def test_funding_to_spot_timeline_from_reserve_to_success(ports):
    deposit_to_funding(USER, USDT, 100, reference=31)
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30, status=TransferStatus.REQUESTING)

    saga.reserve_funding([record.request_id], ports)
    saga.settle_balance_events([answer(record)], ports)

    assert kinds(ports, record) == [
        ("ledger_reserved", {"ledger_status": "CREATED"}),
        ("transfer_in_sent", {}),
        ("status_changed", {"from": "requesting", "to": "pending"}),
        ("ubscore_answer", {"status": "applied"}),
        ("ledger_posted", {"ledger_status": "CREATED"}),
        ("status_changed", {"from": "pending", "to": "success"}),
    ]
    assert ports.store.appends == [3, 3]  # one append per saga batch


def test_rejected_transfer_in_records_the_reason_and_the_void(ports):
    deposit_to_funding(USER, USDT, 100, reference=32)
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30)
    saga.reserve_funding([record.request_id], ports)

    saga.settle_balance_events([answer(record, "rejected", "spot account frozen")], ports)

    assert kinds(ports, record)[-3:] == [
        ("ubscore_answer", {"status": "rejected", "reason": "spot account frozen"}),
        ("ledger_voided", {"ledger_status": "CREATED"}),
        ("status_changed", {"from": "pending", "to": "failed", "error": "spot account frozen"}),
    ]


def test_insufficient_funding_records_the_refusal(ports):
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30)

    saga.reserve_funding([record.request_id], ports)

    assert kinds(ports, record) == [
        ("ledger_reserve_refused", {"ledger_status": "EXCEEDS_CREDITS"}),
        ("status_changed", {"from": "pending", "to": "failed", "error": "insufficient balance"}),
    ]


def test_spot_to_funding_credit_and_a_late_repeat_of_the_answer(ports):
    deposit_to_funding(USER, USDT, 100, reference=33)
    inbound = new_transfer(ports, Direction.FUNDING_TO_SPOT, 40)
    saga.reserve_funding([inbound.request_id], ports)
    saga.settle_balance_events([answer(inbound)], ports)
    outbound = new_transfer(ports, Direction.SPOT_TO_FUNDING, 15)

    saga.settle_balance_events([answer(outbound)], ports)
    saga.settle_balance_events([answer(outbound)], ports)  # redelivered

    assert kinds(ports, outbound) == [
        ("ubscore_answer", {"status": "applied"}),
        ("funding_credited", {"ledger_status": "CREATED"}),
        ("status_changed", {"from": "pending", "to": "success"}),
        ("ubscore_answer", {"status": "applied", "note": "transfer already finished"}),
    ]


def test_a_refused_funding_credit_is_recorded_as_retried(ports):
    outbound = new_transfer(ports, Direction.SPOT_TO_FUNDING, 15)  # the spot pool is empty: the ledger refuses

    assert saga.settle_balance_events([answer(outbound)], ports) == [outbound.request_id]

    kind, detail = kinds(ports, outbound)[-1]
    assert (kind, detail["step"]) == ("ledger_step_failed", "credit")
    assert detail["ledger_status"] in ("EXCEEDS_CREDITS", "DEBIT_ACCOUNT_NOT_FOUND")


def test_the_exact_from_status_is_recorded_when_the_record_moved_between_read_and_change(ports):
    deposit_to_funding(USER, USDT, 100, reference=34)
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30, status=TransferStatus.REQUESTING)
    saga.reserve_funding([record.request_id], ports)  # now pending
    stale = record  # as a worker read it before: requesting

    with saga._recording(ports) as timeline:
        saga._finish(ports.store, stale, TransferStatus.FAILED, "x", timeline)

    assert kinds(ports, record)[-1] == ("status_changed", {"from": "pending", "to": "failed", "error": "x"})


def test_redrive_records_who_asked_and_what_it_did(ports):
    deposit_to_funding(USER, USDT, 100, reference=35)
    inbound = new_transfer(ports, Direction.FUNDING_TO_SPOT, 30, status=TransferStatus.REQUESTING, age_ms=60_000)
    outbound = new_transfer(ports, Direction.SPOT_TO_FUNDING, 5, status=TransferStatus.REQUESTING, age_ms=60_000)
    finished = new_transfer(ports, Direction.SPOT_TO_FUNDING, 5, status=TransferStatus.SUCCESS, age_ms=60_000)

    assert saga.redrive_transfers([inbound.request_id, outbound.request_id, finished.request_id], ports,
                                  actor="admin:alice") == 2

    events = ports.store.timeline(inbound.request_id)
    assert [event.kind for event in events] == [EventKind.REDRIVE, EventKind.LEDGER_RESERVED,
                                                EventKind.TRANSFER_IN_SENT, EventKind.STATUS_CHANGED]
    assert events[0].actor == "admin:alice" and events[0].detail["status"] == "requesting"
    assert int(events[0].detail["age_ms"]) >= 60_000
    assert [event.kind for event in ports.store.timeline(outbound.request_id)] == [
        EventKind.REDRIVE, EventKind.TRANSFER_OUT_SENT, EventKind.STATUS_CHANGED]
    assert ports.store.timeline(finished.request_id) == []
    assert ports.store.appends == [7]  # the whole re-drive: one append


def test_the_recovery_task_and_the_admin_share_one_path(ports):
    record = new_transfer(ports, Direction.SPOT_TO_FUNDING, 5, age_ms=60_000)
    with mock.patch.object(saga, "redrive_transfers", wraps=saga.redrive_transfers) as redrive:
        assert saga.redrive_stuck_transfers(30_000, ports=ports) == 1
    redrive.assert_called_once_with([record.request_id], ports)
    (event, _) = ports.store.timeline(record.request_id)
    assert (event.kind, event.actor) == (EventKind.REDRIVE, "")


def test_create_transfer_and_the_relay_record_accepted_published_pending(db):
    deposit_to_funding(USER, USDT, 100, reference=36)
    accepted = services.create_transfer(USER, services.TransferRequest("funding", "USDT", "spot", "USDT", "1.5"))
    assert [entry.kind for entry in transfer_timeline(accepted.record.request_id)] == ["accepted"]

    TransferRelay().relay_batch()
    timeline = transfer_timeline(accepted.record.request_id)
    assert [entry.kind for entry in timeline] == ["accepted", "published", "status_changed"]
    assert timeline[1].description == "Published TransferRequested to Kafka"
    assert timeline[2].description == "Status requesting → pending"
    assert {entry.process for entry in timeline} == {"manage"}  # PROCESS_NAME of this process


def test_a_failed_publish_is_recorded_once_however_often_the_relay_tries(db):
    accepted = services.create_transfer(USER, services.TransferRequest("spot", "USDT", "funding", "USDT", "1"))
    relay = TransferRelay()
    with mock.patch.object(relay.bus, "publish_many", side_effect=BusUnavailable("broker down")):
        for _ in range(3):
            with pytest.raises(BusUnavailable):
                relay.relay_batch()
    timeline = transfer_timeline(accepted.record.request_id)
    assert [entry.kind for entry in timeline] == ["accepted", "publish_failed"]
    assert timeline[1].description == "Publish failed (broker down); the relay tries again"

    relay.relay_batch()
    assert [entry.kind for entry in transfer_timeline(accepted.record.request_id)] == [
        "accepted", "publish_failed", "transfer_out_sent", "status_changed"
    ]


def test_a_store_that_cannot_append_never_fails_the_batch(ports, caplog):
    record = new_transfer(ports, Direction.SPOT_TO_FUNDING, 5)
    with mock.patch.object(ports.store, "append_events", side_effect=RuntimeError("store down")):
        saga.settle_balance_events([answer(record, "rejected", "insufficient balance")], ports)
    assert ports.store.get(record.request_id).status is TransferStatus.FAILED
    assert "timeline events not recorded" in caplog.text


def test_events_are_appended_even_when_the_batch_fails(ports):
    record = new_transfer(ports, Direction.FUNDING_TO_SPOT, 5)
    deposit_to_funding(USER, USDT, 100, reference=37)
    with mock.patch.object(ports.bus, "publish_many", side_effect=BusUnavailable("down")):
        with pytest.raises(BusUnavailable):
            saga.reserve_funding([record.request_id], ports)
    assert [kind for kind, _ in kinds(ports, record)] == ["ledger_reserved"]


def test_recording_flushes_once_at_the_end():
    store = mock.Mock()
    with recording(store, actor="admin:bob") as timeline:
        timeline.add(1, EventKind.REDRIVE, status="pending", skipped=None)
        timeline.status_changed(1, TransferStatus.PENDING, TransferStatus.SUCCESS)
        store.append_events.assert_not_called()
    (events,), _ = store.append_events.call_args
    assert [(e.kind, e.detail, e.actor) for e in events] == [
        (EventKind.REDRIVE, {"status": "pending"}, "admin:bob"),
        (EventKind.STATUS_CHANGED, {"from": "pending", "to": "success"}, "admin:bob"),
    ]
    TimelineRecorder(store).flush()  # nothing recorded: nothing appended
    assert store.append_events.call_count == 1


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_kind_has_a_description(kind):
    text = describe(TimelineEvent(1, kind, 0, {"status": "rejected", "reason": "r", "ledger_status": "EXISTS",
                                                "from": "pending", "to": "failed", "age_ms": "31000"}))
    assert text and text != kind.value
