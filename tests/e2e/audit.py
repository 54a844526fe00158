"""Audit a running stack: every transfer against the ledger and UBSCore, and the totals.

Used by the crash-point tests and the chaos run. `run_audit(stack, ...)`
starts `python -m tests.e2e.audit` with the stack's environment (its
database, ledger and settings), which reads everything through the same
ports the service uses and prints one JSON report:

* per transfer: status, the ledger transfers of its steps that exist
  (reserve / post / void / credit, ids from schema/ledger_ids.md, found with
  `lookup_transfers`) and UBSCore's AppliedOperation for its ref_id, and what
  is wrong with them: a `success` must have moved exactly its amount once on
  both sides, a `failed` nothing, net; and the transfer as the API shows it
  (`public`: what its webhook event's `data` must be);
* per asset: deposited (what came in through the external account),
  funding available, spot (Σ UBSCore), in flight, the spot pool; and the
  invariants funding + spot + in flight == deposited, spot pool == Σ UBSCore
  (adjusted for what is in flight);
* optionally per user and asset: the balances the deposits and the
  successful transfers imply, against the ledger and UBSCore;
* a snapshot of every balance and every transfer's state, to compare two
  audits (nothing may change when nothing should happen).

All amounts are integers in minor units.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

from transfers.domain import Direction, TransferRecord, TransferStatus

# --- Driver side: no Django here ---------------------------------------------


def run_audit(
    stack: Any,
    users: list[int] | None = None,
    request_ids: list[int] | None = None,
    deposits: list[dict] | None = None,
    timeout: float = 600,
) -> dict:
    """Audit the stack's state; `deposits`: [{"user_id", "asset_id", "amount", "to"}] for per-user checks."""
    from tests.e2e.stack import ROOT

    request = {"users": users or [], "request_ids": request_ids, "deposits": deposits}
    result = subprocess.run(
        [sys.executable, "-m", "tests.e2e.audit"],
        cwd=ROOT,
        env=dict(stack.env, PROCESS_NAME="audit"),
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"audit failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- Inside the stack's environment --------------------------------------------


def audit(users: list[int], request_ids: list[int] | None, deposits: list[dict] | None) -> dict:
    from settlement.ledger import get_funding_ledger
    from settlement.ledger.ids import (
        AccountKind,
        TransferStep,
        external_account_id,
        spot_pool_account_id,
        transfer_id,
        user_funding_account_id,
    )
    from transfers.api.serializers import transfer_representation
    from transfers.models import Asset
    from transfers.store import get_transfer_store
    from ubscore.models import AppliedOperation, SpotBalance

    ledger = get_funding_ledger()
    store = get_transfer_store()
    assets = {asset.id: asset.code for asset in Asset.objects.all()}
    decimals = dict(Asset.objects.values_list("id", "decimals"))
    # Every user funding account of every asset, from the ledger itself.
    funding_accounts = {a: list(ledger.accounts_with_code(a, AccountKind.USER_FUNDING)) for a in assets}
    account_holders = {acc.user_data_64 for accs in funding_accounts.values() for acc in accs}
    users = sorted(set(users) | _users_seen() | account_holders)

    records = {}
    if request_ids is None:
        for user_id in users:
            cursor = None
            while True:
                page = store.list_for_user(user_id, limit=1000, cursor=cursor)
                records.update({r.request_id: r for r in page.items})
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
    else:
        records = store.get_many(request_ids)

    steps = {
        "reserve": TransferStep.FUNDING_TO_SPOT_RESERVE,
        "post": TransferStep.FUNDING_TO_SPOT_POST,
        "void": TransferStep.FUNDING_TO_SPOT_VOID,
        "credit": TransferStep.SPOT_TO_FUNDING_CREDIT,
    }
    wanted = [transfer_id(step, request_id) for request_id in records for step in steps.values()]
    in_ledger = {}
    for start in range(0, len(wanted), 4000):
        in_ledger.update({t.id: t for t in ledger.lookup_transfers(wanted[start : start + 4000])})
    applied = {}
    ids = list(records)
    for start in range(0, len(ids), 500):
        applied.update(AppliedOperation.objects.in_bulk(ids[start : start + 500]))

    violations: list[str] = []
    transfers: dict[str, dict] = {}
    in_flight: dict[int, int] = defaultdict(int)  # per asset: left funding, not yet in spot (or the reverse)
    pool_lag: dict[int, int] = defaultdict(int)  # spot pool posted minus Σ UBSCore, explained by what is in flight
    moved: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])  # (user, asset) -> [funding, spot]
    for request_id, record in sorted(records.items()):
        ledger_steps = {}
        for name, step in steps.items():
            found = in_ledger.get(transfer_id(step, request_id))
            if found is not None:
                ledger_steps[name] = found.amount
        operation = applied.get(request_id)
        ubscore = None if operation is None else {
            "operation": operation.operation, "status": operation.status, "amount": operation.amount,
            "user_id": operation.user_id, "asset_id": operation.asset_id,
        }
        problems = _check_transfer(record, ledger_steps, ubscore)
        violations.extend(f"transfer {request_id}: {problem}" for problem in problems)
        transfers[str(request_id)] = {
            "user_id": record.user_id, "asset_id": record.asset_id, "direction": record.direction.value,
            "amount": record.amount, "status": record.status.value, "error_message": record.error_message,
            "ledger": ledger_steps, "ubscore": ubscore, "violations": problems,
            "public": transfer_representation(record, decimals[record.asset_id]),  # as GET answers it
        }
        ubscore_applied = ubscore is not None and ubscore["status"] == "applied"
        if record.direction is Direction.FUNDING_TO_SPOT:
            closed = "post" in ledger_steps or "void" in ledger_steps
            if "reserve" in ledger_steps and not closed:
                if ubscore_applied:
                    pool_lag[record.asset_id] -= record.amount  # in spot, pool credit still pending
                else:
                    in_flight[record.asset_id] += record.amount  # reserved, not yet in spot
            if record.status is TransferStatus.SUCCESS:
                moved[(record.user_id, record.asset_id)][0] -= record.amount
                moved[(record.user_id, record.asset_id)][1] += record.amount
        else:
            if ubscore_applied and "credit" not in ledger_steps:
                in_flight[record.asset_id] += record.amount  # left spot, not yet in funding
                pool_lag[record.asset_id] += record.amount
            if record.status is TransferStatus.SUCCESS:
                moved[(record.user_id, record.asset_id)][0] += record.amount
                moved[(record.user_id, record.asset_id)][1] -= record.amount

    # UBSCore must not have moved money for a transfer that does not exist.
    if request_ids is None:
        transfer_operations = AppliedOperation.objects.filter(operation__in=["TransferIn", "TransferOut"])
        for ref_id in sorted(set(transfer_operations.values_list("ref_id", flat=True)) - set(records))[:20]:
            violations.append(f"UBSCore applied transfer operation {ref_id}, which has no transfer record")

    account_ids = [spot_pool_account_id(a) for a in assets] + [external_account_id(a) for a in assets]
    accounts = {acc.id: acc for acc in ledger.lookup_accounts(account_ids)}
    accounts.update({acc.id: acc for accs in funding_accounts.values() for acc in accs})
    spot_rows = {(row.user_id, row.asset_id): row for row in SpotBalance.objects.filter(user_id__in=users)}
    spot_all = defaultdict(int)
    for row in SpotBalance.objects.all():
        spot_all[row.asset_id] += row.available + row.frozen

    asset_report = {}
    for asset_id, code in assets.items():
        external = accounts.get(external_account_id(asset_id))
        pool = accounts.get(spot_pool_account_id(asset_id))
        deposited = external.debits_posted - external.credits_posted if external else 0
        funding_available = sum(a.credits_posted - a.debits_posted - a.debits_pending
                                for a in funding_accounts[asset_id])
        reserved = sum(a.debits_pending for a in funding_accounts[asset_id])
        pool_posted = pool.credits_posted - pool.debits_posted if pool else 0
        spot = spot_all[asset_id]
        row = {
            "deposited": deposited, "funding": funding_available, "reserved": reserved, "spot": spot,
            "in_flight": in_flight[asset_id], "spot_pool": pool_posted,
            "spot_pool_pending": pool.credits_pending if pool else 0,
        }
        row["conserved"] = funding_available + spot + in_flight[asset_id] == deposited
        row["reconciled"] = pool_posted - pool_lag[asset_id] == spot
        if not row["conserved"]:
            violations.append(f"{code}: funding {funding_available} + spot {spot} + in flight {in_flight[asset_id]}"
                              f" != deposited {deposited}")
        if not row["reconciled"]:
            violations.append(f"{code}: spot pool {pool_posted} (in flight {pool_lag[asset_id]}) != Σ UBSCore {spot}")
        asset_report[code] = row

    if deposits is not None:
        expected: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
        for deposit in deposits:
            expected[(deposit["user_id"], deposit["asset_id"])][0 if deposit["to"] == "funding" else 1] += int(
                deposit["amount"])
        deposited_users = {user_id for user_id, _ in expected}  # others on a shared stack are not checked here
        for key, (funding_moved, spot_moved) in moved.items():
            if key[0] not in deposited_users:
                continue
            expected[key][0] += funding_moved
            expected[key][1] += spot_moved
        for (user_id, asset_id), (want_funding, want_spot) in sorted(expected.items()):
            account = accounts.get(user_funding_account_id(user_id, asset_id))
            have_funding = account.credits_posted - account.debits_posted if account else 0
            spot_row = spot_rows.get((user_id, asset_id))
            have_spot = spot_row.available + spot_row.frozen if spot_row else 0
            if (have_funding, have_spot) != (want_funding, want_spot):
                violations.append(
                    f"user {user_id} {assets[asset_id]}: funding {have_funding} spot {have_spot}, deposits and "
                    f"successful transfers imply funding {want_funding} spot {want_spot}")

    # The service's own reconciliation (settlement.reconcile) must agree.
    from settlement.reconcile import reconcile

    service_reconcile = {}
    for result in reconcile():
        service_reconcile[result.asset_code] = {
            "spot_difference": result.spot_difference, "ledger_difference": result.ledger_difference,
            "pending_difference": result.pending_difference, "clean": result.is_clean}
        if not result.is_clean:
            violations.append(f"{result.asset_code}: the service's reconcile is not clean: "
                              f"{service_reconcile[result.asset_code]}")

    counts: dict[str, int] = defaultdict(int)
    for record in records.values():
        counts[record.status.value] += 1
    snapshot = {
        "accounts": {f"{acc.id:x}": [acc.debits_pending, acc.debits_posted, acc.credits_pending, acc.credits_posted]
                     for acc in accounts.values()},
        "spot": {f"{u}:{a}": [r.available, r.frozen] for (u, a), r in spot_rows.items()},
        "applied_operations": AppliedOperation.objects.count(),
        "transfers": {k: [v["status"], v["error_message"], v["ledger"], v["ubscore"]] for k, v in transfers.items()},
    }
    return {
        "transfers": transfers,
        "counts": dict(counts),
        "assets": asset_report,
        "reconcile": service_reconcile,
        "violations": violations,
        "snapshot": snapshot,
    }


def _check_transfer(record: TransferRecord, ledger_steps: dict, ubscore: dict | None) -> list[str]:
    """What is wrong with one transfer, given the ledger steps that exist and UBSCore's answer.

    A transfer still in flight may be anywhere on its way; only a finished one
    must show exactly its outcome.
    """
    problems = []
    amount = record.amount
    operation = "TransferIn" if record.direction is Direction.FUNDING_TO_SPOT else "TransferOut"
    for name, stored in ledger_steps.items():
        if stored != amount:
            problems.append(f"ledger {name} of {stored}, transfer is {amount}")
    if ubscore is not None:
        if (ubscore["operation"], ubscore["amount"], ubscore["user_id"], ubscore["asset_id"]) != (
                operation, amount, record.user_id, record.asset_id):
            problems.append(f"UBSCore applied {ubscore}, transfer is {operation} {amount}")
    applied = ubscore is not None and ubscore["status"] == "applied"
    rejected = ubscore is not None and ubscore["status"] == "rejected"
    steps = set(ledger_steps)
    if record.direction is Direction.FUNDING_TO_SPOT:
        if steps & {"credit"}:
            problems.append("funding -> spot has a spot -> funding credit")
        if {"post", "void"} <= steps:
            problems.append("reserve both posted and voided")
        if record.status is TransferStatus.SUCCESS and not (steps == {"reserve", "post"} and applied):
            problems.append(f"success but ledger {sorted(steps)}, UBSCore {ubscore and ubscore['status']}")
        if record.status is TransferStatus.FAILED and not (
            (not steps and ubscore is None) or (steps == {"reserve", "void"} and rejected)
        ):
            problems.append(f"failed but ledger {sorted(steps)}, UBSCore {ubscore and ubscore['status']}")
    else:
        if steps - {"credit"}:
            problems.append(f"spot -> funding has funding -> spot steps {sorted(steps - {'credit'})}")
        if record.status is TransferStatus.SUCCESS and not (steps == {"credit"} and applied):
            problems.append(f"success but ledger {sorted(steps)}, UBSCore {ubscore and ubscore['status']}")
        if record.status is TransferStatus.FAILED and not (not steps and rejected):
            problems.append(f"failed but ledger {sorted(steps)}, UBSCore {ubscore and ubscore['status']}")
        if rejected and steps:
            problems.append("UBSCore rejected but funding was credited")
    return problems


def _users_seen() -> set[int]:
    """Users the ORM tables know of (transfers, spot balances); the ledger ids need them."""
    from django.conf import settings

    from ubscore.models import SpotBalance

    users = set(SpotBalance.objects.values_list("user_id", flat=True).distinct())
    if settings.TRANSFER_STORE == "orm":
        from transfers.models import Transfer

        users |= set(Transfer.objects.values_list("user_id", flat=True).distinct())
    return users


def in_flight_count() -> int:
    import time

    from transfers.domain import IN_FLIGHT
    from transfers.store import get_transfer_store

    return len(get_transfer_store().list_not_moved_since(IN_FLIGHT, time.time_ns() // 1_000_000 + 1, 1_000_000))


def count_in_flight(stack: Any) -> int:
    """How many transfers of the stack are not finished (driver side)."""
    from tests.e2e.stack import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "tests.e2e.audit"], cwd=ROOT, env=dict(stack.env, PROCESS_NAME="audit"),
        input=json.dumps({"mode": "in_flight"}), capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        raise AssertionError(f"audit failed:\n{result.stderr[-5000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["in_flight"]


def main() -> None:
    import django

    django.setup()
    request = json.loads(sys.stdin.read() or "{}")
    if request.get("mode") == "in_flight":  # just how many transfers are not finished
        report = {"in_flight": in_flight_count()}
    else:
        report = audit(request.get("users") or [], request.get("request_ids"), request.get("deposits"))
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
