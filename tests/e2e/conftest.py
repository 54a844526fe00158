import itertools
import json
import time

import pytest

from tests.e2e.stack import Stack, wait_until

TERMINAL = ("success", "failed")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("stack"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


_user_ids = itertools.count(int(time.time()) % 100_000 * 1000 + 1)


@pytest.fixture
def user(stack):
    """A fresh user with an API key."""
    user_id = next(_user_ids)
    return User(stack, user_id, stack.create_api_key(user_id))


class User:
    def __init__(self, stack: Stack, user_id: int, api_key: str) -> None:
        self.stack = stack
        self.user_id = user_id
        self.api_key = api_key

    def deposit(self, asset: str, amount: str, to: str) -> None:
        self.stack.deposit(self.user_id, asset, amount, to)

    def transfer(self, source: str, destination: str, asset: str, amount: str, **extra) -> tuple[int, dict]:
        body = {
            "from_account": {"account_type": source, "asset": asset},
            "to_account": {"account_type": destination, "asset": asset},
            "amount": amount,
            **extra,
        }
        return self.stack.http("POST", "/api/v1/user/internal_transfer", self.api_key, body)

    def get_transfer(self, request_id: str) -> tuple[int, dict]:
        return self.stack.http("GET", f"/api/v1/user/internal_transfer/{request_id}", self.api_key)

    def wait_terminal(self, request_id: str, timeout: float = 60) -> dict:
        def terminal():
            status, body = self.get_transfer(request_id)
            assert status == 200, body
            return body if body["status"] in TERMINAL else None

        return wait_until(terminal, timeout, f"transfer {request_id} to finish")

    def balances(self) -> dict[str, dict]:
        status, body = self.stack.http("GET", "/api/v1/user/balances", self.api_key)
        assert status == 200, body
        return {row["asset"]: row for row in body["balances"]}

    def balance(self, asset: str) -> tuple[str, str, str, str]:
        """(funding available, funding frozen, spot available, spot frozen)."""
        row = self.balances()[asset]
        return (row["funding"]["available"], row["funding"]["frozen"], row["spot"]["available"], row["spot"]["frozen"])


def publish_raw(stack: Stack, topic: str, key: int, value: bytes) -> None:
    """Publish to `topic` (a name from transfer_site.topics) in the stack's namespace."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    try:
        producer.send(stack.topic(topic), key=str(key).encode(), value=value).get(timeout=10)
    finally:
        producer.close()


def count_log(stack: Stack, process: str, message: str, request_id: str) -> int:
    return sum(
        1
        for record in stack.log_records(process)
        if record.get("message") == message and record.get("request_id") == request_id
    )


def as_json(value: bytes) -> dict:
    return json.loads(value)
