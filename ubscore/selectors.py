"""Reads of UBSCore state."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from django.db.models import Sum

from transfer_site.messages import BalanceEvent
from ubscore.models import AppliedOperation, SpotBalance
from ubscore.services import answer_of

# Ids per `IN (...)`: well under SQLite's bound on query parameters.
_IN_CHUNK = 500


@dataclasses.dataclass(frozen=True)
class SpotHolding:
    asset_id: int
    available: int
    frozen: int


def spot_balances_of_user(user_id: int) -> dict[int, SpotHolding]:
    return {
        row.asset_id: SpotHolding(row.asset_id, row.available, row.frozen)
        for row in SpotBalance.objects.filter(user_id=user_id)
    }


def operation_result(ref_id: int) -> BalanceEvent | None:
    """UBSCore's answer to an operation, or None if it has not applied it."""
    return operation_results([ref_id]).get(ref_id)


def operation_results(ref_ids: Iterable[int]) -> dict[int, BalanceEvent]:
    """UBSCore's answers to these operations, by ref_id; those it has not applied are absent.

    A query per chunk, not per operation: reconcile asks this of every transfer in flight.
    """
    ids = list(ref_ids)
    answers: dict[int, BalanceEvent] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        for applied in AppliedOperation.objects.filter(ref_id__in=ids[start : start + _IN_CHUNK]):
            answers[applied.ref_id] = answer_of(applied)
    return answers


def spot_total_by_asset() -> dict[int, int]:
    """Σ (available + frozen) over all users, per asset."""
    rows = SpotBalance.objects.values("asset_id").annotate(total_available=Sum("available"), total_frozen=Sum("frozen"))
    return {row["asset_id"]: row["total_available"] + row["total_frozen"] for row in rows}
