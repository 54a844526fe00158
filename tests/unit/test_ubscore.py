"""UBSCore applies each balance operation once and answers a repeat as before."""

import random

import pytest

from transfer_site.messages import BalanceEvent, BalanceOperation
from ubscore import selectors as ubscore_selectors
from ubscore.models import AppliedOperation, SpotBalance
from ubscore.selectors import operation_result, operation_results, spot_balances_of_user, spot_total_by_asset
from ubscore.services import INSUFFICIENT_BALANCE, apply_operations

pytestmark = pytest.mark.django_db

USDT, BTC = 1, 2


@pytest.fixture
def user_id() -> int:
    return random.randrange(1, 2**62)


@pytest.fixture
def next_ref():
    refs = iter(random.sample(range(1, 2**62), 1000))
    return lambda: next(refs)


def op(ref_id, operation, user_id, amount, asset_id=USDT) -> BalanceOperation:
    return BalanceOperation(ref_id=ref_id, operation=operation, user_id=user_id, asset_id=asset_id, amount=amount)


def available(user_id, asset_id=USDT) -> int:
    row = SpotBalance.objects.filter(user_id=user_id, asset_id=asset_id).first()
    return row.available if row else 0


def applied(operation: BalanceOperation) -> BalanceEvent:
    return BalanceEvent(
        ref_id=operation.ref_id,
        operation=operation.operation,
        user_id=operation.user_id,
        asset_id=operation.asset_id,
        amount=operation.amount,
        status="applied",
        reason=None,
    )


def rejected(operation: BalanceOperation, reason=INSUFFICIENT_BALANCE) -> BalanceEvent:
    return BalanceEvent(
        ref_id=operation.ref_id,
        operation=operation.operation,
        user_id=operation.user_id,
        asset_id=operation.asset_id,
        amount=operation.amount,
        status="rejected",
        reason=reason,
    )


@pytest.mark.parametrize("operation", ["TransferIn", "Deposit"])
def test_credit_operations_add_to_available(user_id, next_ref, operation):
    first = op(next_ref(), operation, user_id, 1_500)
    second = op(next_ref(), operation, user_id, 2_500)
    assert apply_operations([first]) == [applied(first)]
    assert available(user_id) == 1_500
    assert apply_operations([second]) == [applied(second)]
    assert available(user_id) == 4_000
    row = SpotBalance.objects.get(user_id=user_id, asset_id=USDT)
    assert row.frozen == 0


def test_credit_creates_the_balance_row_only_for_that_asset(user_id, next_ref):
    apply_operations([op(next_ref(), "TransferIn", user_id, 7, asset_id=BTC)])
    assert available(user_id, BTC) == 7
    assert not SpotBalance.objects.filter(user_id=user_id, asset_id=USDT).exists()


def test_transfer_out_debits_when_covered(user_id, next_ref):
    apply_operations([op(next_ref(), "Deposit", user_id, 1_000)])
    out = op(next_ref(), "TransferOut", user_id, 400)
    assert apply_operations([out]) == [applied(out)]
    assert available(user_id) == 600


def test_transfer_out_of_exactly_the_balance_empties_it(user_id, next_ref):
    apply_operations([op(next_ref(), "Deposit", user_id, 1_000)])
    out = op(next_ref(), "TransferOut", user_id, 1_000)
    assert apply_operations([out]) == [applied(out)]
    assert available(user_id) == 0


def test_transfer_out_above_the_balance_is_rejected_and_changes_nothing(user_id, next_ref):
    apply_operations([op(next_ref(), "Deposit", user_id, 1_000)])
    out = op(next_ref(), "TransferOut", user_id, 1_001)
    assert apply_operations([out]) == [rejected(out)]
    assert available(user_id) == 1_000
    stored = AppliedOperation.objects.get(ref_id=out.ref_id)
    assert (stored.status, stored.reason) == ("rejected", "insufficient balance")


def test_transfer_out_without_any_balance_is_rejected(user_id, next_ref):
    out = op(next_ref(), "TransferOut", user_id, 1)
    assert apply_operations([out]) == [rejected(out)]
    assert available(user_id) == 0


def test_transfer_out_of_another_asset_is_not_covered_by_this_one(user_id, next_ref):
    apply_operations([op(next_ref(), "Deposit", user_id, 1_000, asset_id=USDT)])
    out = op(next_ref(), "TransferOut", user_id, 1, asset_id=BTC)
    assert apply_operations([out]) == [rejected(out)]
    assert available(user_id, USDT) == 1_000


def test_transfer_out_does_not_spend_frozen(user_id, next_ref):
    apply_operations([op(next_ref(), "Deposit", user_id, 100)])
    SpotBalance.objects.filter(user_id=user_id, asset_id=USDT).update(frozen=900)
    out = op(next_ref(), "TransferOut", user_id, 500)
    assert apply_operations([out]) == [rejected(out)]
    row = SpotBalance.objects.get(user_id=user_id, asset_id=USDT)
    assert (row.available, row.frozen) == (100, 900)


def test_transfer_out_of_another_user_is_not_covered_by_this_one(user_id, next_ref):
    other_user = user_id + 1
    apply_operations([op(next_ref(), "Deposit", other_user, 1_000)])
    out = op(next_ref(), "TransferOut", user_id, 1)
    assert apply_operations([out]) == [rejected(out)]
    assert available(other_user) == 1_000


def test_same_ref_id_in_separate_calls_applies_once(user_id, next_ref):
    credit = op(next_ref(), "TransferIn", user_id, 300)
    first = apply_operations([credit])
    second = apply_operations([credit])
    third = apply_operations([credit])
    assert first == second == third == [applied(credit)]
    assert available(user_id) == 300
    assert AppliedOperation.objects.filter(ref_id=credit.ref_id).count() == 1


def test_repeated_rejection_answers_the_same_even_after_the_balance_grew(user_id, next_ref):
    out = op(next_ref(), "TransferOut", user_id, 500)
    assert apply_operations([out]) == [rejected(out)]
    apply_operations([op(next_ref(), "Deposit", user_id, 1_000)])
    # One ref_id, one outcome: the retry must not debit now that it could.
    assert apply_operations([out]) == [rejected(out)]
    assert available(user_id) == 1_000


def test_repeated_debit_answers_applied_even_when_no_longer_covered(user_id, next_ref):
    apply_operations([op(next_ref(), "Deposit", user_id, 500)])
    out = op(next_ref(), "TransferOut", user_id, 500)
    assert apply_operations([out]) == [applied(out)]
    assert available(user_id) == 0
    assert apply_operations([out]) == [applied(out)]
    assert available(user_id) == 0


def test_same_ref_id_twice_within_one_batch_applies_once(user_id, next_ref):
    credit = op(next_ref(), "TransferIn", user_id, 250)
    assert apply_operations([credit, credit]) == [applied(credit), applied(credit)]
    assert available(user_id) == 250
    assert AppliedOperation.objects.filter(ref_id=credit.ref_id).count() == 1


def test_debit_twice_within_one_batch_debits_once(user_id, next_ref):
    apply_operations([op(next_ref(), "Deposit", user_id, 1_000)])
    out = op(next_ref(), "TransferOut", user_id, 600)
    assert apply_operations([out, out]) == [applied(out), applied(out)]
    assert available(user_id) == 400


def test_batch_applies_in_order(user_id, next_ref):
    # The debit is covered only because the credit before it in the batch applied first.
    credit = op(next_ref(), "Deposit", user_id, 100)
    debit = op(next_ref(), "TransferOut", user_id, 100)
    too_much = op(next_ref(), "TransferOut", user_id, 1)
    assert apply_operations([credit, debit, too_much]) == [applied(credit), applied(debit), rejected(too_much)]
    assert available(user_id) == 0


def test_batch_mixing_new_and_already_applied_operations(user_id, next_ref):
    old = op(next_ref(), "Deposit", user_id, 100)
    apply_operations([old])
    new = op(next_ref(), "Deposit", user_id, 10)
    assert apply_operations([old, new, old]) == [applied(old), applied(new), applied(old)]
    assert available(user_id) == 110


def test_ref_id_reused_with_a_different_body_keeps_the_first_answer(user_id, next_ref):
    ref_id = next_ref()
    first = op(ref_id, "TransferIn", user_id, 100)
    assert apply_operations([first]) == [applied(first)]
    for different in (
        op(ref_id, "TransferIn", user_id, 999),
        op(ref_id, "TransferOut", user_id, 100),
        op(ref_id, "TransferIn", user_id + 1, 100),
        op(ref_id, "TransferIn", user_id, 100, asset_id=BTC),
    ):
        # The answer is the first operation's, not an echo of the new body.
        assert apply_operations([different]) == [applied(first)]
    assert available(user_id) == 100
    assert available(user_id, BTC) == 0
    assert available(user_id + 1) == 0


def test_ref_id_reused_with_a_different_body_within_one_batch_keeps_the_first(user_id, next_ref):
    ref_id = next_ref()
    first = op(ref_id, "TransferIn", user_id, 100)
    second = op(ref_id, "TransferIn", user_id, 5_000)
    assert apply_operations([first, second]) == [applied(first), applied(first)]
    assert available(user_id) == 100


def test_empty_batch_answers_nothing():
    assert apply_operations([]) == []


def test_spot_balances_of_user(user_id, next_ref):
    apply_operations(
        [
            op(next_ref(), "Deposit", user_id, 100, asset_id=USDT),
            op(next_ref(), "Deposit", user_id, 7, asset_id=BTC),
            op(next_ref(), "Deposit", user_id + 1, 555, asset_id=USDT),
        ]
    )
    SpotBalance.objects.filter(user_id=user_id, asset_id=BTC).update(frozen=3)
    balances = spot_balances_of_user(user_id)
    assert set(balances) == {USDT, BTC}
    assert (balances[USDT].asset_id, balances[USDT].available, balances[USDT].frozen) == (USDT, 100, 0)
    assert (balances[BTC].asset_id, balances[BTC].available, balances[BTC].frozen) == (BTC, 7, 3)
    assert spot_balances_of_user(user_id + 2) == {}


def test_operation_result(user_id, next_ref):
    assert operation_result(next_ref()) is None
    credit = op(next_ref(), "TransferIn", user_id, 40)
    out = op(next_ref(), "TransferOut", user_id, 41)
    apply_operations([credit, out])
    assert operation_result(credit.ref_id) == applied(credit)
    assert operation_result(out.ref_id) == rejected(out)


def test_operation_results_answers_many_in_chunks(user_id, next_ref, monkeypatch):
    monkeypatch.setattr(ubscore_selectors, "_IN_CHUNK", 2)  # several chunks from a few ids
    credits = [op(next_ref(), "TransferIn", user_id, 10 + n) for n in range(3)]
    out = op(next_ref(), "TransferOut", user_id, 10_000)  # more than the user holds
    answers = apply_operations([*credits, out])
    never_sent = next_ref()
    results = operation_results([never_sent, *(o.ref_id for o in credits), out.ref_id])
    assert results == {answer.ref_id: answer for answer in answers}
    assert results[out.ref_id] == rejected(out)
    assert operation_results([]) == {}


def test_operation_result_is_the_answer_apply_gave(user_id, next_ref):
    out = op(next_ref(), "TransferOut", user_id, 1)
    (answer,) = apply_operations([out])
    assert operation_result(out.ref_id) == answer


def test_spot_total_by_asset_sums_available_and_frozen_over_users(user_id, next_ref):
    before = spot_total_by_asset()
    apply_operations(
        [
            op(next_ref(), "Deposit", user_id, 100, asset_id=USDT),
            op(next_ref(), "Deposit", user_id + 1, 50, asset_id=USDT),
            op(next_ref(), "Deposit", user_id, 9, asset_id=BTC),
        ]
    )
    SpotBalance.objects.filter(user_id=user_id + 1, asset_id=USDT).update(frozen=20)
    apply_operations([op(next_ref(), "TransferOut", user_id, 30, asset_id=USDT)])
    apply_operations([op(next_ref(), "TransferOut", user_id, 1_000, asset_id=BTC)])  # rejected
    after = spot_total_by_asset()
    assert after.get(USDT, 0) - before.get(USDT, 0) == 100 + 50 + 20 - 30
    assert after.get(BTC, 0) - before.get(BTC, 0) == 9


# --- Two UBSCore copies on one batch at once (a rebalance mid-batch) ---------------------------


def _race(batches: list[list[BalanceOperation]]) -> list[list[BalanceEvent] | BaseException]:
    """Apply each batch in its own thread and connection, all starting at once; each answer or error."""
    import threading

    from django.db import connections

    barrier = threading.Barrier(len(batches))
    results: list[list[BalanceEvent] | BaseException] = [RuntimeError("not run")] * len(batches)

    def apply(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = apply_operations(batches[index])
        except BaseException as error:  # a copy whose batch failed reads it again: done below
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=apply, args=(index,)) for index in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.django_db(transaction=True)
def test_two_copies_applying_one_batch_at_once_apply_each_ref_id_once(user_id, next_ref):
    deposit = op(next_ref(), "Deposit", user_id, 1_000)
    apply_operations([deposit])
    for _ in range(10):
        batch = [op(next_ref(), "TransferOut", user_id, 30), op(next_ref(), "TransferIn", user_id, 7)]
        before = available(user_id)
        results = _race([batch, batch])
        assert any(isinstance(result, list) for result in results), results
        # The copy that failed (its insert of the answers collided) handles the batch again, as a consumer does.
        assert apply_operations(batch) == [applied(operation) for operation in batch]
        assert available(user_id) == before - 30 + 7
        assert AppliedOperation.objects.filter(ref_id__in=[o.ref_id for o in batch]).count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_copies_debiting_one_balance_at_once_never_take_it_below_zero(user_id, next_ref):
    apply_operations([op(next_ref(), "Deposit", user_id, 100)])
    first, second = op(next_ref(), "TransferOut", user_id, 100), op(next_ref(), "TransferOut", user_id, 100)
    results = _race([[first], [second]])
    for index, result in enumerate(results):  # a failed batch is handled again
        if isinstance(result, BaseException):
            results[index] = apply_operations([(first, second)[index]])
    answers = sorted(result[0].status for result in results)
    assert answers == ["applied", "rejected"], results
    assert available(user_id) == 0
