"""Hot reads as SQL the ORM compiles once per query shape, then runs with new values.

Building a queryset's SQL (Django's compiler: joins, lookups, quoting) costs
more CPU than the database spends answering a primary-key read. On the paths
that run for every transfer -- the ledger's reads in each create_transfers,
the store's reads of each settlement batch, the API key of each request --
the SQL text is built by the ORM the first time a shape is seen and reused.
The values passed here must be the ones the ORM bound, in its order: that is
checked when the shape is compiled, so a Django that orders them differently
fails loudly instead of binding a value to the wrong column.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence

from django.db import transaction

_COMPILED: dict[tuple, str] = {}
_LOCK = threading.Lock()


def rows(using: str, shape: Hashable, build: Callable[[], object], params: Sequence[object]) -> list[tuple]:
    """The rows of `build()`'s query (a values_list queryset) run with `params`.

    `shape` names the query and everything that changes its text (e.g. the
    length of an IN list); `build` is called only the first time.
    """
    key = (using, shape)
    sql = _COMPILED.get(key)
    if sql is None:
        sql, orm_params = build().query.get_compiler(using=using).as_sql()
        if list(orm_params) != list(params):
            raise AssertionError(f"the ORM bound {orm_params!r} for {shape!r}, not {list(params)!r}")
        with _LOCK:
            _COMPILED[key] = sql
    with transaction.get_connection(using).cursor() as cursor:
        cursor.execute(sql, list(params))
        return cursor.fetchall()


def compiled(using: str, shape: Hashable) -> str | None:
    """The SQL text compiled for a shape, if any (for tests)."""
    return _COMPILED.get((using, shape))
