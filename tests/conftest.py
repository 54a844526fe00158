"""Session-wide set-up shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def scylla_store_keyspace() -> Iterator[str | None]:
    """With TRANSFER_STORE=scylla, the in-process tests get a private keyspace, dropped afterwards.

    The service's own keyspace (SCYLLA_KEYSPACE) is never touched by a test run;
    end-to-end stacks make keyspaces of their own (tests/e2e/stack.py).
    """
    from django.conf import settings

    if settings.TRANSFER_STORE != "scylla":
        yield None
        return
    from transfers.store import get_transfer_store
    from transfers.store.scylla_schema import create_test_keyspace, drop_keyspace

    name = create_test_keyspace()
    service_keyspace = settings.SCYLLA_KEYSPACE
    settings.SCYLLA_KEYSPACE = name
    get_transfer_store.cache_clear()
    try:
        yield name
    finally:
        settings.SCYLLA_KEYSPACE = service_keyspace
        get_transfer_store.cache_clear()
        drop_keyspace(name)
