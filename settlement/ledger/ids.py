"""Deterministic funding-ledger ids. The scheme is documented in schema/ledger_ids.md.

Account id (128 bits):  kind << 96 | asset_id << 64 | user_id
Transfer id (128 bits): step << 64 | request_id (or deposit reference)

Every id can be derived again from the request id alone, so any retry or
re-drive names the same ledger transfer and TigerBeetle's id idempotency makes
it happen at most once. Support staff can read an id back into its parts.
"""

import enum

from settlement.ledger.base import Account, AccountFlags

_ASSET_BITS = 32
_USER_BITS = 64


class AccountKind(enum.IntEnum):
    """Also the account's `code` in the ledger."""

    USER_FUNDING = 1
    SPOT_POOL = 2
    EXTERNAL = 3


class TransferStep(enum.IntEnum):
    """Which step of which flow a ledger transfer is; also its `code`."""

    FUNDING_TO_SPOT_RESERVE = 1  # pending: user funding -> spot pool
    FUNDING_TO_SPOT_POST = 2  # post of the reserve
    FUNDING_TO_SPOT_VOID = 3  # void of the reserve
    SPOT_TO_FUNDING_CREDIT = 4  # spot pool -> user funding
    DEPOSIT_TO_FUNDING = 5  # external -> user funding
    DEPOSIT_TO_SPOT = 6  # external -> spot pool (the spot side is in UBSCore)


def _account_id(kind: AccountKind, asset_id: int, user_id: int) -> int:
    if not 0 < asset_id < 1 << _ASSET_BITS:
        raise ValueError(f"asset id out of range: {asset_id}")
    if not 0 <= user_id < 1 << _USER_BITS:
        raise ValueError(f"user id out of range: {user_id}")
    return (kind << 96) | (asset_id << 64) | user_id


def user_funding_account_id(user_id: int, asset_id: int) -> int:
    return _account_id(AccountKind.USER_FUNDING, asset_id, user_id)


def spot_pool_account_id(asset_id: int) -> int:
    return _account_id(AccountKind.SPOT_POOL, asset_id, 0)


def external_account_id(asset_id: int) -> int:
    return _account_id(AccountKind.EXTERNAL, asset_id, 0)


def transfer_id(step: TransferStep, reference: int) -> int:
    if not 0 < reference < 1 << 64:
        raise ValueError(f"reference out of range: {reference}")
    return (step << 64) | reference


def user_funding_account(user_id: int, asset_id: int) -> Account:
    # A user can never spend more than was credited to them.
    return Account(
        id=user_funding_account_id(user_id, asset_id),
        ledger=asset_id,
        code=AccountKind.USER_FUNDING,
        flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
        user_data_64=user_id,
    )


def spot_pool_account(asset_id: int) -> Account:
    # The pool mirrors Σ spot balances; it can never pay out more than came in.
    return Account(
        id=spot_pool_account_id(asset_id),
        ledger=asset_id,
        code=AccountKind.SPOT_POOL,
        flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
    )


def external_account(asset_id: int) -> Account:
    # Money from outside: its balance goes negative by what was deposited.
    return Account(id=external_account_id(asset_id), ledger=asset_id, code=AccountKind.EXTERNAL)
