"""Fixtures of the webhook tests: the API tests' user and clients, and a receiver on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.api.conftest import anonymous_client, api_client, api_key, bus, other_client, other_user_id, user_id  # noqa: F401
from tests.webhooks.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def allow_private(settings) -> Callable[[], None]:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_REQUIRE_HTTPS = False
    return lambda: None
