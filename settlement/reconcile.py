"""Reconciliation: does the funding ledger agree with UBSCore, asset by asset?

Two checks per asset:

- **Spot**: the ledger's spot pool mirrors Σ UBSCore spot balances
  (available + frozen). Transfers in flight explain a difference exactly:
  a funding -> spot transfer UBSCore has applied but the ledger has not yet
  posted is in spot and not yet in the pool; a spot -> funding transfer UBSCore
  has debited but the ledger has not yet credited has left spot and is still
  in the pool. What is left after those is a real difference.
- **Ledger**: Σ user funding + spot pool + external = 0 (double entry), and the
  funds reserved by users' pending transfers equal what the pool has pending.
"""

from __future__ import annotations

import dataclasses
import time

from settlement.ledger import get_funding_ledger
from settlement.ledger.base import Account, FundingLedger
from settlement.ledger.ids import AccountKind, external_account_id, spot_pool_account_id
from transfer_site.messages import BalanceOperationStatus
from transfers.domain import IN_FLIGHT, Direction
from transfers.models import Asset
from transfers.store import TransferStore, get_transfer_store
from ubscore.selectors import operation_results, spot_total_by_asset

IN_FLIGHT_SCAN_LIMIT = 100_000


@dataclasses.dataclass(frozen=True)
class AssetReconciliation:
    asset_code: str
    spot_pool: int  # posted balance of the ledger's spot pool
    spot_total: int  # Σ UBSCore available + frozen
    in_flight_to_spot: int  # applied by UBSCore, not yet posted in the ledger
    in_flight_to_funding: int  # debited by UBSCore, not yet credited in the ledger
    user_funding_total: int  # Σ posted balances of the user funding accounts
    external: int  # posted balance of the external account (minus what came in)
    user_funding_pending: int  # Σ debits pending of user funding accounts
    spot_pool_pending: int  # credits pending of the spot pool

    @property
    def spot_difference(self) -> int:
        return self.spot_pool + self.in_flight_to_spot - self.in_flight_to_funding - self.spot_total

    @property
    def ledger_difference(self) -> int:
        return self.user_funding_total + self.spot_pool + self.external

    @property
    def pending_difference(self) -> int:
        return self.user_funding_pending - self.spot_pool_pending

    @property
    def is_clean(self) -> bool:
        return self.spot_difference == 0 and self.ledger_difference == 0 and self.pending_difference == 0


def reconcile(
    settle_seconds: float = 0.0,
    ledger: FundingLedger | None = None,
    store: TransferStore | None = None,
) -> list[AssetReconciliation]:
    """Reconcile every asset. If something differs, look again after `settle_seconds`.

    A live system moves between the reads; a real difference is one that is
    still there on the second look.
    """
    results = _reconcile_once(ledger or get_funding_ledger(), store or get_transfer_store())
    if settle_seconds > 0 and not all(result.is_clean for result in results):
        time.sleep(settle_seconds)
        results = _reconcile_once(ledger or get_funding_ledger(), store or get_transfer_store())
    return results


def _reconcile_once(ledger: FundingLedger, store: TransferStore) -> list[AssetReconciliation]:
    # In-flight transfers first, UBSCore next, the ledger last: a transfer
    # that finishes between the reads is then counted in flight *and* in the
    # ledger at worst, which the second look clears.
    in_flight = store.list_not_moved_since(IN_FLIGHT, _now_ms() + 1, IN_FLIGHT_SCAN_LIMIT)
    to_spot: dict[int, int] = {}
    to_funding: dict[int, int] = {}
    answers = operation_results(record.request_id for record in in_flight)
    for record in in_flight:
        answer = answers.get(record.request_id)
        if answer is None or answer.status != BalanceOperationStatus.APPLIED:
            continue
        bucket = to_spot if record.direction is Direction.FUNDING_TO_SPOT else to_funding
        bucket[record.asset_id] = bucket.get(record.asset_id, 0) + record.amount
    spot_totals = spot_total_by_asset()

    results = []
    for asset in Asset.objects.order_by("id"):
        accounts = {
            account.id: account
            for account in ledger.lookup_accounts([spot_pool_account_id(asset.id), external_account_id(asset.id)])
        }
        pool = accounts.get(spot_pool_account_id(asset.id))
        external = accounts.get(external_account_id(asset.id))
        users = list(ledger.accounts_with_code(asset.id, AccountKind.USER_FUNDING))
        results.append(
            AssetReconciliation(
                asset_code=asset.code,
                spot_pool=_posted(pool),
                spot_total=spot_totals.get(asset.id, 0),
                in_flight_to_spot=to_spot.get(asset.id, 0),
                in_flight_to_funding=to_funding.get(asset.id, 0),
                user_funding_total=sum(_posted(account) for account in users),
                external=_posted(external),
                user_funding_pending=sum(account.debits_pending for account in users),
                spot_pool_pending=pool.credits_pending if pool else 0,
            )
        )
    return results


def _posted(account: Account | None) -> int:
    return account.credits_posted - account.debits_posted if account else 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
