"""Kafka topic names. Every message is keyed by user id."""

TRANSFER_REQUESTS = "internal_transfer.requests"
BALANCE_OPERATIONS = "balance.operations"
BALANCE_EVENTS = "balance.events"
DEAD_LETTERS = "internal_transfer.dead_letters"

ALL = (TRANSFER_REQUESTS, BALANCE_OPERATIONS, BALANCE_EVENTS, DEAD_LETTERS)
