"""Recording transfer timelines: the append-only event log kept by the transfer store.

The saga and the API collect a batch's events in a `TimelineRecorder` and
append them with one `TransferStore.append_events` call when the batch is
done (also when it fails half-way), so the hot path pays one extra write per
batch, not one per step. The log is for people: a failed append is logged and
never fails the money path, and the record in the store stays the truth.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

from transfers.domain import EventKind, TimelineEvent, TransferStatus
from transfers.store.base import TransferStore

logger = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def timeline_event(request_id: int, kind: EventKind, actor: str = "", **detail: object) -> TimelineEvent:
    """An event of this process, now; details of None are left out."""
    return TimelineEvent(
        request_id=int(request_id),
        kind=kind,
        at_ms=_now_ms(),
        detail={key: str(value) for key, value in detail.items() if value is not None},
        actor=actor,
        process=os.environ.get("PROCESS_NAME", "manage"),
    )


class TimelineRecorder:
    """Collects the events of one batch; `flush()` appends them in one call."""

    def __init__(self, store: TransferStore, actor: str = "") -> None:
        self.store = store
        self.actor = actor
        self.events: list[TimelineEvent] = []

    def add(self, request_id: int, kind: EventKind, **detail: object) -> None:
        self.events.append(timeline_event(request_id, kind, self.actor, **detail))

    def status_changed(
        self, request_id: int, old: TransferStatus, new: TransferStatus, error: str | None = None
    ) -> None:
        self.add(request_id, EventKind.STATUS_CHANGED, **{"from": old.value, "to": new.value, "error": error})

    def flush(self) -> None:
        events, self.events = self.events, []
        if not events:
            return
        try:
            self.store.append_events(events)
        except Exception:  # the timeline must never fail a transfer
            logger.warning("timeline events not recorded", exc_info=True, extra={"events": len(events)})


@contextlib.contextmanager
def recording(store: TransferStore, actor: str = "") -> Iterator[TimelineRecorder]:
    """A recorder whose events are appended when the block ends, however it ends."""
    recorder = TimelineRecorder(store, actor)
    try:
        yield recorder
    finally:
        recorder.flush()


_LEDGER_STEPS = {"post": "post of the reserve", "void": "void of the reserve", "credit": "funding credit"}


def describe(event: TimelineEvent) -> str:
    """One line for support staff."""
    d = event.detail
    match event.kind:
        case EventKind.ACCEPTED:
            return "Accepted and stored (requesting)"
        case EventKind.PUBLISHED:
            return f"Published {d.get('message', 'TransferRequested')} to Kafka"
        case EventKind.PUBLISH_FAILED:
            return f"Publish failed ({d.get('error', 'broker unavailable')}); the relay tries again"
        case EventKind.STATUS_CHANGED:
            text = f"Status {d.get('from', '?')} → {d.get('to', '?')}"
            return text + (f": {d['error']}" if d.get("error") else "")
        case EventKind.LEDGER_RESERVED:
            return f"Funds reserved in the funding ledger (ledger status {d.get('ledger_status', '?')})"
        case EventKind.LEDGER_RESERVE_REFUSED:
            return f"Funding ledger refused the reserve (ledger status {d.get('ledger_status', '?')})"
        case EventKind.TRANSFER_IN_SENT:
            return "TransferIn sent to UBSCore"
        case EventKind.TRANSFER_OUT_SENT:
            return "TransferOut sent to UBSCore"
        case EventKind.UBSCORE_ANSWER:
            text = f"UBSCore answered {d.get('status', '?')}"
            if d.get("reason"):
                text += f": {d['reason']}"
            if d.get("note"):
                text += f" ({d['note']})"
            return text
        case EventKind.LEDGER_POSTED:
            return f"Reserve posted in the funding ledger (ledger status {d.get('ledger_status', '?')})"
        case EventKind.LEDGER_VOIDED:
            return f"Reserve voided in the funding ledger (ledger status {d.get('ledger_status', '?')})"
        case EventKind.FUNDING_CREDITED:
            return f"Funding wallet credited (ledger status {d.get('ledger_status', '?')})"
        case EventKind.LEDGER_STEP_FAILED:
            step = _LEDGER_STEPS.get(d.get("step", ""), d.get("step", "ledger step"))
            return f"Ledger refused the {step} (ledger status {d.get('ledger_status', '?')}); retried"
        case EventKind.REDRIVE:
            age = d.get("age_ms")
            since = f", not moved for {int(age) / 1000:.1f} s" if age and age.isdigit() else ""
            return f"Re-driven from {d.get('status', '?')}{since}"
    return str(event.kind)
