"""Kafka topic and consumer-group names. Every message is keyed by user id.

KAFKA_NAMESPACE (default empty) prefixes every topic and consumer group, so
several stacks (environments, test runs, benchmarks) can share one Kafka
cluster without reading each other's messages or offsets. It is read here,
from the environment, because the names are module constants imported
everywhere; every process of one stack must have the same value.
"""

import os

NAMESPACE = os.environ.get("KAFKA_NAMESPACE", "")

TRANSFER_REQUESTS = NAMESPACE + "internal_transfer.requests"
BALANCE_OPERATIONS = NAMESPACE + "balance.operations"
BALANCE_EVENTS = NAMESPACE + "balance.events"
DEAD_LETTERS = NAMESPACE + "internal_transfer.dead_letters"

ALL = (TRANSFER_REQUESTS, BALANCE_OPERATIONS, BALANCE_EVENTS, DEAD_LETTERS)

# Consumer groups: UBSCore's, and settlement's bridge (its name from SETTLEMENT_CONSUMER_GROUP);
# the relay's copies share users through a group of theirs that never reads a message (transfer_site/shards.py).
UBSCORE_GROUP = NAMESPACE + "ubscore"
RELAY_GROUP = NAMESPACE + "relay"


def consumer_group(name: str) -> str:
    """A consumer group's name inside this stack's namespace."""
    return NAMESPACE + name
