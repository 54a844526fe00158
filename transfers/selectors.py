"""Reads of the transfers app: a user's transfers and balances."""

from __future__ import annotations

import dataclasses
import time

from settlement.ledger import get_funding_ledger
from settlement.ledger.ids import user_funding_account_id
from transfers.domain import PublicStatus, TransferRecord
from transfers.errors import TransferRejected
from transfers.models import Asset
from transfers.store import InvalidCursor, TransferPage, get_transfer_store
from transfers.timeline import describe
from ubscore.selectors import spot_balances_of_user

MAX_PAGE_SIZE = 100


def get_transfer_of_user(user_id: int, request_id: int) -> TransferRecord:
    """The user's transfer; another user's is as unknown as a missing one."""
    record = get_transfer_store().get(request_id)
    if record is None or record.user_id != user_id:
        raise TransferRejected("not_found", "no such transfer", http_status=404)
    return record


def list_transfers_of_user(
    user_id: int, *, asset_code: str | None, status: str | None, limit: int, cursor: str | None
) -> TransferPage:
    """The user's transfers, newest first; `status` is a public one (pending, success, failed)."""
    asset_id = None
    if asset_code is not None:
        asset = Asset.objects.filter(code=asset_code).first()
        if asset is None:
            raise TransferRejected("unknown_asset", f"unknown asset {asset_code!r}")
        asset_id = asset.id
    try:
        # The statuses users see (PublicStatus): `pending` also finds the stored, not yet published ones.
        statuses = PublicStatus(status).stored_statuses if status is not None else None
    except ValueError:
        allowed = ", ".join(s.value for s in PublicStatus)
        raise TransferRejected("invalid_status", f"status must be one of {allowed}") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise TransferRejected("invalid_limit", f"limit must be between 1 and {MAX_PAGE_SIZE}")
    try:
        return get_transfer_store().list_for_user(
            user_id, asset_id=asset_id, statuses=statuses, limit=limit, cursor=cursor
        )
    except InvalidCursor:
        raise TransferRejected("invalid_cursor", "cursor is not valid") from None


@dataclasses.dataclass(frozen=True)
class AssetBalance:
    asset: Asset
    funding_available: int
    funding_frozen: int
    spot_available: int
    spot_frozen: int


def balances_of_user(user_id: int) -> list[AssetBalance]:
    """Funding from the ledger (frozen = held by pending transfers), spot from UBSCore."""
    assets = list(Asset.objects.all())
    accounts = get_funding_ledger().lookup_accounts([user_funding_account_id(user_id, a.id) for a in assets])
    funding = {account.ledger: account for account in accounts}
    spot = spot_balances_of_user(user_id)
    balances = []
    for asset in assets:
        account = funding.get(asset.id)
        holding = spot.get(asset.id)
        balances.append(
            AssetBalance(
                asset=asset,
                funding_available=account.available if account else 0,
                funding_frozen=account.debits_pending if account else 0,
                spot_available=holding.available if holding else 0,
                spot_frozen=holding.frozen if holding else 0,
            )
        )
    return balances


# --- Support staff: a transfer's timeline --------------------------------------


@dataclasses.dataclass(frozen=True)
class TimelineEntry:
    at: str  # UTC, milliseconds
    kind: str
    description: str
    actor: str
    process: str


def utc_text(ms: int) -> str:
    """Milliseconds since the epoch as "YYYY-MM-DD HH:MM:SS.mmm" (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


def transfer_timeline(request_id: int, limit: int = 1000) -> list[TimelineEntry]:
    """What happened to the transfer, oldest first, from the store's event log."""
    return [
        TimelineEntry(
            at=utc_text(event.at_ms),
            kind=event.kind.value,
            description=describe(event),
            actor=event.actor or "service",
            process=event.process,
        )
        for event in get_transfer_store().timeline(request_id, limit=limit)
    ]
