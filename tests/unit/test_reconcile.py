"""Reconciliation of the funding ledger with UBSCore, and the command's exit code."""

import datetime
import time

import pytest
from django.core.management import call_command
from django.utils import timezone

from settlement import saga
from settlement.deposits import deposit_to_funding
from settlement.ledger.sql import SqlFundingLedger
from settlement.models import ReconcileRun
from settlement.reconcile import reconcile
from settlement.selectors import last_reconcile
from transfer_site.bus import InMemoryMessageBus
from transfer_site.messages import BalanceOperation
from transfers.domain import Direction, TransferRecord, TransferStatus
from transfers.store.orm import OrmTransferStore
from ubscore.services import apply_operations

pytestmark = pytest.mark.django_db

USDT = 1
USER = 4242


@pytest.fixture
def ports():
    return saga.Ports(store=OrmTransferStore(), ledger=SqlFundingLedger(), bus=InMemoryMessageBus())


def usdt(results):
    (result,) = [r for r in results if r.asset_code == "USDT"]
    return result


def funding_to_spot(ports, request_id: int, amount: int) -> TransferRecord:
    now = time.time_ns() // 1_000_000
    record = TransferRecord(
        request_id=request_id, user_id=USER, asset_id=USDT, asset_code="USDT", direction=Direction.FUNDING_TO_SPOT,
        amount=amount, status=TransferStatus.PENDING, client_transfer_id=None, error_message=None,
        created_at_ms=now, updated_at_ms=now,
    )
    ports.store.create(record)
    saga.reserve_funding([request_id], ports)
    return record


def test_a_transfer_in_flight_explains_the_difference_exactly(ports):
    deposit_to_funding(USER, USDT, 100, reference=11)
    record = funding_to_spot(ports, 9_000_001, 30)
    (answer,) = apply_operations([ports.bus.published[0].message])  # UBSCore credited spot

    in_flight = usdt(reconcile(ledger=ports.ledger, store=ports.store))
    assert (in_flight.spot_pool, in_flight.spot_total, in_flight.in_flight_to_spot) == (0, 30, 30)
    assert (in_flight.user_funding_pending, in_flight.spot_pool_pending) == (30, 30)
    assert in_flight.is_clean

    saga.settle_balance_events([answer], ports)
    settled = usdt(reconcile(ledger=ports.ledger, store=ports.store))
    assert (settled.spot_pool, settled.spot_total, settled.in_flight_to_spot) == (30, 30, 0)
    assert (settled.user_funding_total, settled.external) == (70, -100)
    assert settled.is_clean
    assert ports.store.get(record.request_id).status == TransferStatus.SUCCESS


def test_spot_credited_without_the_ledger_is_a_difference(ports):
    deposit_to_funding(USER, USDT, 100, reference=12)
    apply_operations([BalanceOperation(ref_id=77, operation="Deposit", user_id=USER, asset_id=USDT, amount=5)])

    result = usdt(reconcile(ledger=ports.ledger, store=ports.store))

    assert result.spot_difference == -5
    assert result.ledger_difference == 0
    assert not result.is_clean


def test_command_prints_a_table_and_exits_non_zero_on_a_difference(ports, capsys):
    deposit_to_funding(USER, USDT, 100, reference=13)
    call_command("reconcile", "--settle-seconds", "0")
    clean_output = capsys.readouterr().out
    assert "USDT" in clean_output and "DIFFERENT" not in clean_output

    apply_operations([BalanceOperation(ref_id=78, operation="Deposit", user_id=USER, asset_id=USDT, amount=5)])
    with pytest.raises(SystemExit) as exit_info:
        call_command("reconcile", "--settle-seconds", "0")

    assert exit_info.value.code == 1
    assert "DIFFERENT" in capsys.readouterr().out


def test_beat_task_reports_whether_the_books_are_clean(ports, settings):
    from settlement.tasks import reconcile_balances

    settings.RECONCILE_SETTLE_SECONDS = 0
    deposit_to_funding(USER, USDT, 100, reference=14)
    assert reconcile_balances() is True
    assert last_reconcile().clean
    apply_operations([BalanceOperation(ref_id=79, operation="Deposit", user_id=USER, asset_id=USDT, amount=5)])
    assert reconcile_balances() is False

    # Kept for the operations overview: the last look, with each asset's differences.
    run = last_reconcile()
    assert not run.clean
    usdt = next(asset for asset in run.assets if asset["asset"] == "USDT")
    assert usdt == {"asset": "USDT", "spot": "-5", "ledger": "0", "pending": "0"}


def test_reconcile_runs_older_than_a_week_are_dropped(ports):
    from settlement.services import record_reconcile

    old = ReconcileRun.objects.create(checked_at=timezone.now() - datetime.timedelta(days=8), clean=True)
    recent = ReconcileRun.objects.create(checked_at=timezone.now() - datetime.timedelta(days=6), clean=False)
    latest = record_reconcile([])
    assert set(ReconcileRun.objects.values_list("pk", flat=True)) == {recent.pk, latest.pk}
    assert not ReconcileRun.objects.filter(pk=old.pk).exists()


def test_beat_task_looks_again_later_instead_of_sleeping(ports, settings, monkeypatch):
    from settlement import tasks

    settings.RECONCILE_SETTLE_SECONDS = 7
    scheduled = []
    monkeypatch.setattr(tasks.reconcile_balances, "apply_async",
                        lambda **options: scheduled.append(options))
    deposit_to_funding(USER, USDT, 100, reference=15)
    assert tasks.reconcile_balances() is True and scheduled == []
    apply_operations([BalanceOperation(ref_id=80, operation="Deposit", user_id=USER, asset_id=USDT, amount=5)])

    runs = ReconcileRun.objects.count()
    assert tasks.reconcile_balances() is None  # undecided: the second look is scheduled, not slept for
    assert scheduled == [{"kwargs": {"second_look": True}, "countdown": 7}]
    assert ReconcileRun.objects.count() == runs  # only the last look is an outcome
    assert tasks.reconcile_balances(second_look=True) is False  # still different: reported
    assert len(scheduled) == 1
