"""Give a running stack users: an API key each and deposits, in one process.

`run_seed(stack, users, deposits)` starts `python -m tests.e2e.seed` with the
stack's environment. It issues the keys and makes the deposits through the
service's own code (transfers.services.create_api_key,
settlement.deposits.deposit_to_funding / deposit_to_spot, which waits for
UBSCore), spot deposits several at a time, and prints the keys and the
deposits it made as JSON. Much faster than one `manage.py` per key and per
deposit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_seed(stack: Any, users: list[int], deposits: list[tuple[int, str, str, str]], timeout: float = 600) -> dict:
    """deposits: (user_id, asset code, decimal amount, "funding" | "spot").

    Returns {"keys": {user_id: key}, "deposits": [{"user_id", "asset_id", "amount" (minor), "to", "reference"}]}.
    """
    from tests.e2e.stack import ROOT

    request = {"users": users, "deposits": [list(d) for d in deposits]}
    result = subprocess.run(
        [sys.executable, "-m", "tests.e2e.seed"],
        cwd=ROOT,
        env=dict(stack.env, PROCESS_NAME="seed"),
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"seed failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    answer["keys"] = {int(user): key for user, key in answer["keys"].items()}
    return answer


def seed(users: list[int], deposits: list[list]) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from django.conf import settings
    from django.db import connections

    from settlement.deposits import deposit_to_funding, deposit_to_spot
    from transfers.amounts import parse_amount
    from transfers.models import Asset
    from transfers.services import create_api_key
    from transfers.snowflake import SnowflakeGenerator

    keys = {}
    for user_id in users:
        issued = create_api_key(user_id, "seed")
        keys[str(user_id)] = getattr(issued, "key", issued)
    assets = {asset.code: asset for asset in Asset.objects.all()}
    references = SnowflakeGenerator(settings.COMMAND_SNOWFLAKE_WORKER_ID)
    made = []
    for user_id, code, amount, to in deposits:
        asset = assets[code]
        minor = parse_amount(amount, asset.decimals, (1 << 63) - 1)
        made.append({"user_id": int(user_id), "asset_id": asset.id, "amount": minor, "to": to,
                     "reference": references.next_id()})

    def spot_deposit(item: dict) -> None:
        try:
            deposit_to_spot(item["user_id"], item["asset_id"], item["amount"], item["reference"])
        finally:
            connections.close_all()

    for item in made:
        if item["to"] == "funding":
            deposit_to_funding(item["user_id"], item["asset_id"], item["amount"], item["reference"])
    with ThreadPoolExecutor(max_workers=8) as pool:  # each waits for UBSCore to apply its own
        list(pool.map(spot_deposit, [item for item in made if item["to"] == "spot"]))
    return {"keys": keys, "deposits": made}


def main() -> None:
    import django

    django.setup()
    request = json.loads(sys.stdin.read())
    sys.stdout.write(json.dumps(seed(request["users"], request["deposits"])) + "\n")


if __name__ == "__main__":
    main()
