"""UBSCore: applies balance operations to spot balances, each ref_id once."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db import connection, transaction

from transfer_site import compiled_sql
from transfer_site.logging import log_context
from transfer_site.messages import (
    BalanceEvent,
    BalanceOperation,
    BalanceOperationStatus,
    BalanceOperationType,
)
from ubscore.models import AppliedOperation, SpotBalance

logger = logging.getLogger(__name__)

INSUFFICIENT_BALANCE = "insufficient balance"


def apply_operations(operations: Sequence[BalanceOperation]) -> list[BalanceEvent]:
    """Apply the operations in order, in one database transaction.

    Returns one event per operation. An operation whose ref_id was applied
    before is not applied again; its stored answer is returned instead.

    The batch's balances are read (locked) in one query, changed in memory in
    the operations' order, and written back with one statement per changed
    balance and one insert of the answers: a few round trips per batch
    instead of three or four per operation.
    """
    events = []
    with transaction.atomic():
        already_applied = _applied_before(sorted({op.ref_id for op in operations}))
        balances = _lock_balances(
            {(op.user_id, op.asset_id) for op in operations if op.ref_id not in already_applied}
        )
        original = {key: balance.available for key, balance in balances.items()}
        new_answers: list[AppliedOperation] = []
        for operation in operations:
            with log_context(request_id=operation.ref_id, user_id=operation.user_id):
                previous = already_applied.get(operation.ref_id)
                if previous is None:
                    previous = _apply(operation, balances[(operation.user_id, operation.asset_id)])
                    already_applied[operation.ref_id] = previous
                    new_answers.append(previous)
                else:
                    _warn_if_different(previous, operation)
                events.append(answer_of(previous))
        changed = [(b.available, b.pk) for key, b in balances.items() if b.available != original[key]]
        if changed:
            # One prepared UPDATE for all (bulk_update would build a CASE per row).
            with connection.cursor() as cursor:
                cursor.executemany(_update_available_sql(), changed)
        AppliedOperation.objects.bulk_create(new_answers)
    return events


def _update_available_sql() -> str:
    quote = connection.ops.quote_name
    meta = SpotBalance._meta
    return (
        f"UPDATE {quote(meta.db_table)} SET {quote(meta.get_field('available').column)} = %s "  # noqa: S608
        f"WHERE {quote(meta.pk.column)} = %s"
    )


_APPLIED_FIELDS = ("ref_id", "operation", "user_id", "asset_id", "amount", "status", "reason")
_BALANCE_FIELDS = ("id", "user_id", "asset_id", "available")


def _applied_before(ref_ids: list[int]) -> dict[int, AppliedOperation]:
    """The stored answers of these ref_ids (sorted, distinct), by ref_id: read for every batch, compiled once."""
    if not ref_ids:
        return {}

    def build():
        return AppliedOperation.objects.filter(ref_id__in=ref_ids).values_list(*_APPLIED_FIELDS)

    rows = compiled_sql.rows(connection.alias, ("ubscore applied", len(ref_ids)), build, ref_ids)
    return {row[0]: AppliedOperation.from_db(connection.alias, _APPLIED_FIELDS, row) for row in rows}


def _lock_balances(keys: set[tuple[int, int]]) -> dict[tuple[int, int], SpotBalance]:
    """The balances of these (user, asset) pairs, locked for the transaction; missing ones created at 0."""
    if not keys:
        return {}
    balances = _read_balances_locked(keys)
    missing = [SpotBalance(user_id=u, asset_id=a) for u, a in sorted(keys - balances.keys())]
    if missing:
        SpotBalance.objects.bulk_create(missing)
        balances.update(_read_balances_locked({(b.user_id, b.asset_id) for b in missing}))
    return balances


def _read_balances_locked(keys: set[tuple[int, int]]) -> dict[tuple[int, int], SpotBalance]:
    user_ids = sorted({user_id for user_id, _ in keys})
    asset_ids = sorted({asset_id for _, asset_id in keys})

    def build():
        return (
            SpotBalance.objects.select_for_update()
            .filter(user_id__in=user_ids, asset_id__in=asset_ids)
            .values_list(*_BALANCE_FIELDS)
        )

    shape = ("ubscore balances", len(user_ids), len(asset_ids))
    # Q sorts a filter's keyword arguments: the ORM binds the assets first.
    rows = compiled_sql.rows(connection.alias, shape, build, asset_ids + user_ids)
    found = (SpotBalance.from_db(connection.alias, _BALANCE_FIELDS, row) for row in rows)
    return {(b.user_id, b.asset_id): b for b in found if (b.user_id, b.asset_id) in keys}


def _apply(operation: BalanceOperation, balance: SpotBalance) -> AppliedOperation:
    """Apply one operation to the balance in memory; the answer to store (written by the caller)."""
    status, reason = BalanceOperationStatus.APPLIED, None
    if operation.operation in (BalanceOperationType.TRANSFER_IN, BalanceOperationType.DEPOSIT):
        balance.available += operation.amount
    elif operation.operation == BalanceOperationType.TRANSFER_OUT:
        if balance.available >= operation.amount:
            balance.available -= operation.amount
        else:
            status, reason = BalanceOperationStatus.REJECTED, INSUFFICIENT_BALANCE
    else:  # decode() admits only known operations
        raise ValueError(f"unknown operation {operation.operation!r}")
    logger.info(
        "balance operation %s",
        status,
        extra={"operation": operation.operation, "amount": str(operation.amount), "reason": reason},
    )
    return AppliedOperation(
        ref_id=operation.ref_id,
        operation=operation.operation,
        user_id=operation.user_id,
        asset_id=operation.asset_id,
        amount=operation.amount,
        status=status,
        reason=reason,
    )


def _warn_if_different(previous: AppliedOperation, operation: BalanceOperation) -> None:
    same = (previous.operation, previous.user_id, previous.asset_id, previous.amount) == (
        operation.operation,
        operation.user_id,
        operation.asset_id,
        operation.amount,
    )
    if not same:
        # Never applied twice; the first answer stands. A different body
        # under the same ref_id is a bug upstream and worth an alarm.
        logger.error("ref_id reused with a different operation; first answer stands")
    else:
        logger.info("balance operation repeated; answering as before")


def answer_of(applied: AppliedOperation) -> BalanceEvent:
    """The balance.events message for an applied operation."""
    return BalanceEvent(
        ref_id=applied.ref_id,
        operation=applied.operation,
        user_id=applied.user_id,
        asset_id=applied.asset_id,
        amount=applied.amount,
        status=applied.status,
        reason=applied.reason,
    )
