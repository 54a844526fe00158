"""Celery signal handlers: the request id on one-transfer task lines; failure and retry counts."""

from __future__ import annotations

import json
import logging

import pytest
from celery import signals

from operations.models import TaskOutcomeCount
from operations.signals import single_transfer_of
from transfer_site.logging import ContextFilter, request_id_var, user_id_var


class Task:
    def __init__(self, name: str) -> None:
        self.name = name


def event(ref_id: int, user_id: int) -> str:
    return json.dumps({"ref_id": str(ref_id), "user_id": str(user_id), "type": "BalanceEvent"})


def test_which_tasks_handle_exactly_one_transfer():
    assert single_transfer_of("settlement.reserve_funding_to_spot", (["42"],)) == ("42", None)
    assert single_transfer_of("settlement.reserve_funding_to_spot", (["42", "43"],)) is None
    assert single_transfer_of("settlement.settle_balance_events", ([event(7, 9)],)) == ("7", "9")
    assert single_transfer_of("settlement.settle_balance_events", (["not json"],)) is None
    assert single_transfer_of("settlement.redrive_stuck_transfers", ()) is None
    # What the bridge sends: (request ids, balance events) of one batch.
    assert single_transfer_of("settlement.settle_batch", (["42"], [])) == ("42", None)
    assert single_transfer_of("settlement.settle_batch", ([], [event(7, 9)])) == ("7", "9")
    assert single_transfer_of("settlement.settle_batch", (["42"], [event(7, 9)])) is None
    assert single_transfer_of("settlement.settle_batch", ([], ["not json"])) is None


def test_celerys_own_lines_for_a_one_transfer_task_carry_its_request_id():
    task = Task("settlement.settle_balance_events")
    signals.task_prerun.send(sender=task, task_id="t-1", task=task, args=([event(7, 9)],), kwargs={})
    record = logging.makeLogRecord({"msg": "Task settlement.settle_balance_events[t-1] succeeded in 0.01s"})
    ContextFilter().filter(record)  # what the JSON handlers run on every line
    signals.task_postrun.send(sender=task, task_id="t-1", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")
    assert (record.request_id, record.user_id) == ("7", "9")
    assert (request_id_var.get(), user_id_var.get()) == (None, None)


def test_a_batch_task_sets_no_request_id():
    task = Task("settlement.reserve_funding_to_spot")
    signals.task_prerun.send(sender=task, task_id="t-2", task=task, args=(["1", "2"],), kwargs={})
    assert request_id_var.get() is None
    signals.task_postrun.send(sender=task, task_id="t-2", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")


@pytest.mark.django_db
def test_failures_and_retries_are_counted_durably():
    task = Task("settlement.settle_balance_events")
    signals.task_retry.send(sender=task, request=None, reason="ledger refused", einfo=None)
    signals.task_retry.send(sender=task, request=None, reason="ledger refused", einfo=None)
    signals.task_failure.send(sender=task, task_id="t-3", exception=RuntimeError("x"), args=(), kwargs={},
                              traceback=None, einfo=None)
    row = TaskOutcomeCount.objects.get(task="settlement.settle_balance_events")
    assert (row.retries, row.failures) == (2, 1)
