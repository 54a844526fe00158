"""The bridge hands each polled batch to Celery as one settle_batch task (split only past TASK_BATCH_SIZE)."""

import pytest

from settlement import tasks
from settlement.management.commands import run_bridge
from transfer_site.bus import Delivery
from transfer_site.messages import (
    BalanceEvent,
    BalanceOperationStatus,
    BalanceOperationType,
    TransferRequested,
    decode,
)


def request(request_id: int) -> Delivery:
    message = TransferRequested(request_id=request_id, user_id=7, asset_id=1, amount=5, direction="funding_to_spot")
    return Delivery("internal_transfer.requests", 0, request_id, "7", message)


def answer(ref_id: int, operation: str = BalanceOperationType.TRANSFER_IN) -> Delivery:
    message = BalanceEvent(ref_id=ref_id, operation=operation, user_id=7, asset_id=1, amount=5,
                           status=BalanceOperationStatus.APPLIED, reason=None)
    return Delivery("balance.events", 0, ref_id, "7", message)


@pytest.fixture
def sent(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.settle_batch, "apply_async", lambda args: calls.append(tuple(args)))
    return calls


def test_requests_and_answers_of_one_batch_go_as_one_task(sent):
    run_bridge.hand_over([request(1), answer(10), request(2), answer(11, BalanceOperationType.TRANSFER_OUT)])

    [(request_ids, events)] = sent
    assert request_ids == ["1", "2"]
    assert [decode(raw.encode()).ref_id for raw in events] == [10, 11]


def test_a_deposits_answer_is_not_settlement_work(sent):
    run_bridge.hand_over([answer(10, BalanceOperationType.DEPOSIT)])
    assert sent == []


def test_a_batch_past_the_task_size_is_split_and_nothing_is_left_out(sent):
    size = run_bridge.TASK_BATCH_SIZE
    run_bridge.hand_over([request(n) for n in range(1, size + 51)] + [answer(n) for n in range(1000, 1030)])

    assert [(len(request_ids), len(events)) for request_ids, events in sent] == [(size, 30), (50, 0)]
    assert [int(r) for request_ids, _ in sent for r in request_ids] == list(range(1, size + 51))
