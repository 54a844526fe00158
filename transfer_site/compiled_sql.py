"""Hot reads as SQL the ORM compiles once per query shape, then runs with new values.

Building a queryset's SQL (Django's compiler: joins, lookups, quoting) costs
more CPU than the database spends answering a primary-key read. On the paths
that run for every transfer -- the ledger's reads in each create_transfers,
the store's reads of each settlement batch, the API key of each request --
the SQL text is built by the ORM the first time a shape is seen and reused.
The values passed here must be the ones the ORM bound, in its order: that is
checked when the shape is compiled, so a Django that orders them differently
fails loudly instead of binding a value to the wrong column. Rows come back as
the ORM would give them: its converters (a datetime from SQLite's text, a
field's from_db_value) are taken from the compiler and applied to each row.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Hashable, Sequence

from django.db import transaction


@dataclasses.dataclass(frozen=True)
class _Compiled:
    sql: str
    # (column position, the converters the ORM would apply to it in order, the column's expression)
    converters: tuple[tuple[int, tuple[Callable, ...], object], ...]


_COMPILED: dict[tuple, _Compiled] = {}
_LOCK = threading.Lock()


def rows(using: str, shape: Hashable, build: Callable[[], object], params: Sequence[object]) -> list[tuple]:
    """The rows of `build()`'s query (a values_list queryset) run with `params`.

    `shape` names the query and everything that changes its text (e.g. the
    length of an IN list); `build` is called only the first time.
    """
    key = (using, shape)
    query = _COMPILED.get(key)
    if query is None:
        query = _compile(using, shape, build, params)
        with _LOCK:
            _COMPILED[key] = query
    connection = transaction.get_connection(using)
    with connection.cursor() as cursor:
        cursor.execute(query.sql, list(params))
        found = cursor.fetchall()
    if not query.converters:
        return found
    converted = []
    for row in found:
        values = list(row)
        for position, converters, expression in query.converters:
            for convert in converters:
                values[position] = convert(values[position], expression, connection)
        converted.append(tuple(values))
    return converted


def _compile(using: str, shape: Hashable, build: Callable[[], object], params: Sequence[object]) -> _Compiled:
    compiler = build().query.get_compiler(using=using)
    sql, orm_params = compiler.as_sql()
    if list(orm_params) != list(params):
        raise AssertionError(f"the ORM bound {orm_params!r} for {shape!r}, not {list(params)!r}")
    # What the compiler's own results_iter applies to the selected columns.
    columns = [selected[0] for selected in compiler.select[: compiler.col_count]]
    converters = tuple(
        (position, tuple(functions), expression)
        for position, (functions, expression) in sorted(compiler.get_converters(columns).items())
    )
    return _Compiled(sql, converters)


def compiled(using: str, shape: Hashable) -> str | None:
    """The SQL text compiled for a shape, if any (for tests)."""
    query = _COMPILED.get((using, shape))
    return query.sql if query else None
