"""The transfer-store port and the adapter chosen by TRANSFER_STORE."""

from functools import cache

from django.conf import settings

from transfers.store.base import (
    ClientTransferIdTaken,
    InvalidCursor,
    TransferPage,
    TransferStore,
)

__all__ = ["ClientTransferIdTaken", "InvalidCursor", "TransferPage", "TransferStore", "get_transfer_store"]


@cache
def get_transfer_store() -> TransferStore:
    if settings.TRANSFER_STORE == "orm":
        from transfers.store.orm import OrmTransferStore

        return OrmTransferStore()
    if settings.TRANSFER_STORE == "scylla":
        from transfers.store.scylla import ScyllaTransferStore

        return ScyllaTransferStore()
    raise ValueError(f"unknown TRANSFER_STORE {settings.TRANSFER_STORE!r} (orm or scylla)")
