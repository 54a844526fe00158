"""Operating the real stack: /health, /ready, /metrics, the timeline across processes, the logs."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.stack import wait_until

pytestmark = pytest.mark.e2e


def get_text(stack, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(stack.base_url + path, timeout=30) as response:
        return response.status, response.read().decode()


def samples(stack) -> dict[tuple[str, tuple], float]:
    status, text = get_text(stack, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_health_and_ready(stack):
    assert stack.http("GET", "/health") == (200, {"status": "ok"})
    assert stack.http("GET", "/ready") == (
        200, {"status": "ready", "checked": ["celery_broker", "database", "kafka", "ledger"]})


def test_each_process_that_publishes_connects_at_start(user):
    user.deposit("USDT", "10", "funding")
    status, created = user.transfer("funding", "spot", "USDT", "1")
    assert status == 202, created
    assert user.wait_terminal(created["request_id"])["status"] == "success"

    stack = user.stack

    def warmed(process: str) -> list[dict]:
        return [r for r in stack.log_records(process) if r["message"] == "message bus warmed up"]

    # The relay and UBSCore look their topics up too (they have made sure the topics exist).
    publishes_to = {"relay": ["internal_transfer.requests", "balance.operations"], "ubscore": ["balance.events"]}
    for process, topic_names in publishes_to.items():
        assert warmed(process), process
        assert all(r["topics"] == [stack.topic(name) for name in topic_names] for r in warmed(process)), process
    # Each Celery pool child that ran a settlement task warmed up, on a thread of its own, from its start.
    ran = {r["pid"] for r in stack.log_records("worker")
           if r["message"].startswith("Task settlement.") and " succeeded in " in r["message"]}
    assert ran
    wait_until(lambda: ran <= {r["pid"] for r in warmed("worker")}, 30, "each worker child's warm-up")


def test_a_transfer_shows_in_metrics_and_its_timeline_spans_the_processes(user):
    user.deposit("USDT", "50", "funding")
    status, created = user.transfer("funding", "spot", "USDT", "5")
    assert status == 202, created
    request_id = created["request_id"]
    assert user.wait_terminal(request_id)["status"] == "success"

    # The timeline, as the admin reads it (through the store port).
    result = user.stack.manage(
        "shell", "-c",
        "import json; from transfers.store import get_transfer_store; "
        "print(json.dumps([[e.kind.value, e.process, e.detail] "
        f"for e in get_transfer_store().timeline({request_id})]))",
    )
    timeline = json.loads(result.stdout.strip().splitlines()[-1])
    by_kind = {kind: process for kind, process, _ in timeline}
    assert [kind for kind, _, _ in timeline][:2] == ["accepted", "published"]
    assert (by_kind["accepted"], by_kind["published"]) == ("web", "relay")
    for kind in ("ledger_reserved", "transfer_in_sent", "ubscore_answer", "ledger_posted"):
        assert by_kind[kind] == "worker", (kind, timeline)
    assert ["status_changed", "worker", {"from": "pending", "to": "success"}] in timeline

    # /metrics: computed from durable state, so whichever gunicorn worker answers agrees. The ScyllaDB
    # store cannot count transfers cheaply (docs/scylla.md "Metrics"): its counts are left out, not wrong.
    store_counts = user.stack.env.get("TRANSFER_STORE", "orm") == "orm"
    created = ("internal_transfer_transfers_created_total", (("asset", "USDT"), ("direction", "funding_to_spot")))

    def scraped():
        values = samples(user.stack)
        finished = ("internal_transfer_transfers_finished_total",
                    (("asset", "USDT"), ("direction", "funding_to_spot"), ("status", "success")))
        return values if values.get(finished, 0) >= 1 or not store_counts else None

    values = wait_until(scraped, 30, "the finished transfer in /metrics")
    counted_sources = {"transfer_counts", "transfer_durations"}
    if store_counts:
        assert values[created] >= 1
        assert values[("internal_transfer_transfer_duration_seconds_count",
                       (("direction", "funding_to_spot"), ("status", "success")))] >= 1
        assert samples(user.stack)[created] >= values[created]  # another scrape, maybe another worker: the same
    else:
        assert not any(("source", source) in labels for name, labels in values
                       if name == "internal_transfer_metrics_source_up" for source in counted_sources)
        assert created not in values
    for source in ("stuck_transfers", "kafka", "dead_letters", "reconcile", "celery_tasks",
                   *(counted_sources if store_counts else ())):
        assert values[("internal_transfer_metrics_source_up", (("source", source),))] == 1, source
    for group, topic in (("settlement-bridge", "internal_transfer.requests"), ("settlement-bridge", "balance.events"),
                         ("ubscore", "balance.operations")):
        labels = (("group", user.stack.consumer_group(group)), ("topic", user.stack.topic(topic)))
        assert values[("internal_transfer_kafka_consumer_lag", labels)] >= 0
    assert values[("internal_transfer_reconcile_difference_minor_units", (("asset", "USDT"), ("check", "spot")))] == 0

    # Logs: every line about this transfer names its process; Celery's own lines carry the request id.
    for process in ("web", "bridge", "worker", "ubscore"):
        lines = [r for r in user.stack.log_records(process) if r.get("request_id") == request_id]
        assert lines, process
        assert all(r["process"] == process and r.get("user_id") for r in lines if r["logger"] != "celery.app.trace")
    worker_lines = [r for r in user.stack.log_records("worker") if r.get("request_id") == request_id]
    assert any(r["logger"] == "celery.app.trace" and "succeeded" in r["message"] for r in worker_lines), worker_lines
