"""Malformed or unknown messages go to the dead-letter topic, are counted, and never block a partition."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.e2e.conftest import publish_raw
from tests.e2e.stack import Stack, wait_until
from transfer_site import topics

pytestmark = pytest.mark.e2e

# Which process consumes each topic, and a well-formed message of that topic
# (as JSON fields) to send with a version no consumer knows.
CONSUMERS = {
    topics.TRANSFER_REQUESTS: "bridge",
    topics.BALANCE_OPERATIONS: "ubscore",
    topics.BALANCE_EVENTS: "bridge",
}
WELL_FORMED = {
    topics.TRANSFER_REQUESTS: {
        "type": "TransferRequested", "request_id": "1", "user_id": "1", "asset_id": "1", "amount": "1",
        "direction": "funding_to_spot",
    },
    topics.BALANCE_OPERATIONS: {
        "type": "BalanceOperation", "ref_id": "1", "operation": "TransferIn", "user_id": "1", "asset_id": "1",
        "amount": "1",
    },
    topics.BALANCE_EVENTS: {
        "type": "BalanceEvent", "ref_id": "1", "operation": "TransferIn", "user_id": "1", "asset_id": "1",
        "amount": "1", "status": "applied", "reason": None,
    },
}


def garbage_messages(topic: str, marker: str) -> dict[str, tuple[bytes, str]]:
    """name -> (raw bytes, what the reason header must say)."""
    wrong_version = {**WELL_FORMED[topic], "version": 2, "marker": marker}
    return {
        "garbage": (b"\xff\xfe not json " + marker.encode(), "not JSON"),
        "unknown_type": (json.dumps({"type": "Mystery", "version": 1, "marker": marker}).encode(),
                         "unknown message type 'Mystery'"),
        "wrong_version": (json.dumps(wrong_version).encode(), f"{wrong_version['type']} version 2 is not supported"),
    }


def read_dead_letters(stack: Stack, wanted: set[bytes], timeout: float = 60) -> dict[bytes, dict[str, str]]:
    """The dead letters whose value is in `wanted`: value -> headers."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    found: dict[bytes, dict[str, str]] = {}
    try:
        dead_letters = stack.topic(topics.DEAD_LETTERS)
        partitions = wait_until(lambda: consumer.partitions_for_topic(dead_letters), 30, "dead-letter topic")
        consumer.assign([TopicPartition(dead_letters, p) for p in partitions])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while wanted - set(found) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.value in wanted:
                        found[record.value] = {name: value.decode() for name, value in record.headers}
    finally:
        consumer.close()
    missing = wanted - set(found)
    assert not missing, f"never dead-lettered: {missing}"
    return found


DEAD_LETTER_LOG = "malformed message sent to the dead-letter topic"


def dead_letter_log_lines(stack: Stack, process: str) -> list[dict]:
    return [record for record in stack.log_records(process) if record.get("message") == DEAD_LETTER_LOG]


def test_garbage_is_dead_lettered_with_its_reason_and_the_partition_moves_on(user):
    stack = user.stack
    marker = uuid.uuid4().hex
    user.deposit("USDT", "50", "funding")
    user.deposit("USDT", "50", "spot")
    logged_before = {name: len(dead_letter_log_lines(stack, name)) for name in ("bridge", "ubscore")}

    # Keyed by this user: the same partition as the user's transfers below.
    sent: dict[bytes, tuple[str, str]] = {}
    for topic in CONSUMERS:
        # The topic in the marker: every payload's bytes are unique, so each is found on its own.
        for raw, reason in garbage_messages(topic, f"{marker}-{topic}").values():
            publish_raw(stack, topic, user.user_id, raw)
            sent[raw] = (topic, reason)

    # Transfers created after the garbage, through every one of the three topics.
    status, inbound = user.transfer("funding", "spot", "USDT", "10")  # requests, operations, events
    assert status == 202, inbound
    status, outbound = user.transfer("spot", "funding", "USDT", "4")  # operations, events
    assert status == 202, outbound
    assert user.wait_terminal(inbound["request_id"])["status"] == "success"
    assert user.wait_terminal(outbound["request_id"])["status"] == "success"
    assert user.balance("USDT") == ("44", "0", "56", "0")

    dead = read_dead_letters(stack, set(sent))
    for raw, (topic, reason) in sent.items():
        headers = dead[raw]
        assert headers["source_topic"] == stack.topic(topic)
        assert reason in headers["reason"], (topic, headers["reason"])
        assert headers["source_partition"].isdigit() and headers["source_offset"].isdigit()

    # Counted: one log line per dead letter, carrying the process's running total.
    for process in ("bridge", "ubscore"):
        expected = sum(1 for topic, _ in sent.values() if CONSUMERS[topic] == process)

        def new_lines(process: str = process, expected: int = expected) -> list[dict] | None:
            lines = dead_letter_log_lines(stack, process)[logged_before[process]:]
            return lines if len(lines) >= expected else None

        lines = wait_until(new_lines, 30, f"{process} to log its dead letters")
        assert {line["topic"] for line in lines} == {stack.topic(t) for t, p in CONSUMERS.items() if p == process}
        assert all(line["reason"] for line in lines)
        totals = [line["dead_letters_total"] for line in lines]
        assert totals == list(range(totals[0], totals[0] + len(totals))), totals
        assert totals[-1] >= expected
