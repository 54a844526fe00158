"""Writes of the transfers app: accepting a transfer, issuing API keys."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import secrets
import time

from django.conf import settings

from transfer_site import faults
from transfer_site.logging import log_context
from transfers import snowflake
from transfers.amounts import InvalidAmount, parse_amount
from transfers.assets import asset_by_code
from transfers.domain import AccountType, Direction, EventKind, TransferRecord, TransferStatus
from transfers.errors import TransferRejected
from transfers.models import ApiKey, ApiKeyPermission, Asset
from transfers.signing import derive_signing_secret
from transfers.store import ClientTransferIdTaken, get_transfer_store
from transfers.timeline import timeline_event

logger = logging.getLogger(__name__)

CLIENT_TRANSFER_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


@dataclasses.dataclass(frozen=True)
class TransferRequest:
    """What the caller asked for, before validation."""

    from_account_type: str
    from_asset: str
    to_account_type: str
    to_asset: str
    amount: object  # validated here: only a decimal string is an amount
    client_transfer_id: object = None  # validated here: 1-64 of A-Z a-z 0-9 _ -


@dataclasses.dataclass(frozen=True)
class AcceptedTransfer:
    record: TransferRecord
    replayed: bool  # the same client_transfer_id and body were sent before


def create_transfer(user_id: int, request: TransferRequest) -> AcceptedTransfer:
    """Validate and store the transfer (`requesting`); the relay publishes it (transfers/relay.py).

    The store is the outbox: once the record is stored the transfer goes out
    and settles whatever happens to this process, so the request never waits
    for the message bus.
    """
    direction, asset, amount = _validate(request)
    store = get_transfer_store()
    # A client_transfer_id sent before is found by the store's create below
    # (ClientTransferIdTaken), which keeps the usual request to one round trip.

    now_ms = time.time_ns() // 1_000_000
    record = TransferRecord(
        request_id=snowflake.next_id(),
        user_id=user_id,
        asset_id=asset.id,
        asset_code=asset.code,
        direction=direction,
        amount=amount,
        status=TransferStatus.REQUESTING,
        client_transfer_id=request.client_transfer_id,
        error_message=None,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
    )
    with log_context(request_id=record.request_id, user_id=user_id):
        try:
            store.create(record, [timeline_event(record.request_id, EventKind.ACCEPTED)])
        except ClientTransferIdTaken as taken:  # a concurrent request with the same client id won
            return AcceptedTransfer(_same_request_or_conflict(taken.existing, direction, asset, amount), replayed=True)
        logger.info("transfer accepted", extra={"direction": direction.value, "asset": asset.code})
        faults.crash_point(faults.WEB_AFTER_STORE)  # test hook: stored, no answer sent; the relay publishes it
        return AcceptedTransfer(record, replayed=False)


def _validate(request: TransferRequest) -> tuple[Direction, Asset, int]:
    try:
        source = AccountType(request.from_account_type)
        destination = AccountType(request.to_account_type)
    except ValueError:
        raise TransferRejected(
            "invalid_account_type", "account_type must be \"funding\" or \"spot\""
        ) from None
    if request.from_asset != request.to_asset:
        raise TransferRejected("asset_mismatch", "from_account and to_account must hold the same asset")
    if source == destination:
        raise TransferRejected("same_account", "from_account and to_account must be different accounts")
    asset = asset_by_code(request.from_asset)
    if asset is None:
        raise TransferRejected("unknown_asset", f"unknown asset {request.from_asset!r}")
    if not asset.transfers_enabled:
        raise TransferRejected("asset_disabled", f"transfers of {asset.code} are disabled")
    try:
        amount = parse_amount(request.amount, asset.decimals, asset.maximum_transfer_minor)
    except InvalidAmount as error:
        raise TransferRejected("invalid_amount", str(error)) from None
    if request.client_transfer_id is not None and (
        not isinstance(request.client_transfer_id, str)
        or not CLIENT_TRANSFER_ID_PATTERN.fullmatch(request.client_transfer_id)
    ):
        raise TransferRejected(
            "invalid_client_transfer_id", "client_transfer_id must be 1-64 characters of A-Z a-z 0-9 _ -"
        )
    return Direction.between(source, destination), asset, amount


def _same_request_or_conflict(
    existing: TransferRecord, direction: Direction, asset: Asset, amount: int
) -> TransferRecord:
    if (existing.direction, existing.asset_id, existing.amount) != (direction, asset.id, amount):
        raise TransferRejected(
            "conflict",
            f"client_transfer_id {existing.client_transfer_id!r} was used for a different transfer",
            http_status=409,
        )
    return existing


# --- API keys ------------------------------------------------------------------

API_KEY_PREFIX = "itk"


def hash_api_key_secret(secret: str) -> str:
    # Keys are 256-bit random: a plain SHA-256 cannot be brute-forced.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class IssuedApiKey:
    """Shown to the user once; neither the key nor the signing secret is stored."""

    key: str
    signing_secret: str
    permission: ApiKeyPermission


def create_api_key(user_id: int, label: str = "", read_only: bool = False) -> IssuedApiKey:
    """Issue a key for the user, with its request-signing secret; read-only keys cannot transfer."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    secret_hash = hash_api_key_secret(secret)
    permission = ApiKeyPermission.READ if read_only else ApiKeyPermission.TRANSFER
    ApiKey.objects.create(
        prefix=prefix, secret_hash=secret_hash, user_id=user_id, label=label, permission=permission
    )
    return IssuedApiKey(
        key=f"{API_KEY_PREFIX}_{prefix}_{secret}",
        signing_secret=signing_secret_of(prefix, secret_hash),
        permission=permission,
    )


def signing_secret_of(key_prefix: str, secret_hash: str) -> str:
    """The key's signing secret, re-derived from what is stored and the servers' pepper."""
    return derive_signing_secret(settings.API_SIGNING_PEPPER, key_prefix, secret_hash)


def revoke_api_keys(key_ids: list[int]) -> list[ApiKey]:
    """Revoke the keys not revoked yet; returns those this call revoked. Revocation is final."""
    from django.utils import timezone

    keys = list(ApiKey.objects.filter(pk__in=key_ids, revoked_at__isnull=True))
    ApiKey.objects.filter(pk__in=[key.pk for key in keys], revoked_at__isnull=True).update(revoked_at=timezone.now())
    return keys


# --- Assets --------------------------------------------------------------------


def set_transfers_enabled(asset_ids: list[int], enabled: bool) -> list[Asset]:
    """Open or close new transfers of these assets; returns the assets this call changed.

    Transfers already accepted finish either way: closing an asset only
    refuses new requests (`asset_disabled`).
    """
    assets = list(Asset.objects.filter(pk__in=asset_ids).exclude(transfers_enabled=enabled))
    Asset.objects.filter(pk__in=[asset.pk for asset in assets]).update(transfers_enabled=enabled)
    return assets
