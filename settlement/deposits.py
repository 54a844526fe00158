"""Deposits from outside: how money enters the funding wallet or spot account.

Both go through the funding ledger's external account, so the ledger keeps
the conservation invariant: per asset, Σ user funding + spot pool = what
came in from outside. A deposit is idempotent on its reference.
"""

from __future__ import annotations

import logging
import time

from settlement.ledger import get_funding_ledger
from settlement.ledger.base import TRANSFER_IN_LEDGER, Transfer
from settlement.ledger.ids import (
    TransferStep,
    external_account,
    external_account_id,
    spot_pool_account,
    spot_pool_account_id,
    transfer_id,
    user_funding_account,
    user_funding_account_id,
)
from settlement.saga import ensure_accounts
from transfer_site import topics
from transfer_site.bus import get_message_bus
from transfer_site.logging import log_context
from transfer_site.messages import BalanceOperation, BalanceOperationStatus, BalanceOperationType

logger = logging.getLogger(__name__)


class DepositFailed(Exception):
    pass


def deposit_to_funding(user_id: int, asset_id: int, amount: int, reference: int) -> None:
    """Credit the user's funding wallet from the external account."""
    ledger = get_funding_ledger()
    with log_context(request_id=reference, user_id=user_id):
        ensure_accounts(ledger, [external_account(asset_id), user_funding_account(user_id, asset_id)])
        _create(
            Transfer(
                id=transfer_id(TransferStep.DEPOSIT_TO_FUNDING, reference),
                debit_account_id=external_account_id(asset_id),
                credit_account_id=user_funding_account_id(user_id, asset_id),
                amount=amount,
                ledger=asset_id,
                code=TransferStep.DEPOSIT_TO_FUNDING,
                user_data_64=reference,
            )
        )
        logger.info("deposit to funding done", extra={"amount": str(amount)})


def deposit_to_spot(user_id: int, asset_id: int, amount: int, reference: int, wait_seconds: float = 120) -> None:
    """Credit spot through UBSCore (a Deposit operation), mirrored in the spot pool.

    The ledger side comes first: it cannot fail for lack of funds, and if the
    UBSCore side is not applied the deposit can be repeated with the same
    reference until it is.
    """
    from ubscore.selectors import operation_result

    ledger = get_funding_ledger()
    with log_context(request_id=reference, user_id=user_id):
        ensure_accounts(ledger, [external_account(asset_id), spot_pool_account(asset_id)])
        _create(
            Transfer(
                id=transfer_id(TransferStep.DEPOSIT_TO_SPOT, reference),
                debit_account_id=external_account_id(asset_id),
                credit_account_id=spot_pool_account_id(asset_id),
                amount=amount,
                ledger=asset_id,
                code=TransferStep.DEPOSIT_TO_SPOT,
                user_data_64=reference,
            )
        )
        operation = BalanceOperation(
            ref_id=reference,
            operation=BalanceOperationType.DEPOSIT.value,
            user_id=user_id,
            asset_id=asset_id,
            amount=amount,
        )
        get_message_bus().publish(topics.BALANCE_OPERATIONS, user_id, operation)
        deadline = time.monotonic() + wait_seconds
        while (result := operation_result(reference)) is None:
            if time.monotonic() > deadline:
                raise DepositFailed(
                    f"UBSCore has not applied deposit {reference} after {wait_seconds:.0f}s; "
                    "is the ubscore process running? Repeat with the same --reference to finish it."
                )
            time.sleep(0.1)
        if result.status != BalanceOperationStatus.APPLIED:
            raise DepositFailed(f"UBSCore rejected deposit {reference}: {result.reason}")
        logger.info("deposit to spot done", extra={"amount": str(amount)})


def _create(transfer: Transfer) -> None:
    (status,) = get_funding_ledger().create_transfers([transfer])
    if status not in TRANSFER_IN_LEDGER:
        raise DepositFailed(f"funding ledger refused the deposit: {status.name.lower()}")
