"""Writes of settlement outside the saga: asked for by people (the admin), and the reconcile record."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from settlement import saga
from settlement.models import ReconcileRun
from settlement.reconcile import AssetReconciliation
from transfers.models import Transfer

RECONCILE_KEEP_DAYS = 7


def redrive_for_staff(request_ids: Sequence[int], user, ports: saga.Ports | None = None) -> int:
    """Re-drive transfers through the recovery task's own path; the admin log says who asked.

    Only drives transfers on (reserve again, re-send the UBSCore operation):
    it never sets a status or a balance. Finished transfers are left alone.
    Returns how many were driven on.
    """
    unique = list(dict.fromkeys(int(request_id) for request_id in request_ids))
    driven = saga.redrive_transfers(unique, ports, actor=f"admin:{user.get_username()}")
    # LogEntry rows by id, not through model instances: with TRANSFER_STORE=scylla
    # the transfers are not rows of this database.
    content_type = ContentType.objects.get_for_model(Transfer)
    LogEntry.objects.bulk_create(
        LogEntry(
            user_id=user.pk,
            content_type_id=content_type.pk,
            object_id=str(request_id),
            object_repr=str(request_id),
            action_flag=CHANGE,
            change_message=f"Re-drive requested ({driven} of {len(unique)} selected were in flight and driven on).",
        )
        for request_id in unique
    )
    return driven


def record_reconcile(results: Sequence[AssetReconciliation]) -> ReconcileRun:
    """Keep the reconcile task's outcome (its last look); drop runs older than RECONCILE_KEEP_DAYS."""
    now = timezone.now()
    run = ReconcileRun.objects.create(
        checked_at=now,
        clean=all(result.is_clean for result in results),
        assets=[
            {"asset": result.asset_code, "spot": str(result.spot_difference),
             "ledger": str(result.ledger_difference), "pending": str(result.pending_difference)}
            for result in results
        ],
    )
    ReconcileRun.objects.filter(checked_at__lt=now - datetime.timedelta(days=RECONCILE_KEEP_DAYS)).delete()
    return run
