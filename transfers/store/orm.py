"""Transfer store on the Django ORM (SQLite, PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q, Sum

from transfer_site import compiled_sql
from transfer_site.shards import EVERY_USER, UserShards
from transfers.domain import IN_FLIGHT, TERMINAL, Direction, EventKind, TimelineEvent, TransferRecord, TransferStatus
from transfers.models import Asset, Transfer, TransferEvent
from transfers.snowflake import first_id_at
from transfers.store.base import (
    ACCEPTED,
    Activity,
    ClientTransferIdTaken,
    FinishedDurations,
    InFlightCounts,
    InvalidCursor,
    StatusChange,
    TransferPage,
    TransferStore,
)

_IN_CHUNK = 500  # ids per IN (...): far below every backend's parameter limit


class OrmTransferStore(TransferStore):
    def create(self, record: TransferRecord, events: Sequence[TimelineEvent] = ()) -> None:
        # The INSERT Transfer.objects.create would make, without building it for every request,
        # and the timeline's in the same transaction: one commit per accepted transfer.
        params = (
            record.request_id, record.user_id, record.client_transfer_id, record.asset_id, record.direction.value,
            record.amount, record.status.value, record.error_message, record.created_at_ms, record.updated_at_ms,
        )
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_sql().insert_transfer, params)
                if events:
                    cursor.executemany(_sql().insert_event, _event_rows(events))
        except IntegrityError:
            if record.client_transfer_id is not None:
                existing = self.get_by_client_transfer_id(record.user_id, record.client_transfer_id)
                if existing is not None:
                    raise ClientTransferIdTaken(existing) from None
            raise

    def get(self, request_id: int) -> TransferRecord | None:
        rows = _record_values(Transfer.objects.filter(request_id=request_id))
        return _values_to_record(rows[0]) if rows else None

    def get_many(self, request_ids: Iterable[int]) -> dict[int, TransferRecord]:
        # Plain tuples, not model instances: this is the saga's read of every batch.
        ids = list(dict.fromkeys(request_ids))  # the ORM binds each id of an IN list once
        records: dict[int, TransferRecord] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]

            def build(chunk=chunk):
                return Transfer.objects.filter(request_id__in=chunk).values_list(*_RECORD_FIELDS)

            for values in compiled_sql.rows(connection.alias, ("store get_many", len(chunk)), build, chunk):
                records[values[0]] = _values_to_record(values)
        return records

    def get_by_client_transfer_id(self, user_id: int, client_transfer_id: str) -> TransferRecord | None:
        rows = _record_values(Transfer.objects.filter(user_id=user_id, client_transfer_id=client_transfer_id))
        return _values_to_record(rows[0]) if rows else None

    def compare_and_set_status(
        self,
        request_id: int,
        expected: Collection[TransferStatus],
        new_status: TransferStatus,
        error_message: str | None = None,
        now_ms: int | None = None,
    ) -> bool:
        movable = sorted({status.value for status in expected if not status.is_terminal})  # terminal is final
        if not movable:
            return False
        updated_at_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        # UPDATE ... WHERE request_id = %s AND status IN (...): the compare-and-set is the database's.
        with connection.cursor() as cursor:
            cursor.execute(
                _sql().compare_and_set(len(movable)),
                (new_status.value, error_message, updated_at_ms, request_id, *movable),
            )
            return cursor.rowcount == 1

    def compare_and_set_many(
        self, changes: Sequence[StatusChange], now_ms: int | None = None
    ) -> dict[int, TransferStatus]:
        """All the changes in one transaction: the rows are read locked, then updated a group at a time.

        The statuses are read under the transaction's lock (SELECT ... FOR
        UPDATE on PostgreSQL; SQLite's IMMEDIATE transaction holds the write
        lock), so each change is a compare-and-set against the status no one
        else can move meanwhile, and says exactly which status it moved from.
        """
        if not changes:
            return {}
        updated_at_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        ids = list(dict.fromkeys(int(change.request_id) for change in changes))
        moved: dict[int, TransferStatus] = {}
        with transaction.atomic():
            current: dict[int, str] = {}
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]

                def build(chunk=chunk):
                    return Transfer.objects.select_for_update().filter(request_id__in=chunk).values_list(
                        "request_id", "status")

                current.update(compiled_sql.rows(connection.alias, ("store statuses for update", len(chunk)),
                                                 build, chunk))
            final: dict[int, tuple[str, str | None]] = {}
            for change in changes:
                request_id = int(change.request_id)
                status = current.get(request_id)
                if status is None:
                    continue
                status = TransferStatus(status)
                if status.is_terminal or status not in change.expected:  # terminal is final
                    continue
                moved.setdefault(request_id, status)
                current[request_id] = change.new_status.value  # a later change of the same record sees this one
                final[request_id] = (change.new_status.value, change.error_message)
            groups: dict[tuple[str, str | None], list[int]] = {}
            for request_id, outcome in final.items():
                groups.setdefault(outcome, []).append(request_id)
            terminal = [status.value for status in TERMINAL]
            with connection.cursor() as cursor:
                for (new_status, error_message), group in groups.items():
                    for start in range(0, len(group), _IN_CHUNK):
                        chunk = group[start : start + _IN_CHUNK]
                        cursor.execute(_sql().set_status_of_many(len(chunk), len(terminal)),
                                       (new_status, error_message, updated_at_ms, *chunk, *terminal))
        return moved

    def list_for_user(
        self,
        user_id: int,
        *,
        asset_id: int | None = None,
        statuses: Collection[TransferStatus] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TransferPage:
        rows = _rows().filter(user_id=user_id)
        if asset_id is not None:
            rows = rows.filter(asset_id=asset_id)
        if statuses is not None:
            rows = rows.filter(status__in=sorted({TransferStatus(status).value for status in statuses}))
        if cursor is not None:
            rows = rows.filter(request_id__lt=_decode_cursor(cursor))
        page = list(rows.order_by("-request_id")[: limit + 1])
        has_more = len(page) > limit
        items = [_to_record(row) for row in page[:limit]]
        return TransferPage(items=items, next_cursor=str(items[-1].request_id) if has_more else None)

    def list_not_moved_since(
        self, statuses: Collection[TransferStatus], updated_before_ms: int, limit: int,
        users: UserShards = EVERY_USER,
    ) -> list[TransferRecord]:
        # A prepared statement, not a queryset: the relay asks this every RELAY_POLL_MS, mostly for nothing.
        wanted = sorted({TransferStatus(status).value for status in statuses})
        if not wanted or limit <= 0 or not users.owned:
            return []
        shards = () if users.everyone else sorted(users.owned)
        with connection.cursor() as cursor:
            cursor.execute(_sql().not_moved_since(len(wanted), len(shards)),
                           (updated_before_ms, *wanted, *((users.count, *shards) if shards else ()), limit))
            return [_values_to_record(values) for values in cursor.fetchall()]

    # --- timeline ------------------------------------------------------------

    def append_events(self, events: Sequence[TimelineEvent]) -> None:
        if not events:
            return
        with transaction.atomic(), connection.cursor() as cursor:  # one transaction for the whole batch
            cursor.executemany(_sql().insert_event, _event_rows(events))

    def timeline(self, request_id: int, limit: int = 1000) -> list[TimelineEvent]:
        rows = TransferEvent.objects.filter(request_id=request_id).order_by("at_ms", "id")[:limit]
        return [
            TimelineEvent(
                request_id=row.request_id,
                kind=EventKind(row.kind),
                at_ms=row.at_ms,
                detail={str(key): str(value) for key, value in (row.detail or {}).items()},
                actor=row.actor,
                process=row.process,
            )
            for row in rows
        ]

    def is_unavailable(self, error: BaseException) -> bool:
        from django.db import InterfaceError, OperationalError

        return isinstance(error, OperationalError | InterfaceError)

    # --- counts for /metrics -------------------------------------------------

    def count_by_status(self) -> dict[tuple[Direction, int, TransferStatus], int]:
        rows = Transfer.objects.values("direction", "asset_id", "status").annotate(n=Count("request_id"))
        return {
            (Direction(row["direction"]), row["asset_id"], TransferStatus(row["status"])): row["n"] for row in rows
        }

    def finished_durations(
        self, finished_since_ms: int, bounds_ms: Sequence[int]
    ) -> dict[tuple[Direction, TransferStatus], FinishedDurations]:
        # A terminal record's updated_at_ms is when it finished (it never changes
        # again); the (status, updated_at_ms) index finds the window.
        took = F("updated_at_ms") - F("created_at_ms")
        buckets = {f"le_{i}": Count("request_id", filter=Q(took__lte=bound)) for i, bound in enumerate(bounds_ms)}
        rows = (
            Transfer.objects.filter(status__in=[status.value for status in TERMINAL],
                                    updated_at_ms__gte=finished_since_ms)
            .annotate(took=took)
            .values("direction", "status")
            .annotate(n=Count("request_id"), total=Sum("took"), **buckets)
        )
        return {
            (Direction(row["direction"]), TransferStatus(row["status"])): FinishedDurations(
                bucket_counts=[row[f"le_{i}"] for i in range(len(bounds_ms))],
                count=row["n"],
                sum_ms=row["total"] or 0,
            )
            for row in rows
        }

    def activity_since(self, since_ms: int) -> Activity:
        # Each read is a range of an index, bounded by the window, not by the table's size:
        # accepted by the primary key (request ids are time-ordered snowflakes made at
        # creation), finished by (status, updated_at_ms) (a final status never changes again).
        minute = F("created_at_ms") / MINUTE_MS  # integer division on SQLite and PostgreSQL
        per_minute: dict[tuple[int, str], int] = {}
        accepted = (
            Transfer.objects.filter(request_id__gte=first_id_at(since_ms), created_at_ms__gte=since_ms)
            .annotate(minute=minute).values("minute").annotate(n=Count("request_id"))
        )
        for row in accepted:
            per_minute[(row["minute"] * MINUTE_MS, ACCEPTED)] = row["n"]
        finished = (
            Transfer.objects.filter(status__in=[status.value for status in TERMINAL], updated_at_ms__gte=since_ms)
            .annotate(minute=F("updated_at_ms") / MINUTE_MS).values("status", "minute")
            .annotate(n=Count("request_id"))
        )
        for row in finished:
            per_minute[(row["minute"] * MINUTE_MS, row["status"])] = row["n"]
        reasons = (
            Transfer.objects.filter(status=TransferStatus.FAILED.value, updated_at_ms__gte=since_ms)
            .values("error_message").annotate(n=Count("request_id"))
        )
        return Activity(per_minute, {row["error_message"] or "": row["n"] for row in reasons})

    def count_in_flight(self, stuck_before_ms: int, limit: int) -> InFlightCounts:
        in_flight = Q(status__in=[status.value for status in IN_FLIGHT])  # the (status, updated_at_ms) index
        rows = (
            Transfer.objects.filter(in_flight)
            .values("status")
            .annotate(n=Count("request_id"), stuck=Count("request_id", filter=Q(updated_at_ms__lt=stuck_before_ms)))
        )
        counts = {TransferStatus(row["status"]): (row["n"], row["stuck"]) for row in rows}
        return InFlightCounts(
            in_flight={status: n for status, (n, _) in counts.items()},
            stuck={status: stuck for status, (_, stuck) in counts.items()},
        )


MINUTE_MS = 60_000


class _Statements:
    """The store's hot statements, written once per database vendor from the models' tables and columns."""

    def __init__(self) -> None:
        quote = connection.ops.quote_name
        transfer = quote(Transfer._meta.db_table)

        def column(model, name: str) -> str:
            return quote(model._meta.get_field(name).column)

        insert_columns = ("request_id", "user_id", "client_transfer_id", "asset", "direction", "amount", "status",
                          "error_message", "created_at_ms", "updated_at_ms")
        self.insert_transfer = (
            f"INSERT INTO {transfer} ({', '.join(column(Transfer, c) for c in insert_columns)}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(insert_columns))})"
        )
        self._cas = (
            f"UPDATE {transfer} SET {column(Transfer, 'status')} = %s, "  # noqa: S608
            f"{column(Transfer, 'error_message')} = %s, {column(Transfer, 'updated_at_ms')} = %s "
            f"WHERE {column(Transfer, 'request_id')} = %s AND {column(Transfer, 'status')} IN "
        )
        self._status = column(Transfer, "status")
        self._set_status = (
            f"UPDATE {transfer} SET {column(Transfer, 'status')} = %s, "  # noqa: S608
            f"{column(Transfer, 'error_message')} = %s, {column(Transfer, 'updated_at_ms')} = %s "
            f"WHERE {column(Transfer, 'request_id')} IN "
        )
        record_columns = ", ".join(
            [f"t.{column(Transfer, c)}" for c in ("request_id", "user_id", "asset")] + [f"a.{column(Asset, 'code')}"]
            + [f"t.{column(Transfer, c)}" for c in ("direction", "amount", "status", "client_transfer_id",
                                                     "error_message", "created_at_ms", "updated_at_ms")]
        )
        # The (status, updated_at_ms) index answers it: in-flight rows are few, terminal ones are never read.
        self._not_moved_since = (
            f"SELECT {record_columns} FROM {transfer} t "  # noqa: S608
            f"JOIN {quote(Asset._meta.db_table)} a ON a.{column(Asset, 'id')} = t.{column(Transfer, 'asset')} "
            f"WHERE t.{column(Transfer, 'updated_at_ms')} < %s AND t.{column(Transfer, 'status')} IN "
        )
        self._user_id = column(Transfer, "user_id")
        self._not_moved_since_tail = f" ORDER BY t.{column(Transfer, 'updated_at_ms')} LIMIT %s"
        event_columns = ("request_id", "at_ms", "kind", "detail", "actor", "process")
        self.insert_event = (
            f"INSERT INTO {quote(TransferEvent._meta.db_table)} "  # noqa: S608
            f"({', '.join(column(TransferEvent, c) for c in event_columns)}) "
            f"VALUES ({', '.join(['%s'] * len(event_columns))})"
        )

    def compare_and_set(self, statuses: int) -> str:
        return self._cas + "(" + ", ".join(["%s"] * statuses) + ")"

    def set_status_of_many(self, records: int, terminal: int) -> str:
        """Parameters: status, error_message, updated_at_ms, the request ids, then the terminal statuses."""
        return (self._set_status + "(" + ", ".join(["%s"] * records) + f") AND {self._status} NOT IN ("
                + ", ".join(["%s"] * terminal) + ")")

    def not_moved_since(self, statuses: int, shards: int) -> str:
        """With `shards`: only users whose `user_id % count` is one of them (parameters: count, then shards)."""
        of_users = f" AND t.{self._user_id} %% %s IN (" + ", ".join(["%s"] * shards) + ")" if shards else ""
        return (self._not_moved_since + "(" + ", ".join(["%s"] * statuses) + ")" + of_users
                + self._not_moved_since_tail)


_statements: dict[str, _Statements] = {}


def _sql() -> _Statements:
    statements = _statements.get(connection.vendor)
    if statements is None:
        statements = _statements[connection.vendor] = _Statements()
    return statements


def _event_rows(events: Sequence[TimelineEvent]) -> list[tuple]:
    detail_field = TransferEvent._meta.get_field("detail")
    return [
        (
            event.request_id, event.at_ms, event.kind.value,
            detail_field.get_db_prep_save(dict(event.detail), connection), event.actor, event.process,
        )
        for event in events
    ]


def _rows():
    return Transfer.objects.select_related("asset")


_RECORD_FIELDS = (
    "request_id", "user_id", "asset_id", "asset__code", "direction", "amount", "status", "client_transfer_id",
    "error_message", "created_at_ms", "updated_at_ms",
)


def _record_values(queryset) -> list[tuple]:
    return list(queryset.values_list(*_RECORD_FIELDS))


def _values_to_record(values: tuple) -> TransferRecord:
    request_id, user_id, asset_id, asset_code, direction, amount, status, client_id, error, created, updated = values
    return TransferRecord(
        request_id=request_id,
        user_id=user_id,
        asset_id=asset_id,
        asset_code=asset_code,
        direction=Direction(direction),
        amount=amount,
        status=TransferStatus(status),
        client_transfer_id=client_id,
        error_message=error,
        created_at_ms=created,
        updated_at_ms=updated,
    )


def _decode_cursor(cursor: str) -> int:
    # The cursor is the request id of the last item already returned.
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19 or int(cursor) >= 1 << 63:
        raise InvalidCursor("cursor is not valid")
    return int(cursor)


def _to_record(row: Transfer) -> TransferRecord:
    return TransferRecord(
        request_id=row.request_id,
        user_id=row.user_id,
        asset_id=row.asset_id,
        asset_code=row.asset.code,
        direction=Direction(row.direction),
        amount=row.amount,
        status=TransferStatus(row.status),
        client_transfer_id=row.client_transfer_id,
        error_message=row.error_message,
        created_at_ms=row.created_at_ms,
        updated_at_ms=row.updated_at_ms,
    )
