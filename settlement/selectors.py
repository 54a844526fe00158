"""Reads of settlement outside the saga."""

from __future__ import annotations

from settlement.models import ReconcileRun


def last_reconcile() -> ReconcileRun | None:
    """The reconcile task's latest outcome, if it ran."""
    return ReconcileRun.objects.order_by("-checked_at").first()
