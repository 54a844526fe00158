"""The funding ledger's own limit: settlement's ledger work, driven directly in batches.

    python -m bench.raw_ledger USERS SECONDS_PER_SIZE SIZE[,SIZE...] RESULT.json

Run by bench.run with the benchmark stack's environment, so it drives the
same backend (LEDGER_BACKEND) on the same database as the stack. For every
B transfers, half funding -> spot and half spot -> funding, it makes the
ledger calls settlement makes: one create_transfers with the B/2 reserves
(pending), then one with the B/2 posts and the B/2 spot -> funding credits.
No store, no Kafka, no Celery: what is left is the ledger. Reported as
transfers per second (B per round) for each batch size B.

It works on ledger 999, an asset id no Asset row has, so the reconcile task
and the benchmark's balances never see it; transfer ids come from snowflake
worker 1021, which no running process uses.
"""

from __future__ import annotations

import json
import sys
import time

RAW_LEDGER = 999
RAW_SNOWFLAKE_WORKER = 1021


def main(argv: list[str]) -> None:
    import django

    django.setup()
    from settlement.ledger import get_funding_ledger
    from settlement.ledger.base import TRANSFER_IN_LEDGER, Transfer, TransferFlags
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
    from transfers.snowflake import SnowflakeGenerator

    users, seconds, sizes, result_path = int(argv[1]), float(argv[2]), [int(s) for s in argv[3].split(",")], argv[4]
    asset = RAW_LEDGER
    user_ids = [900_000_000 + i for i in range(users)]
    ledger = get_funding_ledger()
    ids = SnowflakeGenerator(RAW_SNOWFLAKE_WORKER)
    ensure_accounts(
        ledger,
        [external_account(asset), spot_pool_account(asset)] + [user_funding_account(u, asset) for u in user_ids],
    )
    big = 1 << 50
    funding = []
    for user_id in user_ids:
        ref = ids.next_id()
        funding.append(Transfer(id=transfer_id(TransferStep.DEPOSIT_TO_FUNDING, ref),
                                debit_account_id=external_account_id(asset),
                                credit_account_id=user_funding_account_id(user_id, asset), amount=big,
                                ledger=asset, code=TransferStep.DEPOSIT_TO_FUNDING, user_data_64=ref))
    ref = ids.next_id()
    funding.append(Transfer(id=transfer_id(TransferStep.DEPOSIT_TO_SPOT, ref),
                            debit_account_id=external_account_id(asset),
                            credit_account_id=spot_pool_account_id(asset), amount=big, ledger=asset,
                            code=TransferStep.DEPOSIT_TO_SPOT, user_data_64=ref))
    _check(create_transfers_in_batches(ledger, funding), TRANSFER_IN_LEDGER)

    def reserve(ref: int, user_id: int) -> Transfer:
        return Transfer(id=transfer_id(TransferStep.FUNDING_TO_SPOT_RESERVE, ref),
                        debit_account_id=user_funding_account_id(user_id, asset),
                        credit_account_id=spot_pool_account_id(asset), amount=1, ledger=asset,
                        code=TransferStep.FUNDING_TO_SPOT_RESERVE, flags=TransferFlags.PENDING, user_data_64=ref)

    def post(ref: int, user_id: int) -> Transfer:
        return Transfer(id=transfer_id(TransferStep.FUNDING_TO_SPOT_POST, ref),
                        debit_account_id=user_funding_account_id(user_id, asset),
                        credit_account_id=spot_pool_account_id(asset), amount=1, ledger=asset,
                        code=TransferStep.FUNDING_TO_SPOT_RESERVE, flags=TransferFlags.POST_PENDING_TRANSFER,
                        pending_id=transfer_id(TransferStep.FUNDING_TO_SPOT_RESERVE, ref), user_data_64=ref)

    def credit(ref: int, user_id: int) -> Transfer:
        return Transfer(id=transfer_id(TransferStep.SPOT_TO_FUNDING_CREDIT, ref),
                        debit_account_id=spot_pool_account_id(asset),
                        credit_account_id=user_funding_account_id(user_id, asset), amount=1, ledger=asset,
                        code=TransferStep.SPOT_TO_FUNDING_CREDIT, user_data_64=ref)

    results = []
    counter = 0
    for size in sizes:
        size = min(size, ledger.max_batch_size)  # the second call carries `size` events
        half = size // 2
        rounds = 0
        started = time.perf_counter()
        while rounds < 2 or time.perf_counter() - started < seconds:
            out = [(ids.next_id(), user_ids[(counter + i) % users]) for i in range(half)]
            into = [(ids.next_id(), user_ids[(counter + half + i) % users]) for i in range(half)]
            counter += size
            _check(ledger.create_transfers([reserve(r, u) for r, u in out]), TRANSFER_IN_LEDGER)
            _check(ledger.create_transfers([post(r, u) for r, u in out] + [credit(r, u) for r, u in into]),
                   TRANSFER_IN_LEDGER)
            rounds += 1
        elapsed = time.perf_counter() - started
        results.append({"batch_size": 2 * half, "rounds": rounds, "seconds": elapsed,
                        "transfers_per_s": 2 * half * rounds / elapsed,
                        "ledger_events_per_s": 3 * half * rounds / elapsed})
    with open(result_path, "w") as file:
        json.dump({"backend": type(ledger).__name__, "sizes": results}, file)


def _check(statuses, ok) -> None:
    bad = [s for s in statuses if s not in ok]
    if bad:
        raise SystemExit(f"raw ledger run refused: {bad[:3]}")


if __name__ == "__main__":
    main(sys.argv)
