"""The deterministic funding-ledger ids (settlement/ledger/ids.py)."""

from __future__ import annotations

import itertools

import pytest

from settlement.ledger.base import UINT128_MAX, AccountFlags
from settlement.ledger.ids import (
    AccountKind,
    TransferStep,
    external_account,
    external_account_id,
    spot_pool_account,
    spot_pool_account_id,
    transfer_id,
    user_funding_account,
    user_funding_account_id,
)


def test_ids_are_deterministic() -> None:
    assert user_funding_account_id(42, 7) == user_funding_account_id(42, 7)
    assert spot_pool_account_id(7) == spot_pool_account_id(7)
    assert external_account_id(7) == external_account_id(7)
    assert transfer_id(TransferStep.FUNDING_TO_SPOT_RESERVE, 99) == transfer_id(
        TransferStep.FUNDING_TO_SPOT_RESERVE, 99
    )


def test_account_ids_read_back_into_their_parts() -> None:
    account_id = user_funding_account_id(user_id=123456789, asset_id=7)
    assert account_id >> 96 == AccountKind.USER_FUNDING
    assert (account_id >> 64) & 0xFFFFFFFF == 7
    assert account_id & ((1 << 64) - 1) == 123456789


def test_account_ids_are_distinct_per_kind_asset_and_user() -> None:
    ids = [user_funding_account_id(user, asset) for user in (0, 1, 2, (1 << 64) - 1) for asset in (1, 2, (1 << 32) - 1)]
    ids += [spot_pool_account_id(asset) for asset in (1, 2, (1 << 32) - 1)]
    ids += [external_account_id(asset) for asset in (1, 2, (1 << 32) - 1)]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < UINT128_MAX for i in ids)


def test_transfer_ids_are_distinct_per_step_and_reference() -> None:
    references = (1, 2, (1 << 63), (1 << 64) - 1)
    ids = [transfer_id(step, reference) for step, reference in itertools.product(TransferStep, references)]
    assert len(set(ids)) == len(ids)
    for step, reference in itertools.product(TransferStep, references):
        assert transfer_id(step, reference) >> 64 == step
        assert transfer_id(step, reference) & ((1 << 64) - 1) == reference


def test_transfer_and_account_ids_of_one_request_differ() -> None:
    # Different id spaces in the ledger, but a support person should never confuse them either.
    assert transfer_id(TransferStep.FUNDING_TO_SPOT_RESERVE, 5) != user_funding_account_id(5, 1)


@pytest.mark.parametrize(
    "call",
    [
        lambda: user_funding_account_id(1, 0),
        lambda: user_funding_account_id(1, 1 << 32),
        lambda: user_funding_account_id(-1, 1),
        lambda: user_funding_account_id(1 << 64, 1),
        lambda: spot_pool_account_id(0),
        lambda: transfer_id(TransferStep.DEPOSIT_TO_FUNDING, 0),
        lambda: transfer_id(TransferStep.DEPOSIT_TO_FUNDING, 1 << 64),
    ],
)
def test_out_of_range_parts_are_refused(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_account_templates() -> None:
    user = user_funding_account(user_id=42, asset_id=7)
    assert (user.id, user.ledger, user.code, user.user_data_64) == (
        user_funding_account_id(42, 7),
        7,
        AccountKind.USER_FUNDING,
        42,
    )
    assert user.flags == AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    pool = spot_pool_account(7)
    assert (pool.id, pool.ledger, pool.code, pool.flags) == (
        spot_pool_account_id(7),
        7,
        AccountKind.SPOT_POOL,
        AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
    )
    external = external_account(7)
    assert (external.id, external.ledger, external.code, external.flags) == (
        external_account_id(7),
        7,
        AccountKind.EXTERNAL,
        AccountFlags.NONE,
    )
