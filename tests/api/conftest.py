"""Fixtures of the API tests: a user with an API key, a client, funding deposits, the bus, the relay."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from settlement.deposits import deposit_to_funding
from transfer_site.bus import InMemoryMessageBus, Outgoing, get_message_bus
from transfers.models import Asset, Transfer
from transfers.relay import TransferRelay
from transfers.services import create_api_key


@pytest.fixture(autouse=True)
def bus() -> InMemoryMessageBus:
    """The in-memory bus the relay publishes to (MESSAGE_BUS=memory), emptied for each test."""
    message_bus = get_message_bus()
    assert isinstance(message_bus, InMemoryMessageBus), "tests/settings.py must set MESSAGE_BUS = \"memory\""
    message_bus.published.clear()
    yield message_bus
    message_bus.published.clear()


@pytest.fixture
def relay(db, bus) -> Callable[[], list[Outgoing]]:
    """relay() runs the outbox relay over what the API stored and returns what it published."""

    def run() -> list[Outgoing]:
        published_before = len(bus.published)
        while TransferRelay(bus=bus).relay_batch():
            pass
        return bus.published[published_before:]

    return run


@pytest.fixture
def user_id() -> int:
    return random.randrange(1, 2**62)


@pytest.fixture
def api_key(db, user_id) -> str:
    return create_api_key(user_id).key


@pytest.fixture
def api_client(api_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key)
    return client


@pytest.fixture
def anonymous_client(db) -> APIClient:
    return APIClient()


@pytest.fixture
def other_user_id(user_id) -> int:
    return user_id + 1


@pytest.fixture
def other_client(db, other_user_id) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=create_api_key(other_user_id).key)
    return client


@pytest.fixture
def deposit(db, user_id) -> Callable[..., None]:
    """deposit("USDT", "100.5") credits the user's funding wallet from outside."""

    def deposit_funding(asset_code: str, amount: str, to_user: int | None = None) -> None:
        asset = Asset.objects.get(code=asset_code)
        minor = int(Decimal(amount).scaleb(asset.decimals))
        deposit_to_funding(to_user or user_id, asset.id, minor, random.randrange(1, 2**62))

    return deposit_funding


@pytest.fixture
def nothing_stored_or_published(db, bus, relay) -> Callable[[], None]:
    """Call at the end of a test: no transfer record was written and nothing was published."""
    count_before = Transfer.objects.count()

    def check() -> None:
        assert Transfer.objects.count() == count_before
        assert relay() == []

    return check


def stored_transfer_count() -> int:
    """How many transfer records the store holds (tests only: a full count, on either store)."""
    from django.conf import settings

    if settings.TRANSFER_STORE == "scylla":
        from transfers.store.scylla_connection import get_session, keyspace_name

        row = get_session().execute(f"SELECT COUNT(*) FROM {keyspace_name()}.transfer").one()
        return row["count"] if isinstance(row, dict) else row[0]
    from transfers.models import Transfer

    return Transfer.objects.count()


def stored_transfer(request_id: int | str):
    """The stored record of a transfer, through the store port."""
    from transfers.store import get_transfer_store

    record = get_transfer_store().get(int(request_id))
    assert record is not None, f"transfer {request_id} is not stored"
    return record
