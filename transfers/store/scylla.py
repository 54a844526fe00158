"""Transfer store on ScyllaDB (TRANSFER_STORE=scylla), through django-cassandra-engine.

ScyllaDB is declared in DATABASES as a second database beside the relational
one (ENGINE "django_cassandra_engine"); this adapter runs prepared CQL on that
connection's driver session (transfers/store/scylla_connection.py). It does
not use cqlengine models: conditional updates with `IF status IN (...)`,
serial consistency per statement and write timestamps are plain CQL, and the
schema is the one file schema/internal_transfer.cql. Nothing connects until
the first query, so the module imports, and its unit tests run, without a
server (tests inject a fake session).

Tables (schema/internal_transfer.cql): `transfer` by request id is the source
of truth; `transfer_client_id` claims a client id per user; `transfer_by_user`
is the user's history, newest first; `transfer_in_flight` lists requesting
and pending transfers by when their status last changed, in 16 buckets.

Consistency
-----------
* Every read and every plain write: SCYLLA_CONSISTENCY, default QUORUM
  (LOCAL_QUORUM for a deployment that writes from one datacenter only). Weaker
  levels are refused: reads decide (is this client id taken, which status is
  current, what is stuck), and a quorum read sees every quorum write.
* Lightweight transactions (LWT), which are every write to `transfer` and
  `transfer_client_id`: Paxos at SCYLLA_SERIAL_CONSISTENCY, default SERIAL
  (LOCAL_SERIAL only when a single datacenter ever writes), and their commit
  at SCYLLA_CONSISTENCY.
* After losing a compare-and-set race the record is read again at the serial
  level, which also completes any Paxos round still in progress.

Writes
------
* create: claim the client id (INSERT ... IF NOT EXISTS into
  transfer_client_id; a claim held by another request id raises
  ClientTransferIdTaken with that transfer), write the transfer_in_flight row
  (requesting or pending records), insert the record (INSERT ... IF NOT
  EXISTS), then the transfer_by_user row. Re-running a create that already
  happened is a no-op.
* compare_and_set_status: read the record; if its status is expected and not
  terminal, UPDATE transfer ... IF status IN (expected) AND row_version = <as
  read>, which also increments row_version. Scylla evaluates the condition
  under Paxos, so two workers can never both move a transfer on: the loser gets
  [applied]=false with the current status and version. A loser whose status is
  still expected retries against the new version (CAS_ATTEMPTS at most).
  ScyllaDB supports IN in LWT conditions; the version makes the update apply to
  exactly the row that was read, so the old in-flight row to remove is known.
* The derived tables are then written with USING TIMESTAMP = created_at_ms *
  1000 + row_version: strictly increasing per transfer, so late, repeated or
  reordered writes (a slow worker, a retry, the repair below) can never put an
  older state over a newer one. New in-flight row and history row first, the
  previous in-flight row deleted last.
* Repair: if a process stops between the record and its derived rows, the
  previous transfer_in_flight row stays. list_not_moved_since reads it, reads
  the record, and rewrites the derived rows from the record (or, for a create
  that stopped before its record, finishes the create from the row). The
  record in `transfer` is always the truth; the other tables follow it.
* A write whose outcome is unknown (a timeout) raises; callers retry, and a
  retried create or compare-and-set sees what the first one did.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import secrets
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from transfer_site.shards import EVERY_USER, UserShards
from transfers.domain import IN_FLIGHT, TERMINAL, Direction, EventKind, TimelineEvent, TransferRecord, TransferStatus
from transfers.store import scylla_connection
from transfers.store.base import (
    ACCEPTED,
    Activity,
    ClientTransferIdTaken,
    InFlightCounts,
    InvalidCursor,
    TransferPage,
    TransferStore,
)
from transfers.store.scylla_schema import (  # re-exported for test suites
    create_test_keyspace,
    drop_keyspace,
    scylla_test_keyspace,
    truncate_tables,
)

__all__ = [
    "RequestIdTaken",
    "ScyllaContention",
    "ScyllaTransferStore",
    "create_test_keyspace",
    "decode_cursor",
    "drop_keyspace",
    "encode_cursor",
    "event_from_row",
    "in_flight_bucket",
    "next_event_seq",
    "record_from_row",
    "scylla_test_keyspace",
    "truncate_tables",
    "write_timestamp",
]

logger = logging.getLogger(__name__)

IN_FLIGHT_BUCKETS = 16  # fixed: changing it moves rows between buckets (needs a migration)
CAS_ATTEMPTS = 8
GET_MANY_CONCURRENCY = 64
SCAN_FETCH_SIZE = 500
MAX_BIGINT = 2**63 - 1
_EPOCH = datetime.datetime(1970, 1, 1)  # the driver returns naive UTC datetimes

# --- Statements ----------------------------------------------------------------

# The record's columns, shared by every table (in transfer_client_id, user_id
# and client_transfer_id are the key).
RECORD_COLUMNS = (
    "request_id",
    "user_id",
    "client_transfer_id",
    "asset_id",
    "asset_code",
    "direction",
    "amount",
    "status",
    "error_message",
    "created_at",
    "updated_at",
)
TRANSFER_COLUMNS = (*RECORD_COLUMNS, "from_account", "to_account", "row_version")
IN_FLIGHT_COLUMNS = ("bucket", *RECORD_COLUMNS, "row_version")
EVENT_COLUMNS = ("request_id", "at", "seq", "kind", "detail", "actor", "process")
ACTIVITY_COLUMNS = ("hour", "kind", "bucket", "minute", "request_id", "error_message")
ACTIVITY_PARTITION = "hour = :hour AND kind = :kind AND bucket = :bucket AND minute >= :since"
MINUTE_MS, HOUR_MS = 60_000, 3_600_000
FAILURE_REASONS_SCAN_LIMIT = 10_000  # failed rows read per partition for the top reasons

# Kinds: "read"/"write" run at the consistency level, "lwt" adds the serial
# level, "serial_read" reads at the serial level, "scan" pages.
READ, WRITE, LWT, SERIAL_READ, SCAN = "read", "write", "lwt", "serial_read", "scan"


# CQL is assembled from this module's constants only; every value is a bind marker.
def _insert(table: str, columns: tuple[str, ...], tail: str) -> str:
    names = ", ".join(columns)
    markers = ", ".join(f":{column}" for column in columns)
    return f"INSERT INTO {{ks}}.{table} ({names}) VALUES ({markers}) {tail}"  # noqa: S608


def _select(table: str, columns: tuple[str, ...], where: str) -> str:
    return f"SELECT {', '.join(columns)} FROM {{ks}}.{table} WHERE {where}"  # noqa: S608


def _list_for_user_name(cursor: bool, asset: bool, status: bool) -> str:
    return f"list_for_user:{'c' if cursor else ''}{'a' if asset else ''}{'s' if status else ''}"


def _list_for_user_statement(cursor: bool, asset: bool, status: bool) -> str:
    where = ["user_id = :user_id"]
    if cursor:
        where.append("request_id < :before")
    if asset:
        where.append("asset_id = :asset_id")
    if status:
        where.append("status = :status")
    filtering = " ALLOW FILTERING" if asset or status else ""  # within the user's partition only
    return _select("transfer_by_user", RECORD_COLUMNS, f"{' AND '.join(where)} LIMIT :page_size{filtering}")


# name -> (CQL with {ks} for the keyspace, kind). Named bind markers only.
STATEMENTS: dict[str, tuple[str, str]] = {
    "insert_transfer": (_insert("transfer", TRANSFER_COLUMNS, "IF NOT EXISTS"), LWT),
    "select_transfer": (_select("transfer", TRANSFER_COLUMNS, "request_id = :request_id"), READ),
    # Its own prepared statement (levels are set per prepared statement), so its own text.
    "select_transfer_serial": (
        _select("transfer", TRANSFER_COLUMNS, "request_id = :request_id LIMIT 1"),
        SERIAL_READ,
    ),
    "cas_status": (
        "UPDATE {ks}.transfer SET status = :status, error_message = :error_message, "
        "updated_at = :updated_at, row_version = :row_version WHERE request_id = :request_id "
        "IF status IN :expected AND row_version = :expected_version",
        LWT,
    ),
    "claim_client_id": (_insert("transfer_client_id", RECORD_COLUMNS, "IF NOT EXISTS"), LWT),
    "select_client_id": (
        "SELECT request_id FROM {ks}.transfer_client_id "
        "WHERE user_id = :user_id AND client_transfer_id = :client_transfer_id",
        READ,
    ),
    "upsert_by_user": (_insert("transfer_by_user", RECORD_COLUMNS, "USING TIMESTAMP :write_ts"), WRITE),
    "insert_in_flight": (_insert("transfer_in_flight", IN_FLIGHT_COLUMNS, "USING TIMESTAMP :write_ts"), WRITE),
    "delete_in_flight": (
        "DELETE FROM {ks}.transfer_in_flight USING TIMESTAMP :write_ts "
        "WHERE bucket = :bucket AND updated_at = :updated_at AND request_id = :request_id",
        WRITE,
    ),
    "scan_in_flight": (
        _select("transfer_in_flight", IN_FLIGHT_COLUMNS, "bucket = :bucket AND updated_at < :before"),
        SCAN,
    ),
    # The operations overview's per-minute rows (transfer_activity): plain upserts.
    "upsert_activity": (_insert("transfer_activity", ACTIVITY_COLUMNS, ""), WRITE),
    "count_activity": (
        f"SELECT minute, COUNT(*) AS transfers FROM {{ks}}.transfer_activity WHERE {ACTIVITY_PARTITION} "  # noqa: S608
        "GROUP BY minute",
        READ,
    ),
    "failed_activity": (
        f"SELECT error_message FROM {{ks}}.transfer_activity WHERE {ACTIVITY_PARTITION} LIMIT :page_size",  # noqa: S608
        SCAN,
    ),
    "count_in_flight": (_select("transfer_in_flight", ("status", "updated_at"), "bucket = :bucket LIMIT :page_size"),
                        SCAN),
    # The timeline: plain inserts (an event is never changed), one partition per transfer.
    "insert_event": (_insert("transfer_event", EVENT_COLUMNS, ""), WRITE),
    "select_timeline": (_select("transfer_event", EVENT_COLUMNS, "request_id = :request_id LIMIT :page_size"), READ),
    **{
        _list_for_user_name(c, a, s): (_list_for_user_statement(c, a, s), READ)
        for c in (False, True)
        for a in (False, True)
        for s in (False, True)
    },
}


# --- Errors --------------------------------------------------------------------


class RequestIdTaken(Exception):
    """A different transfer is already stored under this request id."""

    def __init__(self, existing: TransferRecord) -> None:
        super().__init__(f"request id {existing.request_id} is taken by a different transfer")
        self.existing = existing


class ScyllaContention(Exception):
    """A compare-and-set lost CAS_ATTEMPTS races in a row; nothing was changed by this call."""


# --- Mapping -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoredTransfer:
    """A record with its row_version, the counter every status change increments."""

    record: TransferRecord
    row_version: int

    @property
    def write_timestamp(self) -> int:
        return write_timestamp(self.record.created_at_ms, self.row_version)


def write_timestamp(created_at_ms: int, row_version: int) -> int:
    """USING TIMESTAMP of a transfer's derived rows: grows with every change of that transfer."""
    return created_at_ms * 1000 + row_version


def in_flight_bucket(request_id: int) -> int:
    """A fixed hash of the request id into 0..IN_FLIGHT_BUCKETS-1.

    Not `request_id % 16`: a snowflake's low bits are its per-millisecond
    sequence, mostly 0 at low rates. Fibonacci hashing spreads them.
    """
    return ((request_id * 0x9E3779B97F4A7C15) & 0xFFFF_FFFF_FFFF_FFFF) >> 60


def timestamp_ms(value: Any) -> int:
    """Milliseconds since the epoch from a CQL timestamp as the driver returns it."""
    if isinstance(value, bool):
        raise TypeError("a timestamp is not a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        delta = value - _EPOCH
        return delta.days * 86_400_000 + delta.seconds * 1000 + (delta.microseconds + 500) // 1000
    raise TypeError(f"not a timestamp: {value!r}")


def row_as_dict(row: Any) -> dict[str, Any]:
    """A driver row (dict_factory, which django-cassandra-engine sets, or a named tuple) as a dict."""
    if isinstance(row, Mapping):
        return dict(row)
    if hasattr(row, "_asdict"):
        return dict(row._asdict())
    raise TypeError(f"unsupported row type {type(row).__name__}")


def record_from_row(row: Any) -> TransferRecord:
    """A TransferRecord from a row of transfer, transfer_by_user, transfer_in_flight or transfer_client_id."""
    values = row_as_dict(row)
    amount = values["amount"]
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"amount is not an integer: {amount!r}")
    return TransferRecord(
        request_id=int(values["request_id"]),
        user_id=int(values["user_id"]),
        asset_id=int(values["asset_id"]),
        asset_code=values["asset_code"],
        direction=Direction(values["direction"]),
        amount=amount,
        status=TransferStatus(values["status"]),
        client_transfer_id=values["client_transfer_id"],
        error_message=values["error_message"],
        created_at_ms=timestamp_ms(values["created_at"]),
        updated_at_ms=timestamp_ms(values["updated_at"]),
    )


def stored_from_row(row: Any) -> StoredTransfer:
    values = row_as_dict(row)
    version = values.get("row_version")
    return StoredTransfer(record_from_row(values), int(version) if version is not None else 1)


def record_params(record: TransferRecord) -> dict[str, Any]:
    """Bind values of the record columns. Times are bound as integer milliseconds."""
    return {
        "request_id": record.request_id,
        "user_id": record.user_id,
        "client_transfer_id": record.client_transfer_id,
        "asset_id": record.asset_id,
        "asset_code": record.asset_code,
        "direction": record.direction.value,
        "amount": record.amount,
        "status": record.status.value,
        "error_message": record.error_message,
        "created_at": record.created_at_ms,
        "updated_at": record.updated_at_ms,
    }


def transfer_params(stored: StoredTransfer) -> dict[str, Any]:
    record = stored.record
    return {
        **record_params(record),
        "from_account": record.from_account.value,
        "to_account": record.to_account.value,
        "row_version": stored.row_version,
    }


def in_flight_params(stored: StoredTransfer) -> dict[str, Any]:
    return {
        **record_params(stored.record),
        "bucket": in_flight_bucket(stored.record.request_id),
        "row_version": stored.row_version,
        "write_ts": stored.write_timestamp,
    }


def activity_params(record: TransferRecord) -> list[dict[str, Any]]:
    """The transfer_activity rows of a record: accepted, and finished once it is."""
    bucket = in_flight_bucket(record.request_id)
    moments = [(ACCEPTED, record.created_at_ms, None)]
    if record.status in TERMINAL:
        moments.append((record.status.value, record.updated_at_ms, record.error_message))
    return [
        {"hour": at_ms - at_ms % HOUR_MS, "kind": kind, "bucket": bucket, "minute": at_ms - at_ms % MINUTE_MS,
         "request_id": record.request_id, "error_message": error_message}
        for kind, at_ms, error_message in moments
    ]


def lwt_outcome(result: Any) -> tuple[bool, dict[str, Any] | None]:
    """([applied], the row the server returned beside it) of a conditional statement.

    On [applied]=false the row holds the current values (for IF NOT EXISTS the
    whole existing row, for IF conditions the columns named in them).
    """
    row = next(iter(result), None)
    if row is None:
        raise RuntimeError("a conditional statement returned no row")
    values = row_as_dict(row)
    if "[applied]" in values:
        applied = values.pop("[applied]")
    elif "applied" in values:  # named tuples rename "[applied]"
        applied = values.pop("applied")
    else:
        raise RuntimeError("not the result of a conditional statement (no [applied] column)")
    return bool(applied), values


def encode_cursor(request_id: int) -> str:
    """The cursor after a page: the request id of its last item, in decimal (as the ORM store)."""
    return str(request_id)


def decode_cursor(cursor: str) -> int:
    """The request id a cursor stands for; InvalidCursor for anything this store never issued."""
    if (
        not isinstance(cursor, str)
        or not 1 <= len(cursor) <= 19
        or not cursor.isascii()
        or not cursor.isdigit()
        or int(cursor) > MAX_BIGINT
    ):
        raise InvalidCursor("cursor is not valid")
    return int(cursor)


def _same_transfer(a: TransferRecord, b: TransferRecord) -> bool:
    """Whether two records are one create (everything a status change leaves alone)."""
    return (a.request_id, a.user_id, a.client_transfer_id, a.asset_id, a.asset_code, a.direction, a.amount,
            a.created_at_ms) == (b.request_id, b.user_id, b.client_transfer_id, b.asset_id, b.asset_code,
                                 b.direction, b.amount, b.created_at_ms)


def _check_new_record(record: TransferRecord) -> None:
    for name in ("request_id", "user_id", "asset_id"):
        value = getattr(record, name)
        if isinstance(value, bool) or not isinstance(value, int) or not -MAX_BIGINT - 1 <= value <= MAX_BIGINT:
            raise ValueError(f"{name} must be a 64-bit integer, got {value!r}")
    if isinstance(record.amount, bool) or not isinstance(record.amount, int) or record.amount <= 0:
        raise ValueError(f"amount must be a positive integer of minor units, got {record.amount!r}")
    Direction(record.direction)
    TransferStatus(record.status)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _first_row(result: Any) -> Any:
    return next(iter(result), None)


_seq_lock = threading.Lock()
_last_seq = 0


def next_event_seq() -> int:
    """The clustering `seq` of a new timeline event.

    Microseconds since the epoch times 1024 plus 10 random bits: increasing
    within a process (so a batch keeps its order), and two processes writing
    the same transfer in the same microsecond differ in the random bits.
    """
    global _last_seq
    candidate = (time.time_ns() // 1000) * 1024 + secrets.randbelow(1024)
    with _seq_lock:
        _last_seq = max(candidate, _last_seq + 1)
        return _last_seq


def event_from_row(row: Any) -> TimelineEvent:
    values = row_as_dict(row)
    return TimelineEvent(
        request_id=int(values["request_id"]),
        kind=EventKind(values["kind"]),
        at_ms=timestamp_ms(values["at"]),
        detail=dict(values["detail"] or {}),
        actor=values["actor"] or "",
        process=values["process"] or "",
    )


# --- The adapter ---------------------------------------------------------------


class ScyllaTransferStore(TransferStore):
    """The transfer-store port on ScyllaDB.

    All arguments are optional: the session comes from the django-cassandra-
    engine connection on first use, the keyspace from SCYLLA_KEYSPACE, the
    levels from SCYLLA_CONSISTENCY and SCYLLA_SERIAL_CONSISTENCY. Thread-safe.
    """

    def __init__(
        self,
        session: Any = None,
        keyspace: str | None = None,
        consistency: str | None = None,
        serial_consistency: str | None = None,
    ) -> None:
        self.keyspace = scylla_connection.keyspace_name(keyspace)
        self._consistency = scylla_connection.consistency_level(consistency)
        self._serial_consistency = scylla_connection.serial_consistency_level(serial_consistency)
        self._session_obj = session
        self._prepared: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- plumbing ------------------------------------------------------------

    @property
    def session(self) -> Any:
        if self._session_obj is None:
            with self._lock:
                if self._session_obj is None:
                    self._session_obj = scylla_connection.get_session()
        return self._session_obj

    def statement(self, name: str) -> Any:
        """The prepared statement `name`, with its consistency levels set."""
        prepared = self._prepared.get(name)
        if prepared is None:
            cql, kind = STATEMENTS[name]
            prepared = self.session.prepare(cql.format(ks=self.keyspace))
            prepared.consistency_level = self._serial_consistency if kind == SERIAL_READ else self._consistency
            if kind == LWT:
                prepared.serial_consistency_level = self._serial_consistency
            if kind == SCAN:
                prepared.fetch_size = SCAN_FETCH_SIZE
            with self._lock:
                prepared = self._prepared.setdefault(name, prepared)
        return prepared

    def _execute(self, name: str, params: dict[str, Any]) -> Any:
        return self.session.execute(self.statement(name), params)

    def _execute_async(self, name: str, params: dict[str, Any]) -> Any:
        return self.session.execute_async(self.statement(name), params)

    # --- reads -----------------------------------------------------------------

    def _read(self, request_id: int, *, serial: bool = False) -> StoredTransfer | None:
        name = "select_transfer_serial" if serial else "select_transfer"
        row = _first_row(self._execute(name, {"request_id": request_id}))
        return stored_from_row(row) if row is not None else None

    def _read_many(self, request_ids: Iterable[int]) -> dict[int, StoredTransfer]:
        unique = list(dict.fromkeys(int(request_id) for request_id in request_ids))
        found: dict[int, StoredTransfer] = {}
        for start in range(0, len(unique), GET_MANY_CONCURRENCY):
            futures = [
                (request_id, self._execute_async("select_transfer", {"request_id": request_id}))
                for request_id in unique[start : start + GET_MANY_CONCURRENCY]
            ]
            for request_id, future in futures:
                row = _first_row(future.result())
                if row is not None:
                    found[request_id] = stored_from_row(row)
        return found

    def is_unavailable(self, error: BaseException) -> bool:
        from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
        from cassandra.cluster import NoHostAvailable

        return isinstance(error, NoHostAvailable | OperationTimedOut | Unavailable | ReadTimeout | WriteTimeout)

    def get(self, request_id: int) -> TransferRecord | None:
        if not 0 <= int(request_id) <= MAX_BIGINT:  # not a request id (bigint); the driver would refuse it
            return None
        stored = self._read(int(request_id))
        return stored.record if stored else None

    def get_many(self, request_ids: Iterable[int]) -> dict[int, TransferRecord]:
        return {request_id: stored.record for request_id, stored in self._read_many(request_ids).items()}

    def get_by_client_transfer_id(self, user_id: int, client_transfer_id: str) -> TransferRecord | None:
        claim = _first_row(
            self._execute("select_client_id", {"user_id": user_id, "client_transfer_id": client_transfer_id})
        )
        if claim is None:
            return None
        return self.get(row_as_dict(claim)["request_id"])

    # --- create ----------------------------------------------------------------

    def create(self, record: TransferRecord, events: Sequence[TimelineEvent] = ()) -> None:
        _check_new_record(record)
        if record.client_transfer_id is not None:
            applied, current = lwt_outcome(self._execute("claim_client_id", record_params(record)))
            if not applied:
                if not current or current.get("request_id") is None:
                    raise RuntimeError("client id claim refused without the claiming row")
                if current["request_id"] != record.request_id:
                    raise ClientTransferIdTaken(self._record_of_claim(current))
                # Our own claim: this create is being re-run; finish it.
        self._store(StoredTransfer(record, row_version=1))
        # Another table, so another write: the record is stored whatever becomes of it.
        try:
            self.append_events(events)
        except Exception:  # the timeline must never fail a transfer
            logger.warning("timeline events not recorded", exc_info=True, extra={"events": len(events)})

    def _record_of_claim(self, claim: dict[str, Any]) -> TransferRecord:
        """The transfer holding a client id; finishes its create if that stopped after the claim."""
        claimed = record_from_row(claim)
        stored = self._read(claimed.request_id)
        if stored is None:
            # Its create stopped after the claim, or is still running: finish it
            # (both writers write the same record, so either order is fine).
            logger.warning(
                "completing the create of the transfer holding this client id",
                extra={"request_id": str(claimed.request_id), "user_id": claimed.user_id},
            )
            stored = self._store(StoredTransfer(claimed, row_version=1))
        return stored.record

    def _store(self, new: StoredTransfer) -> StoredTransfer:
        """Write a new record: its in-flight row, the record (LWT), its history row. Idempotent."""
        if new.record.status in IN_FLIGHT:
            # First, so a create that stops before the record is found by the re-drive scan.
            self._execute("insert_in_flight", in_flight_params(new))
        applied, current = lwt_outcome(self._execute("insert_transfer", transfer_params(new)))
        if applied:
            self._write_derived(new, previous=None, in_flight_row=False)  # that row is written already
            return new
        existing = stored_from_row(current)
        if not _same_transfer(existing.record, new.record):
            raise RequestIdTaken(existing.record)
        # This create already happened; the record may have moved on since.
        self._write_derived(existing, previous=None)
        return existing

    # --- compare and set -------------------------------------------------------

    def compare_and_set_status(
        self,
        request_id: int,
        expected: Collection[TransferStatus],
        new_status: TransferStatus,
        error_message: str | None = None,
        now_ms: int | None = None,
    ) -> bool:
        new_status = TransferStatus(new_status)
        # Terminal is final whatever the caller names: only in-flight statuses move.
        allowed = sorted({TransferStatus(status) for status in expected} & IN_FLIGHT)
        if not allowed:
            return False
        updated_at_ms = now_ms if now_ms is not None else _now_ms()
        current = self._read(int(request_id))
        for _ in range(CAS_ATTEMPTS):
            if current is None or current.record.status not in allowed:
                return False
            new = StoredTransfer(
                dataclasses.replace(
                    current.record, status=new_status, error_message=error_message, updated_at_ms=updated_at_ms
                ),
                row_version=current.row_version + 1,
            )
            applied, returned = lwt_outcome(
                self._execute(
                    "cas_status",
                    {
                        "request_id": current.record.request_id,
                        "status": new_status.value,
                        "error_message": error_message,
                        "updated_at": updated_at_ms,
                        "row_version": new.row_version,
                        "expected": [status.value for status in allowed],
                        "expected_version": current.row_version,
                    },
                )
            )
            if applied:
                self._write_derived(new, previous=current)
                return True
            # Lost a race. The server returned the current status and version.
            status = (returned or {}).get("status")
            if status is None or TransferStatus(status) not in allowed:
                return False
            current = self._read(current.record.request_id, serial=True)
        raise ScyllaContention(f"transfer {request_id}: compare-and-set lost {CAS_ATTEMPTS} races")

    def _write_derived(
        self, new: StoredTransfer, previous: StoredTransfer | None, *, in_flight_row: bool = True
    ) -> bool:
        """Bring transfer_in_flight, transfer_by_user and transfer_activity to `new`.

        `previous` is the state whose in-flight row to remove; `in_flight_row`
        False when the row of `new` is known to be written. Failures are
        logged, not raised: the record is already written, and the previous
        in-flight row (deleted last) makes the re-drive scan repair the rest.
        """
        write_ts = new.write_timestamp
        record = new.record
        try:
            futures = []
            if record.status in IN_FLIGHT and in_flight_row:
                futures.append(self._execute_async("insert_in_flight", in_flight_params(new)))
            futures.append(self._execute_async("upsert_by_user", {**record_params(record), "write_ts": write_ts}))
            futures.extend(self._execute_async("upsert_activity", params) for params in activity_params(record))
            for future in futures:
                future.result()
            if previous is not None and previous.record.status in IN_FLIGHT:
                same_row = record.status in IN_FLIGHT and previous.record.updated_at_ms == record.updated_at_ms
                if not same_row:  # (a same-row delete would win the timestamp tie against the insert)
                    self._execute(
                        "delete_in_flight",
                        {
                            "bucket": in_flight_bucket(record.request_id),
                            "updated_at": previous.record.updated_at_ms,
                            "request_id": record.request_id,
                            "write_ts": write_ts,
                        },
                    )
        except Exception:
            logger.exception(
                "derived rows of a transfer not written; the re-drive scan repairs them",
                extra={"request_id": str(record.request_id), "user_id": record.user_id},
            )
            return False
        return True

    # --- timeline --------------------------------------------------------------

    def append_events(self, events: Sequence[TimelineEvent]) -> None:
        # Concurrent plain inserts: one partition per transfer, so no batch statement.
        futures = [
            self._execute_async(
                "insert_event",
                {
                    "request_id": event.request_id,
                    "at": event.at_ms,
                    "seq": next_event_seq(),
                    "kind": EventKind(event.kind).value,
                    "detail": {str(key): str(value) for key, value in event.detail.items()},
                    "actor": event.actor,
                    "process": event.process,
                },
            )
            for event in events
        ]
        for future in futures:
            future.result()

    def timeline(self, request_id: int, limit: int = 1000) -> list[TimelineEvent]:
        if limit <= 0:
            return []
        rows = self._execute("select_timeline", {"request_id": int(request_id), "page_size": limit})
        return [event_from_row(row) for row in rows]

    # --- lists -----------------------------------------------------------------

    def list_for_user(
        self,
        user_id: int,
        *,
        asset_id: int | None = None,
        statuses: Collection[TransferStatus] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TransferPage:
        before = decode_cursor(cursor) if cursor is not None else None
        wanted = None if statuses is None else sorted({TransferStatus(status).value for status in statuses})
        if wanted is not None and len(wanted) == len(TransferStatus):
            wanted = None  # every status: no filter
        if limit <= 0 or wanted == []:
            return TransferPage(items=[], next_cursor=None)
        params: dict[str, Any] = {"user_id": user_id, "page_size": limit + 1}
        if before is not None:
            params["before"] = before
        if asset_id is not None:
            params["asset_id"] = asset_id
        name = _list_for_user_name(before is not None, asset_id is not None, wanted is not None)
        if wanted is None:
            found = [record_from_row(row) for row in self._execute(name, params)]
        else:
            # One query per status, at once, merged newest first: `status IN (...)` on a regular column
            # is refused by Cassandra before 5.0. Each brings at most limit + 1 rows, so the newest
            # limit + 1 of the union are among them.
            futures = [self._execute_async(name, {**params, "status": status}) for status in wanted]
            found = [record_from_row(row) for future in futures for row in future.result()]
            found.sort(key=lambda record: record.request_id, reverse=True)
        items = found[:limit]
        has_more = len(found) > limit
        return TransferPage(items=items, next_cursor=encode_cursor(items[-1].request_id) if has_more else None)

    def list_not_moved_since(
        self, statuses: Collection[TransferStatus], updated_before_ms: int, limit: int,
        users: UserShards = EVERY_USER,
    ) -> list[TransferRecord]:
        # Only in-flight transfers can be stuck; terminal ones are never listed.
        wanted = {TransferStatus(status) for status in statuses} & IN_FLIGHT
        if not wanted or limit <= 0 or not users.owned:
            return []
        entries = sorted(
            self._scan_in_flight(wanted, updated_before_ms, limit, users),
            key=lambda entry: (entry.record.updated_at_ms, entry.record.request_id),
        )
        stuck: dict[int, TransferRecord] = {}
        chunk_size = max(limit, GET_MANY_CONCURRENCY)
        # Oldest rows first, checked against their records a chunk at a time,
        # until `limit` transfers are found stuck.
        for start in range(0, len(entries), chunk_size):
            chunk = entries[start : start + chunk_size]
            records = self._read_many(entry.record.request_id for entry in chunk)
            for entry in chunk:
                current = records.get(entry.record.request_id)
                if current is None:
                    current = self._finish_create(entry)
                    if current is None:
                        continue
                    records[entry.record.request_id] = current
                self._check_in_flight_row(entry, current)
                if current.record.status in wanted and current.record.updated_at_ms < updated_before_ms:
                    stuck[current.record.request_id] = current.record
            if len(stuck) >= limit:
                break
        ordered = sorted(stuck.values(), key=lambda record: (record.updated_at_ms, record.request_id))
        return ordered[:limit]

    # --- the operations overview --------------------------------------------------

    def activity_since(self, since_ms: int) -> Activity:
        partitions = [
            (hour, kind, bucket)
            for hour in range(since_ms - since_ms % HOUR_MS, _now_ms() + 1, HOUR_MS)
            for kind in (ACCEPTED, TransferStatus.SUCCESS.value, TransferStatus.FAILED.value)
            for bucket in range(IN_FLIGHT_BUCKETS)
        ]
        counts = [
            (kind, self._execute_async("count_activity", {"hour": hour, "kind": kind, "bucket": bucket,
                                                          "since": since_ms}))
            for hour, kind, bucket in partitions
        ]
        failures = [
            self._execute_async("failed_activity", {"hour": hour, "kind": kind, "bucket": bucket, "since": since_ms,
                                                    "page_size": FAILURE_REASONS_SCAN_LIMIT})
            for hour, kind, bucket in partitions
            if kind == TransferStatus.FAILED.value
        ]
        per_minute: dict[tuple[int, str], int] = {}
        for kind, future in counts:
            for row in future.result():
                values = row_as_dict(row)
                key = (timestamp_ms(values["minute"]), kind)
                per_minute[key] = per_minute.get(key, 0) + values["transfers"]
        reasons: dict[str, int] = {}
        for future in failures:
            for row in future.result():
                reason = row_as_dict(row)["error_message"] or ""
                reasons[reason] = reasons.get(reason, 0) + 1
        return Activity(per_minute, reasons)

    def count_in_flight(self, stuck_before_ms: int, limit: int) -> InFlightCounts:
        # transfer_in_flight holds a row per in-flight transfer (a stale row left by an interrupted
        # change is counted until the re-drive scan repairs it): at most `limit` rows in all.
        per_bucket = max(1, -(-limit // IN_FLIGHT_BUCKETS))
        futures = [self._execute_async("count_in_flight", {"bucket": bucket, "page_size": per_bucket})
                   for bucket in range(IN_FLIGHT_BUCKETS)]
        in_flight: dict[TransferStatus, int] = {}
        stuck: dict[TransferStatus, int] = {}
        complete = True
        for future in futures:
            rows = [row_as_dict(row) for row in future.result()]
            complete = complete and len(rows) < per_bucket
            for values in rows:
                status = TransferStatus(values["status"])
                in_flight[status] = in_flight.get(status, 0) + 1
                if timestamp_ms(values["updated_at"]) < stuck_before_ms:
                    stuck[status] = stuck.get(status, 0) + 1
        return InFlightCounts(in_flight, stuck, complete)

    def _check_in_flight_row(self, entry: StoredTransfer, current: StoredTransfer) -> None:
        """Repair the derived rows of a transfer whose in-flight row the scan read.

        A row of another version is stale: it is replaced from the record. A
        current row still gets its history row rewritten, which a create that
        stopped after its record may have missed (a same-version write: no-op
        otherwise).
        """
        stale = (entry.row_version, entry.record.status, entry.record.updated_at_ms) != (
            current.row_version, current.record.status, current.record.updated_at_ms)
        if stale:
            logger.info("repairing the derived rows of a transfer",
                        extra={"request_id": str(current.record.request_id), "user_id": current.record.user_id})
            self._write_derived(current, previous=entry)
        else:
            self._write_derived(current, previous=None, in_flight_row=False)

    def _scan_in_flight(
        self, wanted: set[TransferStatus], updated_before_ms: int, limit: int, users: UserShards = EVERY_USER
    ) -> Iterator[StoredTransfer]:
        """The oldest `limit` in-flight rows of each bucket with a wanted status and one of `users`."""
        wanted_values = {status.value for status in wanted}
        futures = [
            self._execute_async("scan_in_flight", {"bucket": bucket, "before": updated_before_ms})
            for bucket in range(IN_FLIGHT_BUCKETS)
        ]
        for future in futures:
            taken = 0
            for row in future.result():  # further pages are fetched as the rows are read
                values = row_as_dict(row)
                if values["status"] not in wanted_values or not users.owns(values["user_id"]):
                    continue
                yield stored_from_row(values)
                taken += 1
                if taken >= limit:
                    break

    def _finish_create(self, entry: StoredTransfer) -> StoredTransfer | None:
        """An in-flight row without its record: a create stopped in between. Finish it."""
        if entry.row_version != 1:
            logger.error("in-flight row of a later version has no record", extra={
                "request_id": str(entry.record.request_id)})
            return None
        logger.warning("completing a transfer whose create stopped before its record was written",
                       extra={"request_id": str(entry.record.request_id), "user_id": entry.record.user_id})
        try:
            return self._store(entry)
        except Exception:
            logger.exception("could not complete an interrupted create",
                             extra={"request_id": str(entry.record.request_id)})
            return None
