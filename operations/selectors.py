"""Reads of the operations app: the overview support staff open in the admin.

Every read is bounded by time or by a limit, never by how many transfers are
stored (docs/architecture.md "Operations overview"): the last hour's activity
comes from index ranges (ORM) or per-minute rows (ScyllaDB), the in-flight
counts from the in-flight index or table. Each section is read on its own; one
whose source does not answer is shown as unavailable and the others still are.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings

from settlement.models import ReconcileRun
from settlement.selectors import last_reconcile
from transfers.domain import TransferStatus
from transfers.store import get_transfer_store
from transfers.store.base import ACCEPTED, InFlightCounts

logger = logging.getLogger(__name__)

MINUTE_MS = 60_000
SERIES = (ACCEPTED, TransferStatus.SUCCESS.value, TransferStatus.FAILED.value)
TOP_FAILURE_REASONS = 5
IN_FLIGHT_COUNT_LIMIT = 100_000


@dataclasses.dataclass
class Overview:
    generated_at_ms: int
    window_minutes: int
    stuck_seconds: int
    minutes: list[int] = dataclasses.field(default_factory=list)  # minute starts (ms), oldest first
    series: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # accepted/success/failed per minute
    failed_in_window: int = 0
    top_failure_reasons: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    in_flight: InFlightCounts | None = None
    consumer_lag: dict[tuple[str, str], int] | None = None
    dead_letters: int | None = None
    last_reconcile: ReconcileRun | None = None
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)  # section -> why
    read_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # section -> time to read it


def operations_overview(window_minutes: int = 60) -> Overview:
    """What the person on duty needs at a glance, read now."""
    now_ms = time.time_ns() // 1_000_000
    overview = Overview(generated_at_ms=now_ms, window_minutes=window_minutes,
                        stuck_seconds=settings.STUCK_TRANSFER_SECONDS)
    first_minute = now_ms - now_ms % MINUTE_MS - (window_minutes - 1) * MINUTE_MS
    overview.minutes = [first_minute + i * MINUTE_MS for i in range(window_minutes)]

    def activity() -> None:
        found = get_transfer_store().activity_since(first_minute)
        overview.series = {kind: [found.per_minute.get((minute, kind), 0) for minute in overview.minutes]
                           for kind in SERIES}
        overview.failed_in_window = sum(overview.series[TransferStatus.FAILED.value])
        reasons = sorted(found.failure_reasons.items(), key=lambda item: (-item[1], item[0]))
        overview.top_failure_reasons = reasons[:TOP_FAILURE_REASONS]

    def in_flight() -> None:
        stuck_before_ms = now_ms - settings.STUCK_TRANSFER_SECONDS * 1000
        overview.in_flight = get_transfer_store().count_in_flight(stuck_before_ms, IN_FLIGHT_COUNT_LIMIT)

    def kafka() -> None:
        from operations.kafka_lag import dead_letter_total, service_consumer_lag

        overview.consumer_lag = service_consumer_lag()
        overview.dead_letters = dead_letter_total()

    def reconcile() -> None:
        overview.last_reconcile = last_reconcile()

    sections: dict[str, Callable[[], Any]] = {"activity": activity, "in_flight": in_flight, "reconcile": reconcile}
    if settings.MESSAGE_BUS == "kafka":
        sections["kafka"] = kafka
    for name, read in sections.items():
        started = time.perf_counter()
        try:
            read()
        except Exception as error:  # shown on the page; the other sections still are
            logger.warning("operations overview: %s unavailable", name, exc_info=True)
            overview.unavailable[name] = f"{type(error).__name__}: {error}"[:300]
        overview.read_ms[name] = (time.perf_counter() - started) * 1000
    return overview
