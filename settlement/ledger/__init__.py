"""The funding-ledger port and the adapter chosen by LEDGER_BACKEND."""

from functools import cache

from django.conf import settings

from settlement.ledger.base import FundingLedger


@cache
def get_funding_ledger() -> FundingLedger:
    if settings.LEDGER_BACKEND == "sql":
        from settlement.ledger.sql import SqlFundingLedger

        return SqlFundingLedger()
    if settings.LEDGER_BACKEND == "tigerbeetle":
        from settlement.ledger.tigerbeetle import TigerBeetleFundingLedger

        return TigerBeetleFundingLedger(
            cluster_id=settings.TIGERBEETLE_CLUSTER_ID, addresses=settings.TIGERBEETLE_ADDRESSES
        )
    raise ValueError(f"unknown LEDGER_BACKEND {settings.LEDGER_BACKEND!r} (sql or tigerbeetle)")
