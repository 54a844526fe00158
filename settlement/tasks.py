"""Celery tasks: the bridge hands Kafka messages to these; beat runs the re-drive.

Tasks are idempotent (see settlement.saga), acknowledged late, and retried
with exponential backoff; whatever still fails is picked up again by
`settlement.redrive_stuck_transfers` from persisted state.
"""

from __future__ import annotations

import logging
import threading

from celery import shared_task
from django.conf import settings
from django.db import connections

from settlement import saga
from transfer_site.messages import BalanceEvent, decode

logger = logging.getLogger(__name__)

_RETRY = {
    "autoretry_for": (Exception,),
    "retry_backoff": 0.5,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 50,
}


def warm_up_worker_process(**_signal: object) -> None:
    """Ready a new worker process for its first task: the adapters made and the producer connected,
    so the first transfers after a start do not wait on them. No topic is looked up: a worker may
    start before the topics exist (it does not create the layout; the relay, bridge and UBSCore do).

    In the background: Celery ends a child that is not up within its alive timeout (4 s), and with the
    broker down the warm-up takes longer than that (a task meanwhile waits for the same producer).
    """
    threading.Thread(target=_warm_up_ports, name="warm-up", daemon=True).start()


def _warm_up_ports() -> None:
    try:
        saga.default_ports().bus.warm_up([])
    finally:
        connections.close_all()  # this thread's own, if making the adapters opened any


@shared_task(name="settlement.settle_batch", bind=True, **_RETRY)
def settle_batch(self, request_ids: list[str], events_json: list[str]) -> None:
    """One batch the bridge handed over: new funding -> spot requests, then UBSCore's answers.

    One task per batch, not one per kind of message: at low load a batch is a
    few messages of both kinds, and Celery's own work per task (events, log
    lines, the pool's round trip) cost more than the settlement it carried.
    The two steps touch different transfers, so their order does not matter;
    if the reserve fails the whole task runs again, which both steps absorb.
    """
    if request_ids:
        _reserve(request_ids)
    if events_json:
        remaining = _settle(events_json)
        if remaining:
            raise self.retry(args=[[], remaining], countdown=min(2**self.request.retries, 30))


# Queued by a bridge of the release before settle_batch: they run until the queue holds none.
@shared_task(name="settlement.reserve_funding_to_spot", **_RETRY)
def reserve_funding_to_spot(request_ids: list[str]) -> None:
    """Reserve funds in the ledger and ask UBSCore to credit spot (funding -> spot)."""
    _reserve(request_ids)


@shared_task(name="settlement.settle_balance_events", bind=True, **_RETRY)
def settle_balance_events(self, events_json: list[str]) -> None:
    """Post or void the reserve (funding -> spot), or credit funding (spot -> funding)."""
    remaining = _settle(events_json)
    if remaining:
        raise self.retry(args=[remaining], countdown=min(2**self.request.retries, 30))


def _reserve(request_ids: list[str]) -> None:
    saga.reserve_funding([int(request_id) for request_id in request_ids])


def _settle(events_json: list[str]) -> list[str]:
    """Settle the events; those whose ledger step must be tried again, as they came."""
    events = [decode(raw.encode()) for raw in events_json]
    retry_ids = set(saga.settle_balance_events([e for e in events if isinstance(e, BalanceEvent)]))
    return [raw for raw, event in zip(events_json, events, strict=True) if event.ref_id in retry_ids]


@shared_task(name="settlement.redrive_stuck_transfers")
def redrive_stuck_transfers() -> int:
    """Drive on transfers whose status has not moved for STUCK_TRANSFER_SECONDS."""
    return saga.redrive_stuck_transfers(not_moved_for_ms=settings.STUCK_TRANSFER_SECONDS * 1000)


@shared_task(name="settlement.reconcile_balances")
def reconcile_balances(second_look: bool = False) -> bool | None:
    """Compare the ledger with UBSCore per asset; log an error for each difference that stays.

    The system moves between the reads, so a first look that differs is looked
    at again RECONCILE_SETTLE_SECONDS later by a task scheduled for then, not
    by sleeping here: under load a first look usually differs, and a sleep
    would hold a settlement worker for those seconds. Returns True (clean),
    False (different on the last look) or None (a second look is scheduled).
    """
    from settlement.reconcile import reconcile
    from settlement.services import record_reconcile

    results = reconcile()
    if all(result.is_clean for result in results):
        record_reconcile(results)
        return True
    settle_seconds = settings.RECONCILE_SETTLE_SECONDS
    if not second_look and settle_seconds > 0:
        reconcile_balances.apply_async(kwargs={"second_look": True}, countdown=settle_seconds)
        logger.info("reconcile: the first look differs; looking again in %s s", settle_seconds)
        return None
    record_reconcile(results)
    for result in results:
        if not result.is_clean:
            logger.error(
                "reconcile difference",
                extra={"asset": result.asset_code, "spot_difference": str(result.spot_difference),
                       "ledger_difference": str(result.ledger_difference),
                       "pending_difference": str(result.pending_difference)},
            )
    return False
