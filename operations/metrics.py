"""/metrics, computed from durable state when Prometheus scrapes.

Nothing is counted in process memory: every number is read from the store,
the database, the ledger or Kafka at scrape time, so it is the same whichever
gunicorn worker answers, includes what every Celery worker did, and survives
restarts (docs/architecture.md, "Metrics"). Each source is read on its own;
one that fails is reported by `internal_transfer_metrics_source_up{source}`
= 0 and the others are still exported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from transfers.domain import IN_FLIGHT, TERMINAL, Direction
from transfers.models import Asset
from transfers.store import get_transfer_store

logger = logging.getLogger(__name__)

PREFIX = "internal_transfer"
DURATION_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _asset_codes() -> dict[int, str]:
    return dict(Asset.objects.values_list("id", "code"))


def transfer_counts() -> Iterator[Metric]:
    counts = get_transfer_store().count_by_status()
    codes = _asset_codes()
    created = CounterMetricFamily(
        f"{PREFIX}_transfers_created", "Transfers accepted (stored), by direction and asset.",
        labels=["direction", "asset"])
    finished = CounterMetricFamily(
        f"{PREFIX}_transfers_finished", "Transfers that reached a terminal status, by direction, asset and status.",
        labels=["direction", "asset", "status"])
    in_flight = GaugeMetricFamily(
        f"{PREFIX}_transfers_in_flight", "Transfers not finished yet, by direction, asset and status.",
        labels=["direction", "asset", "status"])
    totals: dict[tuple[str, str], int] = {}
    for direction in Direction:
        for asset_code in sorted(codes.values()):
            totals[(direction.value, asset_code)] = 0
    for (direction, asset_id, status), count in sorted(counts.items()):
        labels = [direction.value, codes.get(asset_id, str(asset_id))]
        totals[(labels[0], labels[1])] = totals.get((labels[0], labels[1]), 0) + count
        if status in TERMINAL:
            finished.add_metric([*labels, status.value], count)
        else:
            in_flight.add_metric([*labels, status.value], count)
    for labels, count in totals.items():
        created.add_metric(list(labels), count)
    yield from (created, finished, in_flight)


def transfer_durations() -> Iterator[Metric]:
    window = settings.METRICS_DURATION_WINDOW_SECONDS
    since_ms = time.time_ns() // 1_000_000 - window * 1000
    bounds_ms = [round(bound * 1000) for bound in DURATION_BUCKETS_SECONDS]
    durations = get_transfer_store().finished_durations(since_ms, bounds_ms)
    family = HistogramMetricFamily(
        f"{PREFIX}_transfer_duration_seconds",
        f"Time from request to terminal status of the transfers that finished in the last {window} s "
        "(a window, not a running total: read the buckets, do not rate() them).",
        labels=["direction", "status"])
    for (direction, status), observed in sorted(durations.items()):
        buckets = [(str(bound), count) for bound, count in zip(DURATION_BUCKETS_SECONDS, observed.bucket_counts,
                                                               strict=True)]
        buckets.append(("+Inf", observed.count))
        family.add_metric([direction.value, status.value], buckets, sum_value=observed.sum_ms / 1000)
    yield family


def stuck_transfers() -> Iterator[Metric]:
    cutoff_ms = time.time_ns() // 1_000_000 - settings.STUCK_TRANSFER_SECONDS * 1000
    stuck = get_transfer_store().list_not_moved_since(IN_FLIGHT, cutoff_ms, settings.METRICS_STUCK_SCAN_LIMIT)
    family = GaugeMetricFamily(
        f"{PREFIX}_transfers_stuck",
        f"In-flight transfers whose status has not moved for STUCK_TRANSFER_SECONDS "
        f"(counted up to {settings.METRICS_STUCK_SCAN_LIMIT}).",
        labels=["direction", "status"])
    counts = {(direction, status): 0 for direction in Direction for status in sorted(IN_FLIGHT)}
    for record in stuck:
        counts[(record.direction, record.status)] += 1
    for (direction, status), count in counts.items():
        family.add_metric([direction.value, status.value], count)
    yield family


def kafka_consumer_lag() -> Iterator[Metric]:
    if settings.MESSAGE_BUS != "kafka":
        return
    from operations.kafka_lag import service_consumer_lag

    lag = service_consumer_lag()
    family = GaugeMetricFamily(
        f"{PREFIX}_kafka_consumer_lag",
        "Messages not yet committed by the consumer group: end offset - committed offset, summed over partitions.",
        labels=["group", "topic"])
    for (group, topic), value in sorted(lag.items()):
        family.add_metric([group, topic], value)
    yield family


def dead_letters() -> Iterator[Metric]:
    if settings.MESSAGE_BUS != "kafka":
        return
    from operations.kafka_lag import dead_letter_total

    yield CounterMetricFamily(f"{PREFIX}_dead_letters", "Messages no consumer could parse, sent to the dead-letter "
                              "topic (Σ of its end offsets).", value=dead_letter_total())


def reconcile_differences() -> Iterator[Metric]:
    from settlement.reconcile import reconcile

    family = GaugeMetricFamily(
        f"{PREFIX}_reconcile_difference_minor_units",
        "Reconciliation per asset, in minor units (0 = agrees): spot = ledger spot pool vs Σ UBSCore spot "
        "(transfers in flight accounted for); ledger = double entry; pending = reserved vs pool pending.",
        labels=["asset", "check"])
    for result in reconcile():
        family.add_metric([result.asset_code, "spot"], result.spot_difference)
        family.add_metric([result.asset_code, "ledger"], result.ledger_difference)
        family.add_metric([result.asset_code, "pending"], result.pending_difference)
    yield family


def celery_task_outcomes() -> Iterator[Metric]:
    from operations.models import TaskOutcomeCount

    failures = CounterMetricFamily(
        f"{PREFIX}_celery_task_failures", "Celery tasks that failed for good (after their retries), by task.",
        labels=["task"])
    retries = CounterMetricFamily(
        f"{PREFIX}_celery_task_retries", "Celery task attempts that failed and were retried, by task.",
        labels=["task"])
    for row in TaskOutcomeCount.objects.order_by("task"):
        failures.add_metric([row.task], row.failures)
        retries.add_metric([row.task], row.retries)
    yield from (failures, retries)


def webhook_deliveries() -> Iterator[Metric]:
    from webhooks.selectors import delivery_numbers

    numbers = delivery_numbers()
    attempts = CounterMetricFamily(
        f"{PREFIX}_webhook_delivery_attempts",
        "Webhook delivery attempts by outcome: delivered (2xx), http_error, timeout, connection_error, refused "
        "(the URL resolved to an address deliveries may not go to).",
        labels=["outcome"])
    for outcome, count in sorted(numbers.attempts_by_outcome.items()):
        attempts.add_metric([outcome], count)
    yield attempts
    yield GaugeMetricFamily(f"{PREFIX}_webhook_deliveries_pending",
                            "Webhook deliveries not yet delivered and still retried.", value=numbers.pending)
    oldest = numbers.oldest_pending_event_ms
    yield GaugeMetricFamily(
        f"{PREFIX}_webhook_oldest_pending_seconds",
        "Age of the oldest event with a delivery still pending (0 when none is).",
        value=0 if oldest is None else max(0.0, time.time() - oldest / 1000))


SOURCES: dict[str, Callable[[], Iterable[Metric]]] = {
    "transfer_counts": transfer_counts,
    "transfer_durations": transfer_durations,
    "stuck_transfers": stuck_transfers,
    "kafka": kafka_consumer_lag,
    "dead_letters": dead_letters,
    "reconcile": reconcile_differences,
    "celery_tasks": celery_task_outcomes,
    "webhooks": webhook_deliveries,
}


class DurableStateCollector:
    """A prometheus_client collector that reads every source afresh on each scrape."""

    def __init__(self, sources: dict[str, Callable[[], Iterable[Metric]]] | None = None) -> None:
        self.sources = SOURCES if sources is None else sources

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_metrics_source_up",
                               "1 if the source of these metrics answered at this scrape, else 0.",
                               labels=["source"])
        for name, source in self.sources.items():
            try:
                metrics = list(source())  # all or nothing per source
            except NotImplementedError:  # e.g. the ScyllaDB store cannot count transfers
                continue
            except Exception:
                logger.warning("metrics source %s failed", name, exc_info=True)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from metrics
        yield up


def render(sources: dict[str, Callable[[], Iterable[Metric]]] | None = None) -> bytes:
    """The Prometheus text exposition of every source."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DurableStateCollector(sources))
    return generate_latest(registry)
