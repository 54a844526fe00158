"""Benchmark users: API keys and deposits, in a few batched calls.

    python -m bench.prepare USERS FIRST_USER_ID ASSET AMOUNT RESULT.json

Run by bench.run with the benchmark stack's environment. Each user gets a
transfer key and AMOUNT of ASSET on both funding and spot. The deposits go
through the same ledger transfers and UBSCore Deposit operations as
`manage.py deposit` (settlement/deposits.py), batched: one ledger call per
side and one publish, then it waits until UBSCore has applied every one.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> None:
    import django

    django.setup()
    from django.conf import settings

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
    from settlement.saga import create_transfers_in_batches, ensure_accounts
    from transfer_site import topics
    from transfer_site.bus import Outgoing, get_message_bus
    from transfer_site.messages import BalanceOperation, BalanceOperationType
    from transfers.amounts import parse_amount
    from transfers.models import Asset
    from transfers.services import create_api_key
    from transfers.snowflake import SnowflakeGenerator
    from ubscore.models import AppliedOperation

    users, first_user_id, asset_code, amount_text, result_path = (
        int(argv[1]), int(argv[2]), argv[3], argv[4], argv[5]
    )
    asset = Asset.objects.get(code=asset_code)
    amount = parse_amount(amount_text, asset.decimals, (1 << 63) - 1)
    user_ids = [first_user_id + i for i in range(users)]
    keys = [[user_id, create_api_key(user_id, label="bench").key] for user_id in user_ids]

    ledger = get_funding_ledger()
    references = SnowflakeGenerator(settings.COMMAND_SNOWFLAKE_WORKER_ID)
    ensure_accounts(
        ledger,
        [external_account(asset.id), spot_pool_account(asset.id)]
        + [user_funding_account(user_id, asset.id) for user_id in user_ids],
    )
    funding_refs = {user_id: references.next_id() for user_id in user_ids}
    spot_refs = {user_id: references.next_id() for user_id in user_ids}
    transfers = [
        Transfer(id=transfer_id(TransferStep.DEPOSIT_TO_FUNDING, ref), debit_account_id=external_account_id(asset.id),
                 credit_account_id=user_funding_account_id(user_id, asset.id), amount=amount, ledger=asset.id,
                 code=TransferStep.DEPOSIT_TO_FUNDING, user_data_64=ref)
        for user_id, ref in funding_refs.items()
    ] + [
        Transfer(id=transfer_id(TransferStep.DEPOSIT_TO_SPOT, ref), debit_account_id=external_account_id(asset.id),
                 credit_account_id=spot_pool_account_id(asset.id), amount=amount, ledger=asset.id,
                 code=TransferStep.DEPOSIT_TO_SPOT, user_data_64=ref)
        for ref in spot_refs.values()
    ]
    refused = [s for s in create_transfers_in_batches(ledger, transfers) if s not in TRANSFER_IN_LEDGER]
    if refused:
        raise SystemExit(f"ledger refused benchmark deposits: {refused[:3]}")
    get_message_bus().publish_many([
        Outgoing(topics.BALANCE_OPERATIONS, user_id,
                 BalanceOperation(ref_id=ref, operation=BalanceOperationType.DEPOSIT.value, user_id=user_id,
                                  asset_id=asset.id, amount=amount))
        for user_id, ref in spot_refs.items()
    ])
    deadline = time.monotonic() + 120
    while AppliedOperation.objects.filter(ref_id__in=list(spot_refs.values())).count() < users:
        if time.monotonic() > deadline:
            raise SystemExit("UBSCore did not apply the benchmark's spot deposits within 120 s")
        time.sleep(0.2)
    with open(result_path, "w") as file:
        json.dump({"keys": keys, "asset_id": asset.id, "amount_minor": amount}, file)


if __name__ == "__main__":
    main(sys.argv)
