"""Reading an asset on the transfer request path."""

from __future__ import annotations

from django.db import connection

from transfers.models import Asset

_FIELDS = ("id", "code", "decimals", "maximum_transfer_minor", "transfers_enabled")
_sql: dict[str, str] = {}


def asset_by_code(code: object) -> Asset | None:
    """The asset as it is now, or None: read on every request, since it may have been disabled a moment ago.

    One plain SELECT written once (the query `Asset.objects.filter(code=...)` makes, without the ORM
    building it again for every transfer request).
    """
    if not isinstance(code, str):
        return None
    sql = _sql.get(connection.vendor)
    if sql is None:
        quote = connection.ops.quote_name
        columns = ", ".join(quote(Asset._meta.get_field(name).column) for name in _FIELDS)
        sql = _sql[connection.vendor] = (
            f"SELECT {columns} FROM {quote(Asset._meta.db_table)} "  # noqa: S608 - names from the model
            f"WHERE {quote(Asset._meta.get_field('code').column)} = %s"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, (code,))
        row = cursor.fetchone()
    if row is None:
        return None
    asset_id, asset_code, decimals, maximum, enabled = row
    return Asset(id=asset_id, code=asset_code, decimals=decimals, maximum_transfer_minor=maximum,
                 transfers_enabled=bool(enabled))


_decimals_cache: dict[int, int] = {}


def decimals_of(asset_id: int) -> int:
    """An asset's decimals, kept per process: they never change once the asset exists (amounts depend on them).

    Read again when an asset is missing (added since), so answers need no query but the first.
    """
    decimals = _decimals_cache.get(asset_id)
    return decimals if decimals is not None else _reload_decimals()[asset_id]


def _reload_decimals() -> dict[int, int]:
    global _decimals_cache
    _decimals_cache = dict(Asset.objects.values_list("id", "decimals"))  # replaced whole: safe across threads
    return _decimals_cache
