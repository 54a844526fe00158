"""/metrics: Prometheus text computed from durable state at scrape time."""

from __future__ import annotations

import time
from unittest import mock

import pytest
from prometheus_client.parser import text_string_to_metric_families

from operations import metrics
from operations.services import count_task_outcome
from settlement import saga
from settlement.deposits import deposit_to_funding
from transfer_site.bus import get_message_bus
from transfers import services
from transfers.domain import TransferStatus
from transfers.models import Transfer
from transfers.relay import TransferRelay
from transfers.store import get_transfer_store

pytestmark = pytest.mark.django_db


def scrape(client) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} from GET /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def create(user_id: int, source: str, destination: str, asset: str, amount: str):
    """A transfer accepted by the API and published by the relay: `pending`."""
    request = services.TransferRequest(source, asset, destination, asset, amount)
    request_id = services.create_transfer(user_id, request).record.request_id
    TransferRelay().relay_batch()
    return get_transfer_store().get(request_id)


def finish(record, status: TransferStatus, took_ms: int) -> None:
    assert get_transfer_store().compare_and_set_status(
        record.request_id, {TransferStatus.REQUESTING, TransferStatus.PENDING}, status,
        "x" if status is TransferStatus.FAILED else None, now_ms=record.created_at_ms + took_ms)


@pytest.mark.usefixtures("orm_transfer_store")
def test_counts_by_status_direction_and_asset(client):
    before = scrape(client)
    a = create(1, "funding", "spot", "USDT", "1")
    b = create(2, "funding", "spot", "USDT", "2")
    c = create(3, "spot", "funding", "BTC", "0.1")
    finish(a, TransferStatus.SUCCESS, 1_500)
    finish(c, TransferStatus.FAILED, 70_000)

    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("internal_transfer_transfers_created_total", direction="funding_to_spot", asset="USDT") == 2
    assert delta("internal_transfer_transfers_created_total", direction="spot_to_funding", asset="BTC") == 1
    assert delta("internal_transfer_transfers_finished_total", direction="funding_to_spot", asset="USDT",
                 status="success") == 1
    assert delta("internal_transfer_transfers_finished_total", direction="spot_to_funding", asset="BTC",
                 status="failed") == 1
    assert value(after, "internal_transfer_transfers_in_flight", direction="funding_to_spot", asset="USDT",
                 status="pending") >= 1
    assert b.request_id  # still in flight
    # Every direction and asset has a created series, zero or not.
    assert ("asset", "ETH") in dict.fromkeys(
        item for labels in after["internal_transfer_transfers_created_total"] for item in labels)


@pytest.mark.usefixtures("orm_transfer_store")
def test_duration_histogram_of_recently_finished_transfers(client):
    fast = create(4, "funding", "spot", "USDT", "1")
    slow = create(5, "spot", "funding", "USDT", "1")
    finish(fast, TransferStatus.SUCCESS, 800)
    finish(slow, TransferStatus.SUCCESS, 45_000)
    old = create(6, "funding", "spot", "USDT", "1")
    finish(old, TransferStatus.SUCCESS, 100)
    Transfer.objects.filter(pk=old.request_id).update(updated_at_ms=time.time_ns() // 1_000_000 - 3_600_000,
                                                      created_at_ms=time.time_ns() // 1_000_000 - 3_600_100)

    samples = scrape(client)

    bucket = "internal_transfer_transfer_duration_seconds_bucket"
    assert value(samples, bucket, direction="funding_to_spot", status="success", le="0.5") == 0
    assert value(samples, bucket, direction="funding_to_spot", status="success", le="1.0") == 1
    assert value(samples, bucket, direction="funding_to_spot", status="success", le="+Inf") == 1  # not the old one
    assert value(samples, bucket, direction="spot_to_funding", status="success", le="30.0") == 0
    assert value(samples, bucket, direction="spot_to_funding", status="success", le="60.0") == 1
    assert value(samples, "internal_transfer_transfer_duration_seconds_count",
                 direction="spot_to_funding", status="success") == 1
    assert value(samples, "internal_transfer_transfer_duration_seconds_sum",
                 direction="spot_to_funding", status="success") == pytest.approx(45.0)


@pytest.mark.usefixtures("orm_transfer_store")
def test_stuck_transfers(client, settings):
    settings.STUCK_TRANSFER_SECONDS = 30
    stuck = create(7, "funding", "spot", "ETH", "1")
    Transfer.objects.filter(pk=stuck.request_id).update(updated_at_ms=time.time_ns() // 1_000_000 - 60_000)
    create(8, "funding", "spot", "ETH", "1")  # fresh: not stuck

    samples = scrape(client)

    assert value(samples, "internal_transfer_transfers_stuck", direction="funding_to_spot", status="pending") == 1
    assert value(samples, "internal_transfer_transfers_stuck", direction="spot_to_funding", status="pending") == 0


def test_reconcile_differences_per_asset(client):
    deposit_to_funding(9, 1, 5_000_000, reference=99)
    samples = scrape(client)
    assert value(samples, "internal_transfer_reconcile_difference_minor_units", asset="USDT", check="spot") == 0
    assert value(samples, "internal_transfer_reconcile_difference_minor_units", asset="USDT", check="ledger") == 0
    assert value(samples, "internal_transfer_metrics_source_up", source="reconcile") == 1

    from ubscore.models import SpotBalance

    SpotBalance.objects.create(user_id=9, asset_id=1, available=7)  # spot without the ledger's spot pool
    samples = scrape(client)
    assert value(samples, "internal_transfer_reconcile_difference_minor_units", asset="USDT", check="spot") == -7


def test_celery_task_failures_and_retries(client):
    count_task_outcome("settlement.settle_balance_events", "retries")
    count_task_outcome("settlement.settle_balance_events", "retries")
    count_task_outcome("settlement.reserve_funding_to_spot", "failures")

    samples = scrape(client)

    assert value(samples, "internal_transfer_celery_task_retries_total", task="settlement.settle_balance_events") == 2
    assert value(samples, "internal_transfer_celery_task_failures_total",
                 task="settlement.reserve_funding_to_spot") == 1
    assert value(samples, "internal_transfer_celery_task_failures_total",
                 task="settlement.settle_balance_events") == 0


def test_a_source_that_fails_is_reported_and_the_others_still_export(client):
    with mock.patch.object(get_transfer_store(), "count_by_status", side_effect=RuntimeError("store down")):
        samples = scrape(client)
    assert value(samples, "internal_transfer_metrics_source_up", source="transfer_counts") == 0
    assert value(samples, "internal_transfer_metrics_source_up", source="celery_tasks") == 1
    assert "internal_transfer_transfers_created_total" not in samples


def test_a_store_that_cannot_count_leaves_those_families_out(client):
    with mock.patch.object(get_transfer_store(), "count_by_status", side_effect=NotImplementedError):
        samples = scrape(client)
    assert "internal_transfer_transfers_created_total" not in samples
    assert ("source", "transfer_counts") not in {
        item for labels in samples["internal_transfer_metrics_source_up"] for item in labels}


def test_kafka_lag_is_read_per_group_and_topic(client, settings):
    settings.MESSAGE_BUS = "kafka"
    lag = {("settlement-bridge", "internal_transfer.requests"): 3, ("ubscore", "balance.operations"): 0}
    with mock.patch("operations.kafka_lag.consumer_lag", return_value=lag) as read:
        samples = scrape(client)
    assert read.call_args.args[1] == {
        "settlement-bridge": ["internal_transfer.requests", "balance.events"], "ubscore": ["balance.operations"]}
    assert value(samples, "internal_transfer_kafka_consumer_lag", group="settlement-bridge",
                 topic="internal_transfer.requests") == 3
    with mock.patch("operations.kafka_lag.consumer_lag", side_effect=OSError("no brokers")):
        samples = scrape(client)
    assert value(samples, "internal_transfer_metrics_source_up", source="kafka") == 0


@pytest.mark.usefixtures("orm_transfer_store")
def test_the_counts_do_not_depend_on_the_process_that_serves_the_scrape(client):
    # Two "processes": nothing is kept in memory, so a fresh render sees the same numbers.
    create(10, "funding", "spot", "USDT", "1")
    first = metrics.render()
    second = metrics.render()
    created = [line for line in first.decode().splitlines() if line.startswith("internal_transfer_transfers_created")]
    assert created and all(line in second.decode() for line in created)


@pytest.mark.usefixtures("orm_transfer_store")
def test_the_redrive_path_leaves_metrics_consistent(client):
    record = create(11, "spot", "funding", "USDT", "1")
    get_message_bus().published.clear()
    saga.redrive_transfers([record.request_id])
    samples = scrape(client)
    assert value(samples, "internal_transfer_transfers_created_total", direction="spot_to_funding", asset="USDT") >= 1


def test_dead_letters_are_the_dead_letter_topics_end_offsets(client, settings):
    settings.MESSAGE_BUS = "kafka"
    with mock.patch("operations.kafka_lag.consumer_lag", return_value={}), \
            mock.patch("operations.kafka_lag.topic_totals", return_value={"internal_transfer.dead_letters": 4}):
        samples = scrape(client)
    assert value(samples, "internal_transfer_dead_letters_total") == 4


TOKEN = "mT7rQ2xW9zL4kV1pB8nC5jH0gF3dS6aY"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"],
    ids=["none", "wrong", "other_scheme", "empty", "longer"],
)
def test_with_a_token_only_its_bearer_is_answered(client, settings, authorization):
    settings.METRICS_TOKEN = TOKEN
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    with mock.patch("operations.views.render", side_effect=AssertionError("read before the token was checked")):
        response = client.get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"


def test_the_token_holder_gets_the_metrics(client, settings):
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert b"internal_transfer_metrics_source_up" in response.content
