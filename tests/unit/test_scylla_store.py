"""The ScyllaDB store adapter's own logic, without a server.

A fake driver session (FakeScylla) runs the adapter's named statements on
in-memory tables with the semantics the adapter relies on: lightweight
transactions ([applied] plus the current values when refused), write
timestamps with last-write-wins and tombstones winning ties, clustering order,
LIMIT. It refuses a statement it does not know and a bind dict that does not
name exactly the statement's markers (the real driver would silently leave a
missing one unset).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import re
import threading
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings
from django.urls import include, path

from transfers import admin_scylla
from transfers.domain import IN_FLIGHT, Direction, EventKind, TimelineEvent, TransferRecord, TransferStatus
from transfers.snowflake import EPOCH_MS, SnowflakeGenerator
from transfers.store import scylla, scylla_connection, scylla_schema
from transfers.store.base import ClientTransferIdTaken, InvalidCursor
from transfers.store.scylla import (
    IN_FLIGHT_BUCKETS,
    STATEMENTS,
    RequestIdTaken,
    ScyllaContention,
    ScyllaTransferStore,
    StoredTransfer,
    decode_cursor,
    encode_cursor,
    in_flight_bucket,
    lwt_outcome,
    next_event_seq,
    record_from_row,
    record_params,
    timestamp_ms,
    write_timestamp,
)

REQUESTING, PENDING, SUCCESS, FAILED = (
    TransferStatus.REQUESTING,
    TransferStatus.PENDING,
    TransferStatus.SUCCESS,
    TransferStatus.FAILED,
)
KEYSPACE = "internal_transfer"
EPOCH = datetime.datetime(1970, 1, 1)
QUORUM, SERIAL, LOCAL_QUORUM, LOCAL_SERIAL = 4, 8, 6, 9


# --- The fake session ---------------------------------------------------------


class Prepared:
    def __init__(self, name: str, query: str) -> None:
        self.name = name
        self.query_string = query
        self.markers = set(re.findall(r":(\w+)", query))
        self.consistency_level = None
        self.serial_consistency_level = None
        self.fetch_size = None


class Future:
    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        self._result, self._error = result, error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._result


Row = collections.namedtuple("Row", "applied status row_version")  # what named_tuple_factory makes of [applied]


class FakeScylla:
    """The four tables in memory, driven by the adapter's named statements."""

    def __init__(self, keyspace: str = KEYSPACE) -> None:
        self.by_query = {cql.format(ks=keyspace): name for name, (cql, _) in STATEMENTS.items()}
        self.lock = threading.RLock()
        self.transfer: dict[int, dict] = {}
        self.claims: dict[tuple[int, str], dict] = {}
        self.by_user: dict[tuple[int, int], tuple[int, dict]] = {}
        self.in_flight: dict[tuple[int, int, int], tuple[int, dict]] = {}
        self.in_flight_tombstones: dict[tuple[int, int, int], int] = {}
        self.events: dict[tuple[int, int, int], dict] = {}  # (request_id, at, seq) -> row
        self.activity: dict[tuple, dict] = {}  # (hour, kind, bucket, minute, request_id) -> row
        self.calls: list[tuple[str, dict]] = []
        self.prepared: dict[str, Prepared] = {}
        self.ddl: list[str] = []
        self.failures: dict[str, list[BaseException]] = collections.defaultdict(list)
        self.hooks: dict[str, list] = collections.defaultdict(list)

    # driver surface
    def prepare(self, query: str) -> Prepared:
        name = self.by_query[query]  # KeyError: not one of the adapter's statements
        prepared = self.prepared[name] = Prepared(name, query)
        return prepared

    def execute(self, statement: Any, params: Any = None, timeout: Any = None) -> Any:
        if isinstance(statement, str):
            self.ddl.append(statement)
            return []
        name = statement.name
        assert set(params) == statement.markers, (name, sorted(params), sorted(statement.markers))
        for hook in list(self.hooks[name]):
            self.hooks[name].remove(hook)
            hook()
        if self.failures[name]:
            raise self.failures[name].pop(0)
        with self.lock:
            self.calls.append((name, dict(params)))
            handler = "list_for_user" if name.startswith("list_for_user") else name
            return getattr(self, f"_{handler}")(**params)

    def execute_async(self, statement: Any, params: Any = None) -> Future:
        try:
            return Future(self.execute(statement, params))
        except Exception as error:
            return Future(error=error)

    # helpers for tests
    def fail(self, name: str, error: BaseException | None = None) -> None:
        self.failures[name].append(error or RuntimeError(f"injected failure of {name}"))

    def before(self, name: str, hook) -> None:
        self.hooks[name].append(hook)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def in_flight_rows(self, request_id: int | None = None) -> list[dict]:
        return [row for (_, _, rid), (_, row) in sorted(self.in_flight.items())
                if request_id is None or rid == request_id]

    def history_row(self, user_id: int, request_id: int) -> dict | None:
        entry = self.by_user.get((user_id, request_id))
        return entry[1] if entry else None

    # semantics
    @staticmethod
    def _out(row: dict) -> dict:
        """A row as the driver returns it: timestamps as naive UTC datetimes."""
        out = dict(row)
        for key in ("created_at", "updated_at"):
            if isinstance(out.get(key), int):
                out[key] = EPOCH + datetime.timedelta(milliseconds=out[key])
        return out

    @staticmethod
    def _lww(table: dict, key: Any, ts: int, row: dict, tombstones: dict | None = None) -> None:
        if tombstones is not None and tombstones.get(key, -(2**63)) >= ts:
            return  # a tombstone wins over older and equal writes
        current = table.get(key)
        if current is None or ts > current[0] or (ts == current[0] and repr(row) > repr(current[1])):
            table[key] = (ts, row)

    def _insert_transfer(self, **row: Any) -> list[dict]:
        for key in ("created_at", "updated_at"):
            assert isinstance(row[key], int) and not isinstance(row[key], bool)
        existing = self.transfer.get(row["request_id"])
        if existing is not None:
            return [{"[applied]": False, **self._out(existing)}]
        self.transfer[row["request_id"]] = dict(row)
        return [{"[applied]": True, **{key: None for key in row}}]

    def _select_transfer(self, request_id: int) -> list[dict]:
        row = self.transfer.get(request_id)
        return [self._out(row)] if row else []

    _select_transfer_serial = _select_transfer

    def _cas_status(self, request_id, status, error_message, updated_at, row_version, expected, expected_version):
        row = self.transfer.get(request_id)
        before = {"status": row["status"] if row else None, "row_version": row["row_version"] if row else None}
        if row is None or row["status"] not in expected or row["row_version"] != expected_version:
            return [{"[applied]": False, **before}]
        row.update(status=status, error_message=error_message, updated_at=updated_at, row_version=row_version)
        return [{"[applied]": True, **before}]

    def _claim_client_id(self, **row: Any) -> list[dict]:
        key = (row["user_id"], row["client_transfer_id"])
        if key in self.claims:
            return [{"[applied]": False, **self._out(self.claims[key])}]
        self.claims[key] = dict(row)
        return [{"[applied]": True}]

    def _select_client_id(self, user_id: int, client_transfer_id: str) -> list[dict]:
        row = self.claims.get((user_id, client_transfer_id))
        return [{"request_id": row["request_id"]}] if row else []

    def _upsert_by_user(self, write_ts: int, **row: Any) -> list:
        self._lww(self.by_user, (row["user_id"], row["request_id"]), write_ts, row)
        return []

    def _list_for_user(self, user_id, page_size, before=None, asset_id=None, status=None) -> list[dict]:
        rows = [row for (uid, rid), (_, row) in self.by_user.items() if uid == user_id
                and (before is None or rid < before) and (asset_id is None or row["asset_id"] == asset_id)
                and (status is None or row["status"] == status)]
        rows.sort(key=lambda row: row["request_id"], reverse=True)
        return [self._out(row) for row in rows[:page_size]]

    def _insert_in_flight(self, write_ts: int, **row: Any) -> list:
        key = (row["bucket"], row["updated_at"], row["request_id"])
        self._lww(self.in_flight, key, write_ts, row, self.in_flight_tombstones)
        return []

    def _delete_in_flight(self, bucket: int, updated_at: int, request_id: int, write_ts: int) -> list:
        key = (bucket, updated_at, request_id)
        self.in_flight_tombstones[key] = max(write_ts, self.in_flight_tombstones.get(key, -(2**63)))
        if key in self.in_flight and self.in_flight[key][0] <= write_ts:
            del self.in_flight[key]
        return []

    def _scan_in_flight(self, bucket: int, before: int) -> list[dict]:
        keys = sorted(key for key in self.in_flight if key[0] == bucket and key[1] < before)
        return [self._out(self.in_flight[key][1]) for key in keys]

    def _insert_event(self, **row: Any) -> list:
        assert isinstance(row["at"], int) and isinstance(row["seq"], int)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in row["detail"].items())  # map<text, text>
        self.events[(row["request_id"], row["at"], row["seq"])] = dict(row)  # an upsert, as CQL's INSERT
        return []

    def _select_timeline(self, request_id: int, page_size: int) -> list[dict]:
        keys = sorted(key for key in self.events if key[0] == request_id)[:page_size]
        return [{**self.events[key], "at": EPOCH + datetime.timedelta(milliseconds=self.events[key]["at"])}
                for key in keys]

    def _upsert_activity(self, **row: Any) -> list:
        assert row["hour"] % 3_600_000 == 0 and row["minute"] % 60_000 == 0
        self.activity[(row["hour"], row["kind"], row["bucket"], row["minute"], row["request_id"])] = dict(row)
        return []

    def _activity_rows(self, hour: int, kind: str, bucket: int, since: int) -> list[dict]:
        return [row for key, row in sorted(self.activity.items()) if key[:3] == (hour, kind, bucket)
                and key[3] >= since]

    def _count_activity(self, hour: int, kind: str, bucket: int, since: int) -> list[dict]:
        minutes = collections.Counter(row["minute"] for row in self._activity_rows(hour, kind, bucket, since))
        return [{"minute": EPOCH + datetime.timedelta(milliseconds=minute), "transfers": n}
                for minute, n in sorted(minutes.items())]

    def _failed_activity(self, hour: int, kind: str, bucket: int, since: int, page_size: int) -> list[dict]:
        return [{"error_message": row["error_message"]}
                for row in self._activity_rows(hour, kind, bucket, since)[:page_size]]

    def _count_in_flight(self, bucket: int, page_size: int) -> list[dict]:
        rows = [row for (b, _, _), (_, row) in sorted(self.in_flight.items()) if b == bucket][:page_size]
        return [self._out({"status": row["status"], "updated_at": row["updated_at"]}) for row in rows]


# --- Fixtures ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fake_keyspace(settings) -> None:
    """The fake session knows the statements of KEYSPACE, whatever keyspace the test run's settings name."""
    settings.SCYLLA_KEYSPACE = KEYSPACE


@pytest.fixture
def fake() -> FakeScylla:
    return FakeScylla()


@pytest.fixture
def store(fake) -> ScyllaTransferStore:
    return ScyllaTransferStore(session=fake)


@pytest.fixture
def ids() -> SnowflakeGenerator:
    return SnowflakeGenerator(7)


def make_record(request_id: int, user_id: int = 1001, **overrides: Any) -> TransferRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "user_id": user_id,
        "asset_id": 1,
        "asset_code": "USDT",
        "direction": Direction.FUNDING_TO_SPOT,
        "amount": 12_500_000,
        "status": REQUESTING,
        "client_transfer_id": None,
        "error_message": None,
        "created_at_ms": 1_717_000_000_000,
        "updated_at_ms": 1_717_000_000_000,
    }
    fields.update(overrides)
    return TransferRecord(**fields)


# --- Row <-> record --------------------------------------------------------------


def test_record_round_trips_through_the_tables_with_full_precision(store, fake, ids):
    record = make_record(
        ids.next_id(),
        direction=Direction.SPOT_TO_FUNDING,
        amount=2**62 + 12345,  # above 2**53: never through a float
        client_transfer_id="client-1_X",
        created_at_ms=1_717_000_000_123,
        updated_at_ms=1_717_000_000_456,
    )
    store.create(record)
    assert store.get(record.request_id) == record
    row = fake.transfer[record.request_id]
    assert row["amount"] == 2**62 + 12345
    assert (row["from_account"], row["to_account"]) == ("spot", "funding")
    assert row["row_version"] == 1
    assert store.list_for_user(record.user_id).items == [record]
    assert store.get_by_client_transfer_id(record.user_id, "client-1_X") == record


@pytest.mark.parametrize("status", list(TransferStatus))
@pytest.mark.parametrize("direction", list(Direction))
def test_every_status_and_direction_maps_both_ways(store, ids, status, direction):
    record = make_record(ids.next_id(), status=status, direction=direction,
                         error_message="insufficient balance" if status is FAILED else None)
    store.create(record)
    stored = store.get(record.request_id)
    assert stored == record
    assert isinstance(stored.status, TransferStatus) and isinstance(stored.direction, Direction)


def test_record_from_a_named_tuple_row():
    fields = record_params(make_record(42, client_transfer_id="c"))
    row_type = collections.namedtuple("Row", sorted(fields))
    row = row_type(**{**fields, "created_at": EPOCH + datetime.timedelta(milliseconds=5)})
    record = record_from_row(row)
    assert record.request_id == 42 and record.created_at_ms == 5 and record.client_transfer_id == "c"


def test_record_from_a_row_with_a_bad_amount_is_refused():
    row = record_params(make_record(1))
    with pytest.raises(TypeError):
        record_from_row({**row, "amount": 1.5})
    with pytest.raises(TypeError):
        record_from_row({**row, "amount": True})
    with pytest.raises(ValueError):
        record_from_row({**row, "status": "lost"})
    with pytest.raises(TypeError):
        record_from_row(["not", "a", "row"])


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (1_717_000_000_123, 1_717_000_000_123),
        (EPOCH + datetime.timedelta(milliseconds=1_717_000_000_123), 1_717_000_000_123),
        (datetime.datetime(2024, 6, 1, 12, 0, 0, 122_999), 1_717_243_200_123),  # float error in the driver
        (datetime.datetime(2024, 6, 1, 12, 0, 0, 123_499), 1_717_243_200_123),
        (datetime.datetime(2024, 6, 1, 14, 0, 0, 123_000, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
         1_717_243_200_123),
        (datetime.datetime(1969, 12, 31, 23, 59, 59, 999_000), -1),
        (EPOCH, 0),
    ],
)
def test_timestamps_become_milliseconds(value, ms):
    assert timestamp_ms(value) == ms


@pytest.mark.parametrize("value", [True, 1.5, "1717000000000", None])
def test_non_timestamps_are_refused(value):
    with pytest.raises(TypeError):
        timestamp_ms(value)


# --- Cursors ---------------------------------------------------------------------


def test_cursor_round_trip():
    for request_id in (1, 7398123456789, 2**63 - 1):
        assert decode_cursor(encode_cursor(request_id)) == request_id


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "", " ", "-1", "+1", "1.5", "1e3", "0x10", "\uff11\uff12", "\u0661\u0662", "12 ", " 12", "9" * 30,
     "99999999999999999999", "9223372036854775808", "18446744073709551616", "eyJpZCI6MX0=", "\x00",
     "' OR 1=1 --", "1\n", "\u00b2"],
)
def test_garbage_cursor_is_invalid(store, fake, cursor):
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)
    with pytest.raises(InvalidCursor):
        store.list_for_user(1001, cursor=cursor)
    assert fake.calls == []  # refused before any query


def test_a_non_string_cursor_is_invalid():
    with pytest.raises(InvalidCursor):
        decode_cursor(12)  # type: ignore[arg-type]


# --- LWT results -------------------------------------------------------------------


def test_lwt_outcome_of_dict_rows():
    assert lwt_outcome([{"[applied]": True, "status": None}]) == (True, {"status": None})
    assert lwt_outcome([{"[applied]": False, "status": "success", "row_version": 3}]) == (
        False, {"status": "success", "row_version": 3})


def test_lwt_outcome_of_named_tuple_rows():
    assert lwt_outcome([Row(False, "pending", 2)]) == (False, {"status": "pending", "row_version": 2})


def test_lwt_outcome_of_something_else_is_an_error():
    with pytest.raises(RuntimeError):
        lwt_outcome([])
    with pytest.raises(RuntimeError):
        lwt_outcome([{"status": "pending"}])


# --- create ------------------------------------------------------------------------


def test_create_writes_the_in_flight_row_first_then_the_record_then_history(store, fake, ids):
    record = make_record(ids.next_id(), client_transfer_id="abc")
    store.create(record)
    assert fake.names() == ["claim_client_id", "insert_in_flight", "insert_transfer", "upsert_by_user",
                            "upsert_activity"]
    (row,) = fake.in_flight_rows(record.request_id)
    assert row["bucket"] == in_flight_bucket(record.request_id)
    assert row["status"] == "requesting" and row["row_version"] == 1
    assert fake.history_row(record.user_id, record.request_id)["status"] == "requesting"
    assert fake.by_user[(record.user_id, record.request_id)][0] == write_timestamp(record.created_at_ms, 1)


@pytest.mark.parametrize("terminal", [SUCCESS, FAILED])
def test_a_record_created_finished_is_not_in_flight(store, fake, ids, terminal):
    record = make_record(ids.next_id(), status=terminal)
    store.create(record)
    assert fake.in_flight_rows() == []
    assert store.list_not_moved_since(IN_FLIGHT, 2**62, 100) == []


def test_a_taken_client_id_raises_with_the_existing_record_and_stores_nothing(store, fake, ids):
    first = make_record(ids.next_id(), client_transfer_id="abc-123")
    store.create(first)
    duplicate = dataclasses.replace(first, request_id=ids.next_id(), amount=1, asset_id=2, asset_code="BTC")
    fake.calls.clear()
    with pytest.raises(ClientTransferIdTaken) as taken:
        store.create(duplicate)
    assert taken.value.existing == first
    assert fake.names() == ["claim_client_id", "select_transfer"]
    assert store.get(duplicate.request_id) is None
    assert fake.in_flight_rows(duplicate.request_id) == []


def test_the_same_client_id_for_another_user_is_another_claim(store, ids):
    mine = make_record(ids.next_id(), user_id=1, client_transfer_id="same")
    theirs = make_record(ids.next_id(), user_id=2, client_transfer_id="same")
    store.create(mine)
    store.create(theirs)
    assert store.get_by_client_transfer_id(1, "same") == mine
    assert store.get_by_client_transfer_id(2, "same") == theirs
    assert store.get_by_client_transfer_id(3, "same") is None


def test_a_claim_whose_create_stopped_is_completed_by_the_next_request(store, fake, ids):
    first = make_record(ids.next_id(), client_transfer_id="retry-me")
    fake.fail("insert_in_flight")  # the first request stops right after its claim
    with pytest.raises(RuntimeError):
        store.create(first)
    assert store.get(first.request_id) is None
    assert store.get_by_client_transfer_id(first.user_id, "retry-me") is None

    second = dataclasses.replace(first, request_id=ids.next_id())
    with pytest.raises(ClientTransferIdTaken) as taken:
        store.create(second)
    assert taken.value.existing == first  # the claimed transfer, now stored whole
    assert store.get(first.request_id) == first
    assert store.get(second.request_id) is None
    assert [row["request_id"] for row in fake.in_flight_rows()] == [first.request_id]
    assert store.list_for_user(first.user_id).items == [first]


def test_running_a_create_again_is_a_no_op(store, fake, ids):
    record = make_record(ids.next_id(), client_transfer_id="again")
    store.create(record)
    store.create(record)  # e.g. retried after a timeout that hid a success
    assert store.get(record.request_id) == record
    assert len(fake.in_flight_rows()) == 1


def test_running_a_create_again_after_the_record_moved_on_keeps_the_newer_state(store, fake, ids):
    record = make_record(ids.next_id(), updated_at_ms=1_000, created_at_ms=1_000)
    store.create(record)
    assert store.compare_and_set_status(record.request_id, {REQUESTING}, SUCCESS, now_ms=2_000)
    store.create(record)  # a late duplicate of the first create
    assert store.get(record.request_id).status is SUCCESS
    assert fake.in_flight_rows() == []  # its old in-flight row stays deleted (older write timestamp)
    assert fake.history_row(record.user_id, record.request_id)["status"] == "success"


def test_a_different_transfer_under_a_taken_request_id_is_refused(store, ids):
    record = make_record(ids.next_id())
    store.create(record)
    with pytest.raises(RequestIdTaken) as taken:
        store.create(dataclasses.replace(record, amount=record.amount + 1))
    assert taken.value.existing == record


@pytest.mark.parametrize("amount", [0, -1, True, 1.0])
def test_a_record_without_a_positive_integer_amount_is_refused(store, fake, amount):
    with pytest.raises(ValueError):
        store.create(make_record(5, amount=amount))
    assert fake.calls == []


def test_create_survives_a_failed_history_write_and_the_scan_repairs_it(store, fake, ids):
    record = make_record(ids.next_id(), created_at_ms=1_000, updated_at_ms=1_000)
    fake.fail("upsert_by_user")
    store.create(record)  # the record is stored; its history row is not
    assert store.get(record.request_id) == record
    assert store.list_for_user(record.user_id).items == []
    assert store.list_not_moved_since(IN_FLIGHT, 5_000, 10) == [record]
    assert store.list_for_user(record.user_id).items == [record]


def test_a_create_that_stopped_before_its_record_is_finished_by_the_scan(store, fake, ids):
    record = make_record(ids.next_id(), created_at_ms=1_000, updated_at_ms=1_000)
    fake.fail("insert_transfer")
    with pytest.raises(RuntimeError):
        store.create(record)
    assert store.get(record.request_id) is None
    assert store.list_not_moved_since(IN_FLIGHT, 5_000, 10) == [record]
    assert store.get(record.request_id) == record
    assert store.list_for_user(record.user_id).items == [record]


# --- compare_and_set_status -----------------------------------------------------------


def test_cas_moves_the_record_its_history_and_its_in_flight_row(store, fake, ids):
    record = make_record(ids.next_id(), updated_at_ms=1_000)
    store.create(record)
    assert store.compare_and_set_status(record.request_id, {REQUESTING}, PENDING, now_ms=2_000) is True
    pending = dataclasses.replace(record, status=PENDING, updated_at_ms=2_000)
    assert store.get(record.request_id) == pending
    assert store.list_for_user(record.user_id).items == [pending]
    (row,) = fake.in_flight_rows(record.request_id)
    assert (row["status"], row["updated_at"], row["row_version"]) == ("pending", 2_000, 2)

    assert store.compare_and_set_status(record.request_id, IN_FLIGHT, FAILED, "insufficient balance", now_ms=3_000)
    failed = dataclasses.replace(record, status=FAILED, error_message="insufficient balance", updated_at_ms=3_000)
    assert store.get(record.request_id) == failed
    assert store.list_for_user(record.user_id, statuses={FAILED}).items == [failed]
    assert fake.in_flight_rows() == []
    assert fake.transfer[record.request_id]["row_version"] == 3


def test_cas_condition_names_the_expected_statuses_and_the_version_read(store, fake, ids):
    record = make_record(ids.next_id(), status=PENDING)
    store.create(record)
    fake.calls.clear()
    assert store.compare_and_set_status(record.request_id, [PENDING, REQUESTING, SUCCESS], SUCCESS, now_ms=9)
    cas = [params for name, params in fake.calls if name == "cas_status"]
    assert cas == [{
        "request_id": record.request_id, "status": "success", "error_message": None, "updated_at": 9,
        "row_version": 2, "expected": ["pending", "requesting"], "expected_version": 1,
    }]


def test_cas_from_an_unexpected_status_changes_nothing(store, fake, ids):
    record = make_record(ids.next_id())
    store.create(record)
    fake.calls.clear()
    assert store.compare_and_set_status(record.request_id, {PENDING}, SUCCESS, "x", now_ms=5) is False
    assert fake.names() == ["select_transfer"]
    assert store.get(record.request_id) == record


def test_cas_with_nothing_expected_or_only_terminal_statuses_queries_nothing(store, fake, ids):
    record = make_record(ids.next_id(), status=SUCCESS)
    store.create(record)
    fake.calls.clear()
    assert store.compare_and_set_status(record.request_id, set(), FAILED) is False
    assert store.compare_and_set_status(record.request_id, {SUCCESS, FAILED}, FAILED) is False
    assert fake.calls == []


@pytest.mark.parametrize("terminal", [SUCCESS, FAILED])
def test_terminal_never_changes_even_when_named_as_expected(store, ids, terminal):
    record = make_record(ids.next_id(), status=terminal)
    store.create(record)
    assert store.compare_and_set_status(record.request_id, set(TransferStatus), PENDING, "late") is False
    assert store.get(record.request_id) == record


def test_cas_of_a_missing_record_is_false(store):
    assert store.compare_and_set_status(123, IN_FLIGHT, FAILED) is False


def test_cas_to_the_same_status_in_the_same_millisecond_keeps_the_in_flight_row(store, fake, ids):
    record = make_record(ids.next_id(), status=REQUESTING, updated_at_ms=1_000)
    store.create(record)
    assert store.compare_and_set_status(record.request_id, {REQUESTING}, PENDING, now_ms=1_000)
    (row,) = fake.in_flight_rows(record.request_id)  # same key: updated in place, not deleted
    assert (row["status"], row["row_version"]) == ("pending", 2)
    assert "delete_in_flight" not in fake.names()


def test_cas_that_loses_to_a_finishing_worker_returns_false(store, fake, ids):
    record = make_record(ids.next_id(), status=PENDING)
    store.create(record)
    other = ScyllaTransferStore(session=fake)
    fake.before("cas_status", lambda: other.compare_and_set_status(record.request_id, {PENDING}, SUCCESS))
    assert store.compare_and_set_status(record.request_id, {PENDING}, FAILED, "rejected") is False
    assert store.get(record.request_id).status is SUCCESS


def test_cas_that_loses_to_a_move_it_also_expects_retries_on_the_new_version(store, fake, ids):
    record = make_record(ids.next_id(), status=REQUESTING, updated_at_ms=1_000)
    store.create(record)
    other = ScyllaTransferStore(session=fake)
    fake.before("cas_status",
                lambda: other.compare_and_set_status(record.request_id, {REQUESTING}, PENDING, now_ms=2_000))
    assert store.compare_and_set_status(record.request_id, IN_FLIGHT, FAILED, "rejected", now_ms=3_000) is True
    assert store.get(record.request_id) == dataclasses.replace(
        record, status=FAILED, error_message="rejected", updated_at_ms=3_000)
    assert "select_transfer_serial" in fake.names()  # the re-read after losing is linearizable
    assert fake.in_flight_rows() == []
    assert fake.history_row(record.user_id, record.request_id)["status"] == "failed"


def test_cas_that_keeps_losing_gives_up_with_an_error(store, fake, ids):
    record = make_record(ids.next_id(), status=PENDING)
    store.create(record)

    def bump() -> None:
        fake.transfer[record.request_id]["row_version"] += 1
        fake.before("cas_status", bump)

    fake.before("cas_status", bump)
    with pytest.raises(ScyllaContention):
        store.compare_and_set_status(record.request_id, {PENDING}, SUCCESS)
    fake.hooks.clear()


def test_concurrent_cas_exactly_one_wins(fake, ids):
    for _ in range(20):
        record = make_record(ids.next_id(), status=PENDING)
        ScyllaTransferStore(session=fake).create(record)
        barrier = threading.Barrier(2)
        results: dict[TransferStatus, bool] = {}

        def race(status: TransferStatus, record=record, barrier=barrier, results=results) -> None:
            own = ScyllaTransferStore(session=fake)
            barrier.wait(timeout=5)
            results[status] = own.compare_and_set_status(record.request_id, {PENDING}, status)

        threads = [threading.Thread(target=race, args=(status,)) for status in (SUCCESS, FAILED)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        winners = [status for status, won in results.items() if won]
        assert len(results) == 2 and len(winners) == 1
        assert fake.transfer[record.request_id]["status"] == winners[0].value


def test_a_cas_whose_derived_rows_failed_still_reports_the_change_and_the_scan_repairs(store, fake, ids):
    record = make_record(ids.next_id(), status=PENDING, created_at_ms=1_000, updated_at_ms=1_000)
    store.create(record)
    fake.fail("upsert_by_user")
    assert store.compare_and_set_status(record.request_id, {PENDING}, SUCCESS, now_ms=2_000) is True
    # The history row is stale and the old in-flight row is still there ...
    assert fake.history_row(record.user_id, record.request_id)["status"] == "pending"
    assert len(fake.in_flight_rows(record.request_id)) == 1
    # ... until the re-drive scan, which lists nothing stuck but repairs both.
    assert store.list_not_moved_since(IN_FLIGHT, 10_000, 10) == []
    assert fake.history_row(record.user_id, record.request_id)["status"] == "success"
    assert fake.in_flight_rows() == []


def test_late_derived_writes_of_an_older_version_change_nothing(store, fake, ids):
    record = make_record(ids.next_id(), status=PENDING, updated_at_ms=1_000)
    store.create(record)
    old = StoredTransfer(record, row_version=1)
    assert store.compare_and_set_status(record.request_id, {PENDING}, SUCCESS, now_ms=2_000)
    store._write_derived(old, previous=None)  # a slow writer of version 1 arrives last
    assert fake.history_row(record.user_id, record.request_id)["status"] == "success"
    assert fake.in_flight_rows() == []


# --- list_for_user -----------------------------------------------------------------


def test_list_for_user_pages_newest_first_with_a_cursor(store, ids):
    records = [store.create(r) or r for r in (make_record(ids.next_id()) for _ in range(7))]
    newest_first = sorted(records, key=lambda r: r.request_id, reverse=True)
    seen, cursor, pages = [], None, 0
    while True:
        page = store.list_for_user(1001, limit=3, cursor=cursor)
        seen.extend(page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == newest_first
    assert pages == 3


def test_list_for_user_has_no_empty_trailing_page(store, ids):
    for _ in range(3):
        store.create(make_record(ids.next_id()))
    page = store.list_for_user(1001, limit=3)
    assert len(page.items) == 3 and page.next_cursor is None


def test_list_for_user_filters_and_asks_one_row_more_than_the_page(store, fake, ids):
    usdt_pending = make_record(ids.next_id(), status=PENDING)
    btc_pending = make_record(ids.next_id(), status=PENDING, asset_id=2, asset_code="BTC")
    btc_failed = make_record(ids.next_id(), status=FAILED, asset_id=2, asset_code="BTC", error_message="x")
    theirs = make_record(ids.next_id(), user_id=2, status=PENDING, asset_id=2, asset_code="BTC")
    for record in (usdt_pending, btc_pending, btc_failed, theirs):
        store.create(record)
    fake.calls.clear()
    page = store.list_for_user(1001, asset_id=2, statuses={PENDING}, limit=10)
    assert page.items == [btc_pending]
    ((name, params),) = fake.calls
    assert name == "list_for_user:as"
    assert params == {"user_id": 1001, "asset_id": 2, "status": "pending", "page_size": 11}
    assert "ALLOW FILTERING" in STATEMENTS[name][0]
    assert "ALLOW FILTERING" not in STATEMENTS["list_for_user:c"][0]
    assert store.list_for_user(1001, statuses={FAILED}).items == [btc_failed]
    assert store.list_for_user(1001, asset_id=1).items == [usdt_pending]


def test_list_for_user_over_several_statuses_asks_each_and_merges_newest_first(store, fake, ids):
    records = [make_record(ids.next_id(), status=status) for status in (REQUESTING, PENDING, FAILED, PENDING)]
    for record in records:
        store.create(record)
    fake.calls.clear()
    page = store.list_for_user(1001, statuses={PENDING, REQUESTING}, limit=2)
    assert page.items == [records[3], records[1]]
    assert page.next_cursor == str(records[1].request_id)
    # No `status IN`: one query per status, each for one row more than the page.
    assert sorted((name, params["status"], params["page_size"]) for name, params in fake.calls) == [
        ("list_for_user:s", "pending", 3), ("list_for_user:s", "requesting", 3)]
    assert store.list_for_user(1001, statuses={PENDING, REQUESTING}, limit=2, cursor=page.next_cursor).items == [
        records[0]]
    fake.calls.clear()
    assert store.list_for_user(1001, statuses=set(TransferStatus)).items == records[::-1]
    assert fake.names() == ["list_for_user:"]  # every status: no filter at all
    assert store.list_for_user(1001, statuses=set()).items == []


def test_list_for_user_with_no_room_returns_nothing(store, fake):
    assert store.list_for_user(1001, limit=0).items == []
    assert fake.calls == []


# --- list_not_moved_since ------------------------------------------------------------


def test_list_not_moved_since_returns_in_flight_records_older_than_the_cutoff_oldest_first(store, ids):
    cutoff = 1_000_000
    old_pending = make_record(ids.next_id(), status=PENDING, updated_at_ms=cutoff - 1)
    older_requesting = make_record(ids.next_id(), status=REQUESTING, updated_at_ms=cutoff - 50_000)
    for record in (
        old_pending,
        older_requesting,
        make_record(ids.next_id(), status=PENDING, updated_at_ms=cutoff),  # at the cutoff: not older
        make_record(ids.next_id(), status=PENDING, updated_at_ms=cutoff + 1),
        make_record(ids.next_id(), status=SUCCESS, updated_at_ms=1),
        make_record(ids.next_id(), status=FAILED, error_message="x", updated_at_ms=1),
    ):
        store.create(record)
    assert store.list_not_moved_since(IN_FLIGHT, cutoff, 100) == [older_requesting, old_pending]
    assert store.list_not_moved_since({REQUESTING}, cutoff, 100) == [older_requesting]
    assert store.list_not_moved_since({SUCCESS, FAILED}, cutoff, 100) == []
    assert store.list_not_moved_since(IN_FLIGHT, cutoff, 0) == []


def test_list_not_moved_since_takes_the_oldest_across_buckets_up_to_the_limit(store, ids):
    records = [make_record(ids.next_id(), status=PENDING, updated_at_ms=10_000 - i) for i in range(40)]
    for record in records:
        store.create(record)
    assert len({in_flight_bucket(r.request_id) for r in records}) > 8
    oldest = sorted(records, key=lambda r: r.updated_at_ms)[:5]
    assert store.list_not_moved_since(IN_FLIGHT, 20_000, 5) == oldest


def test_list_not_moved_since_reads_only_as_many_records_as_it_needs(store, fake, ids):
    for i in range(300):
        store.create(make_record(ids.next_id(), status=PENDING, updated_at_ms=10_000 - i))
    fake.calls.clear()
    assert len(store.list_not_moved_since(IN_FLIGHT, 20_000, 5)) == 5
    assert fake.names().count("scan_in_flight") == IN_FLIGHT_BUCKETS
    assert fake.names().count("select_transfer") <= scylla.GET_MANY_CONCURRENCY


def test_a_status_change_takes_a_record_off_the_stuck_list(store, ids):
    stuck = make_record(ids.next_id(), status=REQUESTING, updated_at_ms=100)
    moved = make_record(ids.next_id(), status=REQUESTING, updated_at_ms=100)
    finished = make_record(ids.next_id(), status=PENDING, updated_at_ms=100)
    for record in (stuck, moved, finished):
        store.create(record)
    assert store.compare_and_set_status(moved.request_id, {REQUESTING}, PENDING, now_ms=5_000)
    assert store.compare_and_set_status(finished.request_id, {PENDING}, SUCCESS, now_ms=150)
    assert store.list_not_moved_since(IN_FLIGHT, 1_000, 100) == [stuck]


def test_the_scan_replaces_a_stale_in_flight_row_of_a_record_still_in_flight(store, fake, ids):
    record = make_record(ids.next_id(), status=REQUESTING, created_at_ms=100, updated_at_ms=100)
    store.create(record)
    fake.fail("insert_in_flight")  # the move to pending loses its derived rows
    assert store.compare_and_set_status(record.request_id, {REQUESTING}, PENDING, now_ms=200)
    assert [row["status"] for row in fake.in_flight_rows()] == ["requesting"]
    pending = dataclasses.replace(record, status=PENDING, updated_at_ms=200)
    assert store.list_not_moved_since(IN_FLIGHT, 1_000, 10) == [pending]  # the record, not the stale row
    assert [(row["status"], row["updated_at"]) for row in fake.in_flight_rows()] == [("pending", 200)]
    assert fake.history_row(record.user_id, record.request_id)["status"] == "pending"


# --- Statements, levels, buckets ------------------------------------------------------


def test_every_statement_prepares_with_its_levels(store, fake):
    for name, (_, kind) in STATEMENTS.items():
        prepared = store.statement(name)
        if kind == "serial_read":
            assert prepared.consistency_level == SERIAL
        else:
            assert prepared.consistency_level == QUORUM
        assert prepared.serial_consistency_level == (SERIAL if kind == "lwt" else None)
    assert {name for name, (_, kind) in STATEMENTS.items() if kind == "lwt"} == {
        "insert_transfer", "cas_status", "claim_client_id"}
    assert "IF NOT EXISTS" in STATEMENTS["insert_transfer"][0]
    assert "IF status IN :expected AND row_version = :expected_version" in STATEMENTS["cas_status"][0]
    assert store.statement("scan_in_flight").fetch_size == scylla.SCAN_FETCH_SIZE


def test_levels_come_from_the_arguments_or_settings(fake):
    store = ScyllaTransferStore(session=fake, consistency="local_quorum", serial_consistency="LOCAL_SERIAL")
    assert store.statement("cas_status").consistency_level == LOCAL_QUORUM
    assert store.statement("cas_status").serial_consistency_level == LOCAL_SERIAL
    with override_settings(SCYLLA_CONSISTENCY="LOCAL_QUORUM", SCYLLA_SERIAL_CONSISTENCY="LOCAL_SERIAL"):
        other = ScyllaTransferStore(session=FakeScylla())
    assert other.statement("select_transfer_serial").consistency_level == LOCAL_SERIAL


@pytest.mark.parametrize(("consistency", "serial"), [("ONE", None), ("LOCAL_ONE", None), ("SERIAL", None),
                                                      (None, "QUORUM"), (None, "nonsense")])
def test_levels_too_weak_or_unknown_are_refused(consistency, serial):
    with pytest.raises(ImproperlyConfigured):
        ScyllaTransferStore(session=FakeScylla(), consistency=consistency, serial_consistency=serial)


def test_the_level_codes_are_the_drivers():
    cassandra = pytest.importorskip("cassandra")
    assert scylla_connection.CONSISTENCY_LEVELS == cassandra.ConsistencyLevel.name_to_value


def test_statements_are_qualified_with_the_keyspace(fake):
    store = ScyllaTransferStore(session=FakeScylla("test_other"), keyspace="Test_Other")
    assert store.keyspace == "test_other"
    assert "test_other.transfer " in store.statement("select_transfer").query_string
    with pytest.raises(ImproperlyConfigured):
        ScyllaTransferStore(session=fake, keyspace="bad-name; DROP")


def test_the_store_connects_only_when_first_used():
    with override_settings(SCYLLA_HOSTS=""), mock.patch.object(scylla_connection, "database_alias", return_value=None):
        store = ScyllaTransferStore()  # no server, no hosts: still constructs
        assert store._session_obj is None
        with pytest.raises(ImproperlyConfigured):
            store.get(1)


def test_the_settings_choose_this_adapter():
    from transfers.store import get_transfer_store

    get_transfer_store.cache_clear()
    try:
        with override_settings(TRANSFER_STORE="scylla"):
            assert isinstance(get_transfer_store(), ScyllaTransferStore)
    finally:
        get_transfer_store.cache_clear()


def test_buckets_are_fixed_and_spread_snowflakes():
    # Pinned: rows written under one mapping must be found under it forever.
    assert [in_flight_bucket(i) for i in (0, 1, 2, 2**62, 2**63 - 1, 7398123456789012345)] == [0, 9, 3, 4, 14, 6]
    # One id per millisecond, sequence 0, one worker: still every bucket.
    ids = [((ms - EPOCH_MS) << 22) | (7 << 12) for ms in range(EPOCH_MS, EPOCH_MS + 4096)]
    counts = collections.Counter(in_flight_bucket(i) for i in ids)
    assert set(counts) == set(range(IN_FLIGHT_BUCKETS))
    assert max(counts.values()) < 2 * 4096 / IN_FLIGHT_BUCKETS


def test_timestamps_survive_the_drivers_codec():
    cqltypes = pytest.importorskip("cassandra.cqltypes")
    for ms in [0, -1, 1_000, 1_717_000_000_123, 2**41 - 1, *range(1_717_000_000_000, 1_717_000_002_000)]:
        assert timestamp_ms(cqltypes.DateType.deserialize(cqltypes.DateType.serialize(ms, 4), 4)) == ms
    value = 2**62 + 12345
    assert cqltypes.IntegerType.deserialize(cqltypes.IntegerType.serialize(value, 4), 4) == value  # varint


def test_write_timestamps_grow_with_the_version():
    assert write_timestamp(1_717_000_000_000, 1) < write_timestamp(1_717_000_000_000, 2)
    assert write_timestamp(1_000, 1) == 1_000_001


# --- Timeline ---------------------------------------------------------------------------


def test_events_are_appended_and_read_back_oldest_first(store, fake, ids):
    request_id, other = ids.next_id(), ids.next_id()
    events = [
        TimelineEvent(request_id, EventKind.ACCEPTED, 1_000, process="web"),
        TimelineEvent(request_id, EventKind.STATUS_CHANGED, 1_000, {"from": "requesting", "to": "pending"}),
        TimelineEvent(other, EventKind.REDRIVE, 900, {"status": "pending"}, actor="admin:alice"),
        TimelineEvent(request_id, EventKind.UBSCORE_ANSWER, 2_500, {"status": "rejected", "reason": "frozen"}),
    ]
    store.append_events(events)
    assert store.timeline(request_id) == [events[0], events[1], events[3]]  # same millisecond: append order
    assert store.timeline(other) == [events[2]]
    assert store.timeline(ids.next_id()) == []
    assert store.timeline(request_id, limit=2) == events[:2]
    assert store.timeline(request_id, limit=0) == []
    assert fake.names().count("insert_event") == 4  # plain inserts, no LWT, no read


def test_appending_the_same_event_twice_keeps_both(store, ids):
    request_id = ids.next_id()
    event = TimelineEvent(request_id, EventKind.REDRIVE, 5_000, {"status": "pending", "age_ms": "31000"})
    store.append_events([event])
    store.append_events([event])  # a second re-drive in the same millisecond is a second entry
    assert store.timeline(request_id) == [event, event]


def test_an_empty_append_writes_nothing(store, fake):
    store.append_events([])
    assert fake.calls == []


def test_event_seqs_increase_within_a_process():
    seqs = [next_event_seq() for _ in range(1000)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] < 2**63


def test_a_failed_event_write_raises(store, fake, ids):
    fake.fail("insert_event")
    with pytest.raises(RuntimeError):
        store.append_events([TimelineEvent(ids.next_id(), EventKind.ACCEPTED, 1)])


# --- Schema ---------------------------------------------------------------------------


def _columns(statement: str) -> list[str]:
    return re.findall(r"[(,] (\w+) (?:bigint|int|text|varint|timestamp)\b", statement)


def test_the_cql_file_has_the_columns_the_statements_use():
    tables = {re.search(r"EXISTS \w+\.(\w+)", s).group(1): s for s in scylla_schema.table_statements("ks")}
    assert set(tables) == set(scylla_schema.TABLES)
    assert set(_columns(tables["transfer"])) == set(scylla.TRANSFER_COLUMNS)
    assert set(_columns(tables["transfer_by_user"])) == set(scylla.RECORD_COLUMNS)
    assert set(_columns(tables["transfer_client_id"])) == set(scylla.RECORD_COLUMNS)
    assert set(_columns(tables["transfer_in_flight"])) == set(scylla.IN_FLIGHT_COLUMNS)
    assert "amount varint" in tables["transfer"]
    assert "CLUSTERING ORDER BY (request_id DESC)" in tables["transfer_by_user"]
    assert "PRIMARY KEY ((user_id, client_transfer_id))" in tables["transfer_client_id"]
    assert "PRIMARY KEY ((bucket), updated_at, request_id)" in tables["transfer_in_flight"]
    assert set(_columns(tables["transfer_event"])) == set(scylla.EVENT_COLUMNS) - {"detail"}
    assert "detail map<text, text>" in tables["transfer_event"]
    assert "PRIMARY KEY ((request_id), at, seq)" in tables["transfer_event"]


def test_schema_statements_use_the_settings():
    with override_settings(SCYLLA_KEYSPACE="transfers_prod", SCYLLA_REPLICATION="dc1:3,dc2:3"):
        statements = scylla_schema.schema_statements()
    assert statements[0] == (
        "CREATE KEYSPACE IF NOT EXISTS transfers_prod WITH replication = {'class': 'NetworkTopologyStrategy', "
        "'dc1': '3', 'dc2': '3'} AND durable_writes = true AND tablets = {'enabled': false}"
    )
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS transfers_prod.") for s in statements[1:])
    assert len(statements) == 1 + len(scylla_schema.TABLES)


@pytest.mark.parametrize(("spec", "expected"), [
    ("1", {"class": "NetworkTopologyStrategy", "replication_factor": "1"}),
    (3, {"class": "NetworkTopologyStrategy", "replication_factor": "3"}),
    ("dc1:3, dc-2:2", {"class": "NetworkTopologyStrategy", "dc1": "3", "dc-2": "2"}),
])
def test_replication_settings(spec, expected):
    assert scylla_schema.parse_replication(spec) == expected


@pytest.mark.parametrize("spec", ["0", "16", "x", "dc1", "dc1:", "dc1:3,dc1:3", "dc1:3;DROP", "-1", ""])
def test_bad_replication_settings_are_refused(spec):
    with pytest.raises(ImproperlyConfigured):
        scylla_schema.parse_replication(spec)


class DdlSession:
    def __init__(self, refuse_tablets: bool = False) -> None:
        self.statements: list[str] = []
        self.refuse_tablets = refuse_tablets

    def execute(self, statement: str, params: Any = None, timeout: Any = None) -> list:
        if self.refuse_tablets and "tablets" in statement:
            raise RuntimeError("Unknown property 'tablets'")
        self.statements.append(statement)
        return []


def test_apply_schema_runs_every_statement_idempotently():
    session = DdlSession()
    executed = scylla_schema.apply_schema(session, keyspace="test_ks", replication=1)
    assert executed == session.statements == scylla_schema.schema_statements("test_ks", 1)
    assert all("IF NOT EXISTS" in statement for statement in executed)


def test_apply_schema_leaves_the_tablets_option_out_where_unknown():
    session = DdlSession(refuse_tablets=True)
    executed = scylla_schema.apply_schema(session, keyspace="test_ks", replication=1)
    assert "tablets" not in executed[0] and executed[0].startswith("CREATE KEYSPACE IF NOT EXISTS test_ks")
    assert len(executed) == 1 + len(scylla_schema.TABLES)


def test_test_keyspace_helpers_only_touch_test_keyspaces():
    session = DdlSession()
    name = scylla_schema.create_test_keyspace(session=session)
    assert name.startswith("test_transfers_")
    assert session.statements[0].startswith(f"CREATE KEYSPACE IF NOT EXISTS {name} ")
    scylla.drop_keyspace(name, session=session)
    assert session.statements[-1] == f"DROP KEYSPACE IF EXISTS {name}"
    with pytest.raises(ValueError):
        scylla.drop_keyspace("internal_transfer", session=session)
    with pytest.raises(ValueError):
        scylla.create_test_keyspace("internal_transfer", session=session)
    with pytest.raises(ValueError):
        scylla.truncate_tables("internal_transfer", session=session)
    scylla.truncate_tables(name, session=session)
    truncates = [f"TRUNCATE {name}.{table}" for table in scylla_schema.TABLES]
    assert session.statements[-len(truncates):] == truncates


def test_keyspace_warnings():
    class Session:
        def execute(self, statement, params=None, timeout=None):
            if "system_schema.keyspaces" in statement:
                return [{"replication": {"class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
                                         "datacenter1": "1"}}]
            return [{"initial_tablets": 0}]

    assert scylla_schema.keyspace_warnings(Session(), "ks", "1")[0].startswith("keyspace ks uses tablets")
    (warning, _) = scylla_schema.keyspace_warnings(Session(), "ks", "3")
    assert "replication" in warning


def test_the_command_prints_the_cql_without_a_server(capsys):
    call_command("sync_scylla_schema", "--print", "--keyspace", "ks_print", "--replication", "2")
    out = capsys.readouterr().out
    assert "CREATE KEYSPACE IF NOT EXISTS ks_print" in out and "'replication_factor': '2'" in out
    assert out.count("CREATE TABLE IF NOT EXISTS ks_print.") == len(scylla_schema.TABLES)


# --- Connection settings ---------------------------------------------------------------


def test_database_settings_from_the_scylla_settings():
    with override_settings(SCYLLA_HOSTS="10.0.0.1, 10.0.0.2", SCYLLA_KEYSPACE="transfers", SCYLLA_PORT=19042):
        database = scylla_connection.database_settings()
    assert database["ENGINE"] == "django_cassandra_engine"
    assert (database["NAME"], database["HOST"]) == ("transfers", "10.0.0.1,10.0.0.2")
    assert database["OPTIONS"]["connection"] == {"lazy_connect": True, "retry_connect": True, "port": 19042}


def test_the_database_alias_is_the_django_cassandra_engine_one():
    default = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    with mock.patch.object(scylla_connection, "settings", SimpleNamespace(DATABASES={"default": default})):
        assert scylla_connection.database_alias() is None
    databases = {"default": default, "cql": {"ENGINE": "django_cassandra_engine"}}
    with mock.patch.object(scylla_connection, "settings", SimpleNamespace(DATABASES=databases)):
        assert scylla_connection.database_alias() == "cql"
    databases["scylla"] = {"ENGINE": "django_cassandra_engine"}
    with mock.patch.object(scylla_connection, "settings", SimpleNamespace(DATABASES=databases)):
        assert scylla_connection.database_alias() == "scylla"


def test_the_connection_is_made_from_a_copy_of_the_databases_entry():
    pytest.importorskip("cassandra.policies")
    entry = {"ENGINE": "django_cassandra_engine", "NAME": "ks", "HOST": "10.0.0.1",
             "OPTIONS": {"connection": {"lazy_connect": True, "port": 9042}}}
    with mock.patch.object(scylla_connection, "settings", SimpleNamespace(DATABASES={"scylla": entry})):
        database = scylla_connection.database_entry("scylla")
    assert database["HOST"] == "10.0.0.1" and database["USER"] == ""
    assert database["OPTIONS"]["connection"]["lazy_connect"] is True
    assert "load_balancing_policy" in database["OPTIONS"]["connection"]
    assert entry["OPTIONS"]["connection"] == {"lazy_connect": True, "port": 9042}  # the settings are untouched
    with mock.patch.object(scylla_connection, "settings", SimpleNamespace(DATABASES={"scylla": {"NAME": "ks"}})):
        with pytest.raises(ImproperlyConfigured):
            scylla_connection.database_entry("scylla")


def test_connection_defaults_add_a_token_aware_policy():
    policies = pytest.importorskip("cassandra.policies")
    database: dict[str, Any] = {"OPTIONS": {"connection": {"lazy_connect": True}}}
    with override_settings(SCYLLA_LOCAL_DC="dc1"):
        scylla_connection.add_connection_defaults(database)
    policy = database["OPTIONS"]["connection"]["load_balancing_policy"]
    assert isinstance(policy, policies.TokenAwarePolicy)
    assert policy._child_policy.local_dc == "dc1"


# --- The admin page over the store port ---------------------------------------------

urlpatterns = [
    path("admin/transfers/store/", include(admin_scylla.urlpatterns)),
    path("admin/", admin.site.urls),
]


@pytest.fixture
def admin_page(store, client, django_user_model):
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_transfer"))
    client.force_login(user)
    with override_settings(ROOT_URLCONF=__name__), mock.patch.object(admin_scylla, "get_transfer_store",
                                                                      return_value=store):
        yield client


@pytest.mark.django_db
def test_admin_page_finds_a_users_transfers_page_by_page(admin_page, store, ids):
    records = [make_record(ids.next_id(), amount=12_500_000 + i) for i in range(60)]
    for record in records:
        store.create(record)
    page = admin_page.get("/admin/transfers/store/", {"user_id": "1001"})
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count("<tr><td>") == admin_scylla.PAGE_SIZE
    assert str(records[-1].request_id) in html and "12.500059" in html
    assert f"cursor={records[10].request_id}" in html
    rest = admin_page.get("/admin/transfers/store/", {"user_id": "1001", "cursor": str(records[10].request_id)})
    assert rest.content.decode().count("<tr><td>") == 10


@pytest.mark.django_db
def test_admin_page_by_request_id_status_and_stuck(admin_page, store, ids):
    failed = make_record(ids.next_id(), status=FAILED, error_message="insufficient balance")
    stuck = make_record(ids.next_id(), status=PENDING, updated_at_ms=1_000, created_at_ms=1_000)
    for record in (failed, stuck):
        store.create(record)
    html = admin_page.get("/admin/transfers/store/", {"request_id": str(failed.request_id)}).content.decode()
    assert "insufficient balance" in html and str(stuck.request_id) not in html
    html = admin_page.get("/admin/transfers/store/", {"user_id": "1001", "status": "pending"}).content.decode()
    assert str(stuck.request_id) in html and str(failed.request_id) not in html
    html = admin_page.get("/admin/transfers/store/", {"stuck_minutes": "5"}).content.decode()
    assert str(stuck.request_id) in html and str(failed.request_id) not in html
    html = admin_page.get("/admin/transfers/store/", {"user_id": "1001", "cursor": "garbage"}).content.decode()
    assert "not valid" in html
    html = admin_page.get("/admin/transfers/store/", {"user_id": "x' OR 1=1"}).content.decode()
    assert "whole numbers" in html


@pytest.mark.django_db
def test_admin_page_needs_staff_with_the_view_permission(client, django_user_model):
    with override_settings(ROOT_URLCONF=__name__):
        assert client.get("/admin/transfers/store/").status_code == 302  # to the admin login
        user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
        client.force_login(user)
        assert client.get("/admin/transfers/store/").status_code == 403


def test_concurrent_first_queries_of_a_process_all_get_the_session(monkeypatch):
    """cqlengine's lazy connect says "connected" before its session exists; no thread may see None."""
    import threading
    import time

    class LazyConnection:  # as cqlengine's Connection.handle_lazy_connect behaves
        def __init__(self) -> None:
            self.lazy_connect, self._session = True, None

        @property
        def session(self):
            if self.lazy_connect:
                self.lazy_connect = False  # first, then the connect, which takes a while
                time.sleep(0.2)
                self._session = "the session"
            return self._session

    monkeypatch.setattr(scylla_connection, "_connections", {scylla_connection.FALLBACK_ALIAS: LazyConnection()})
    monkeypatch.setattr(scylla_connection, "database_alias", lambda: None)
    sessions: list = []
    threads = [threading.Thread(target=lambda: sessions.append(scylla_connection.get_session())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sessions == ["the session"] * 4
