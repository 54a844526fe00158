"""Reads of UBSCore state."""

from __future__ import annotations

import dataclasses

from django.db.models import Sum

from transfer_site.messages import BalanceEvent
from ubscore.models import AppliedOperation, SpotBalance
from ubscore.services import answer_of


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
    applied = AppliedOperation.objects.filter(ref_id=ref_id).first()
    return answer_of(applied) if applied else None


def spot_total_by_asset() -> dict[int, int]:
    """Σ (available + frozen) over all users, per asset."""
    rows = SpotBalance.objects.values("asset_id").annotate(total_available=Sum("available"), total_frozen=Sum("frozen"))
    return {row["asset_id"]: row["total_available"] + row["total_frozen"] for row in rows}
