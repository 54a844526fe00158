"""Session-wide set-up shared by every test package."""

from __future__ import annotations

import os
import sys
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


@pytest.fixture(autouse=True)
def empty_scylla_store(request: pytest.FixtureRequest, scylla_store_keyspace: str | None) -> None:
    """Each database test starts with an empty ScyllaDB store, as the ORM store's rolled-back tables do.

    (A TRUNCATE of the five tables takes 0.1-0.2 s on the Cassandra node of `make services`.)
    """
    if scylla_store_keyspace and request.node.get_closest_marker("django_db"):
        from transfers.store.scylla_schema import truncate_tables

        truncate_tables(scylla_store_keyspace)


@pytest.fixture
def orm_transfer_store(settings) -> Iterator[None]:
    """For tests of what only the ORM store offers, whatever the run's TRANSFER_STORE: the Transfer model's
    admin list (with ScyllaDB the store page serves it) and the counts /metrics takes from SQL."""
    from transfers.store import get_transfer_store

    settings.TRANSFER_STORE = "orm"
    get_transfer_store.cache_clear()
    yield
    get_transfer_store.cache_clear()


# --- REQUIRE_SERVERS=1: no test may skip for want of a server ---------------------------------------
#
# CI's production-like pass sets it: every store and bus test must then run on the real servers.
# Only these skips are allowed: TigerBeetle (no server is obtainable on these machines) and a
# demonstration of a third-party bug that runs only on request.
ALLOWED_SKIPS = ("TigerBeetle", "TIGERBEETLE", "demonstrates the stock transport's race")
_disallowed_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and os.environ.get("REQUIRE_SERVERS") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_SKIPS):
            _disallowed_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _disallowed_skips:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if "transfers.store.scylla_connection" in sys.modules:
        # The driver's event-loop thread, left running, logs to closed streams at exit.
        sys.modules["transfers.store.scylla_connection"].close_all()


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _disallowed_skips:
        terminalreporter.section("REQUIRE_SERVERS=1: tests skipped for want of a server", red=True)
        for line in _disallowed_skips:
            terminalreporter.line(line)
