"""The `funding_ledger` fixture: every contract test runs against every adapter.

* sql: always, on the test database (SQLite by default, PostgreSQL with
  DATABASE_URL=postgres://...). Real transactions, so the adapter's own
  `transaction.atomic()` and row locks are what is exercised.
* tigerbeetle: only when TIGERBEETLE_ADDRESSES names a running server. The
  server keeps its state between runs, so tests use fresh random ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from settlement.ledger.base import FundingLedger

TIGERBEETLE_SKIP_REASON = (
    "TigerBeetle contract tests need a server: set TIGERBEETLE_ADDRESSES=127.0.0.1:3000 "
    "(and TIGERBEETLE_CLUSTER_ID) to run them"
)


@pytest.fixture(params=[pytest.param("sql", marks=pytest.mark.django_db(transaction=True)), "tigerbeetle"])
def funding_ledger(request: pytest.FixtureRequest) -> Iterator[FundingLedger]:
    if request.param == "sql":
        request.getfixturevalue("transactional_db")
        from settlement.ledger.sql import SqlFundingLedger

        ledger: FundingLedger = SqlFundingLedger()
    else:
        addresses = os.environ.get("TIGERBEETLE_ADDRESSES")
        if not addresses:
            pytest.skip(TIGERBEETLE_SKIP_REASON)
        from settlement.ledger.tigerbeetle import TigerBeetleFundingLedger

        ledger = TigerBeetleFundingLedger(
            cluster_id=int(os.environ.get("TIGERBEETLE_CLUSTER_ID", "0")), addresses=addresses
        )
    try:
        yield ledger
    finally:
        ledger.close()
