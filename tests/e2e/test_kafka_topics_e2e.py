"""`manage.py kafka_topics` and the processes' refusal of a changed partition count, on the real broker
(the development broker, or the real Kafka of the production-like stack)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.e2e.stack import ROOT, wait_until

pytestmark = pytest.mark.e2e


def run(stack, *command: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *command], cwd=ROOT, env=dict(stack.env, PROCESS_NAME="manage", **env),
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def topic_names(namespace: str) -> list[str]:
    return [namespace + name for name in
            ("internal_transfer.requests", "balance.operations", "balance.events", "internal_transfer.dead_letters")]


def test_the_running_stacks_topics_check_out(stack):
    result = run(stack, "manage.py", "kafka_topics", "--check")
    assert result.returncode == 0, result.stderr
    for name in topic_names(stack.namespace):
        assert f"ok       {name}  partitions=4 replication=1" in result.stdout, result.stdout


def test_topics_are_created_as_configured_and_a_changed_count_is_refused(stack):
    namespace = f"topics-{uuid.uuid4().hex[:8]}."
    three = {"KAFKA_NAMESPACE": namespace, "KAFKA_TOPIC_PARTITIONS": "3"}

    missing = run(stack, "manage.py", "kafka_topics", "--check", **three)
    assert missing.returncode == 1 and f"{namespace}balance.operations: missing" in missing.stderr, missing.stderr

    created = run(stack, "manage.py", "kafka_topics", **three)
    assert created.returncode == 0, created.stderr
    for name in topic_names(namespace):
        assert f"created  {name}  partitions=3 replication=1" in created.stdout, created.stdout
    again = run(stack, "manage.py", "kafka_topics", **three)
    assert again.returncode == 0 and "created" not in again.stdout, again.stdout  # idempotent

    four = dict(three, KAFKA_TOPIC_PARTITIONS="4")
    differs = run(stack, "manage.py", "kafka_topics", "--check", **four)
    assert differs.returncode == 1, differs.stdout
    assert f"{namespace}balance.operations: 3 partitions, configured 4" in differs.stderr, differs.stderr

    # A consumer and the relay refuse to start on it, rather than reorder users' messages.
    for command in (["manage.py", "run_ubscore"], ["manage.py", "run_relay"]):
        refused = run(stack, *command, timeout=90, **four)
        assert refused.returncode == 1, (command, refused.stderr[-2000:])
        assert "refusing to start" in refused.stderr and "3 partitions, configured 4" in refused.stderr, command


def test_a_consumer_stops_when_partitions_are_added_under_it(stack):
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions
    from kafka.errors import KafkaConnectionError

    namespace = f"topics-{uuid.uuid4().hex[:8]}."
    env = dict(stack.env, PROCESS_NAME="ubscore-watch", KAFKA_NAMESPACE=namespace, KAFKA_TOPIC_PARTITIONS="2")
    consumer = subprocess.Popen(
        [sys.executable, "manage.py", "run_ubscore"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: run(stack, "manage.py", "kafka_topics", "--check", **{
            "KAFKA_NAMESPACE": namespace, "KAFKA_TOPIC_PARTITIONS": "2"}).returncode == 0, 60, "the topics")
        admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, api_version=(2, 2))
        try:
            admin.create_partitions({namespace + "balance.operations": NewPartitions(total_count=3)})
        except KafkaConnectionError:
            pytest.skip("the development broker cannot add partitions (it drops the request); runs on Kafka")
        finally:
            admin.close()
        # Seen within the consumer's metadata refresh (30 s) and its check (10 s).
        returncode = consumer.wait(timeout=90)
        stderr = consumer.stderr.read()
        assert returncode == 1, stderr[-2000:]
        assert f"partition count changed: {namespace}balance.operations: 3 partitions, configured 2" in stderr
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
