"""One contract for the transfer-store port, run against every backend present.

`orm` always runs (SQLite or PostgreSQL, whichever DATABASE_URL names);
`scylla` runs when SCYLLA_HOSTS is set. Ids are random so the suite also
works against a server that keeps data between runs; records a test leaves
in flight are moved to `failed` afterwards so they do not pile up there.
"""

from __future__ import annotations

import dataclasses
import os
import random
import threading
import time

import pytest

from transfer_site.shards import UserShards
from transfers.domain import IN_FLIGHT, Direction, TransferRecord, TransferStatus
from transfers.snowflake import SnowflakeGenerator
from transfers.store.base import ClientTransferIdTaken, InvalidCursor, StatusChange, TransferPage, TransferStore

REQUESTING, PENDING, SUCCESS, FAILED = (
    TransferStatus.REQUESTING,
    TransferStatus.PENDING,
    TransferStatus.SUCCESS,
    TransferStatus.FAILED,
)
# Every test here may use the database (the `orm` backend does); declaring it
# also keeps pytest-django running these before the transactional test, whose
# flush empties the seeded tables.
pytestmark = pytest.mark.django_db

# The seeded assets (transfers/migrations/0002_seed_assets.py).
USDT, BTC, ETH = (1, "USDT"), (2, "BTC"), (3, "ETH")


@pytest.fixture(scope="session")
def scylla_keyspace():
    """A private keyspace with the project's tables, dropped after the run."""
    if not os.environ.get("SCYLLA_HOSTS"):
        pytest.skip(
            "ScyllaDB contract tests need a server: set SCYLLA_HOSTS=127.0.0.1 (and SCYLLA_PORT if not 9042) "
            "to run them; they create and drop a keyspace test_transfers_<random>"
        )
    from transfers.store.scylla import create_test_keyspace, drop_keyspace

    name = create_test_keyspace()
    yield name
    drop_keyspace(name)


@pytest.fixture(params=["orm", "scylla"])
def transfer_store(request) -> TransferStore:
    if request.param == "orm":
        request.getfixturevalue("db")  # transactional if the test is marked so
        from transfers.store.orm import OrmTransferStore

        return OrmTransferStore()
    keyspace = request.getfixturevalue("scylla_keyspace")
    from transfers.store.scylla import ScyllaTransferStore

    return ScyllaTransferStore(keyspace=keyspace)


@pytest.fixture
def ids():
    """Request ids as the service makes them (snowflakes), from a random worker id."""
    return SnowflakeGenerator(random.randrange(0, 1024))


@pytest.fixture
def user_id() -> int:
    return random.randrange(1, 2**62)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def make(transfer_store, ids):
    """Create a record in the store; what a test leaves in flight is failed afterwards."""
    created: list[int] = []

    def make_record(user_id: int, **overrides) -> TransferRecord:
        asset_id, asset_code = overrides.pop("asset", USDT)
        request_id = overrides.pop("request_id", None) or ids.next_id()
        at = now_ms()
        fields = {
            "request_id": request_id,
            "user_id": user_id,
            "asset_id": asset_id,
            "asset_code": asset_code,
            "direction": Direction.FUNDING_TO_SPOT,
            "amount": 12_500_000,
            "status": PENDING,
            "client_transfer_id": None,
            "error_message": None,
            "created_at_ms": at,
            "updated_at_ms": at,
        }
        fields.update(overrides)
        record = TransferRecord(**fields)
        transfer_store.create(record)
        created.append(record.request_id)
        return record

    yield make_record
    try:
        for request_id in created:
            transfer_store.compare_and_set_status(request_id, IN_FLIGHT, FAILED, "contract test cleanup")
    except Exception:  # the ORM's rolled-back test database needs no cleanup
        pass


def collect_all(store: TransferStore, user_id: int, **filters) -> tuple[list[TransferRecord], int]:
    """Every page of a user's history; returns the items and how many pages there were."""
    items: list[TransferRecord] = []
    cursor = None
    pages = 0
    while True:
        page = store.list_for_user(user_id, cursor=cursor, **filters)
        pages += 1
        assert isinstance(page, TransferPage)
        items.extend(page.items)
        if page.next_cursor is None:
            return items, pages
        assert isinstance(page.next_cursor, str)
        assert page.next_cursor != cursor
        cursor = page.next_cursor
        assert pages < 1000, "pagination never ended"


# --- create / get ------------------------------------------------------------


def test_create_then_get_returns_every_field(transfer_store, ids, user_id):
    request_id = ids.next_id()
    record = TransferRecord(
        request_id=request_id,
        user_id=user_id,
        asset_id=BTC[0],
        asset_code=BTC[1],
        direction=Direction.SPOT_TO_FUNDING,
        amount=2**62 + 12345,  # above 2**53: must not pass through a float
        status=REQUESTING,
        client_transfer_id=f"client-{request_id}_X",
        error_message=None,
        created_at_ms=1_717_000_000_123,
        updated_at_ms=1_717_000_000_456,
    )
    transfer_store.create(record)
    try:
        stored = transfer_store.get(request_id)
        assert stored == record
        assert isinstance(stored.direction, Direction)
        assert isinstance(stored.status, TransferStatus)
        assert stored.from_account.value == "spot"
        assert stored.to_account.value == "funding"
    finally:
        transfer_store.compare_and_set_status(request_id, IN_FLIGHT, FAILED, "contract test cleanup")


@pytest.mark.parametrize("status", list(TransferStatus))
@pytest.mark.parametrize("direction", list(Direction))
def test_round_trip_of_every_status_and_direction(transfer_store, make, user_id, status, direction):
    error = "insufficient balance" if status is FAILED else None
    record = make(user_id, status=status, direction=direction, error_message=error, asset=ETH, amount=1)
    assert transfer_store.get(record.request_id) == record


def test_round_trip_of_a_record_with_an_error_message_and_no_client_id(transfer_store, make, user_id):
    record = make(user_id, status=FAILED, error_message="funding ledger rejected: exceeds_credits")
    stored = transfer_store.get(record.request_id)
    assert stored == record
    assert stored.client_transfer_id is None


def test_get_of_a_missing_id_is_none(transfer_store, ids):
    assert transfer_store.get(ids.next_id()) is None


def test_get_many(transfer_store, make, ids, user_id):
    first = make(user_id)
    second = make(user_id + 1, asset=BTC)
    missing = ids.next_id()
    found = transfer_store.get_many([first.request_id, missing, second.request_id])
    assert found == {first.request_id: first, second.request_id: second}
    assert transfer_store.get_many([]) == {}
    assert transfer_store.get_many([missing]) == {}
    # Duplicates and any iterable (here a generator) are fine.
    assert transfer_store.get_many(i for i in [first.request_id, first.request_id]) == {first.request_id: first}


def test_get_by_client_transfer_id(transfer_store, make, user_id):
    record = make(user_id, client_transfer_id="order-1")
    assert transfer_store.get_by_client_transfer_id(user_id, "order-1") == record
    assert transfer_store.get_by_client_transfer_id(user_id, "order-2") is None
    assert transfer_store.get_by_client_transfer_id(user_id + 1, "order-1") is None


# --- client_transfer_id ------------------------------------------------------


def test_client_transfer_id_is_unique_per_user(transfer_store, make, ids, user_id):
    first = make(user_id, client_transfer_id="abc-123")
    duplicate = dataclasses.replace(first, request_id=ids.next_id(), amount=1, asset_id=BTC[0], asset_code=BTC[1])
    with pytest.raises(ClientTransferIdTaken) as taken:
        transfer_store.create(duplicate)
    assert taken.value.existing == first
    # The refused record was not stored, and the first is unchanged.
    assert transfer_store.get(duplicate.request_id) is None
    assert transfer_store.get(first.request_id) == first
    assert transfer_store.get_by_client_transfer_id(user_id, "abc-123") == first


def test_client_transfer_id_stays_taken_after_the_transfer_finished(transfer_store, make, ids, user_id):
    first = make(user_id, client_transfer_id="done-1")
    assert transfer_store.compare_and_set_status(first.request_id, {PENDING}, FAILED, "insufficient balance")
    with pytest.raises(ClientTransferIdTaken) as taken:
        make(user_id, client_transfer_id="done-1")
    assert taken.value.existing.request_id == first.request_id
    assert taken.value.existing.status is FAILED


def test_same_client_transfer_id_for_another_user_is_fine(transfer_store, make, user_id):
    mine = make(user_id, client_transfer_id="shared-id")
    theirs = make(user_id + 1, client_transfer_id="shared-id")
    assert transfer_store.get(mine.request_id) == mine
    assert transfer_store.get(theirs.request_id) == theirs
    assert transfer_store.get_by_client_transfer_id(user_id, "shared-id") == mine
    assert transfer_store.get_by_client_transfer_id(user_id + 1, "shared-id") == theirs


def test_many_transfers_without_client_transfer_id(transfer_store, make, user_id):
    records = [make(user_id, client_transfer_id=None) for _ in range(3)]
    assert transfer_store.get_many([r.request_id for r in records]) == {r.request_id: r for r in records}


def test_client_transfer_ids_differing_only_in_case_are_different(transfer_store, make, user_id):
    lower = make(user_id, client_transfer_id="case-id")
    upper = make(user_id, client_transfer_id="CASE-ID")
    assert transfer_store.get_by_client_transfer_id(user_id, "case-id") == lower
    assert transfer_store.get_by_client_transfer_id(user_id, "CASE-ID") == upper


# --- compare_and_set_status --------------------------------------------------


def test_cas_succeeds_from_an_expected_status(transfer_store, make, user_id):
    record = make(user_id, status=REQUESTING, updated_at_ms=1_000)
    assert transfer_store.compare_and_set_status(record.request_id, {REQUESTING}, PENDING, now_ms=2_000) is True
    stored = transfer_store.get(record.request_id)
    assert stored == dataclasses.replace(record, status=PENDING, updated_at_ms=2_000)
    assert transfer_store.compare_and_set_status(
        record.request_id, {REQUESTING, PENDING}, SUCCESS, now_ms=3_000
    ) is True
    assert transfer_store.get(record.request_id) == dataclasses.replace(record, status=SUCCESS, updated_at_ms=3_000)


def test_cas_from_an_unexpected_status_returns_false_and_changes_nothing(transfer_store, make, user_id):
    record = make(user_id, status=REQUESTING, updated_at_ms=1_000)
    assert transfer_store.compare_and_set_status(record.request_id, {PENDING}, SUCCESS, "x", now_ms=5_000) is False
    assert transfer_store.get(record.request_id) == record


def test_cas_with_nothing_expected_changes_nothing(transfer_store, make, user_id):
    record = make(user_id, status=PENDING)
    assert transfer_store.compare_and_set_status(record.request_id, set(), SUCCESS) is False
    assert transfer_store.get(record.request_id) == record


def test_cas_of_a_missing_record_returns_false_and_creates_nothing(transfer_store, ids):
    missing = ids.next_id()
    assert transfer_store.compare_and_set_status(missing, IN_FLIGHT, FAILED, "nope") is False
    assert transfer_store.get(missing) is None


def test_cas_sets_error_message_and_updated_at(transfer_store, make, user_id):
    record = make(user_id, status=PENDING, updated_at_ms=1_000)
    assert transfer_store.compare_and_set_status(
        record.request_id, IN_FLIGHT, FAILED, error_message="insufficient balance", now_ms=1_700_000_000_000
    )
    stored = transfer_store.get(record.request_id)
    assert stored.status is FAILED
    assert stored.error_message == "insufficient balance"
    assert stored.updated_at_ms == 1_700_000_000_000
    assert stored.created_at_ms == record.created_at_ms  # never touched


def test_cas_without_now_uses_the_current_time(transfer_store, make, user_id):
    record = make(user_id, status=PENDING, created_at_ms=1_000, updated_at_ms=1_000)
    before = now_ms()
    assert transfer_store.compare_and_set_status(record.request_id, {PENDING}, SUCCESS)
    after = now_ms()
    stored = transfer_store.get(record.request_id)
    assert before - 5 <= stored.updated_at_ms <= after + 5
    assert stored.created_at_ms == 1_000


@pytest.mark.parametrize("terminal", [SUCCESS, FAILED])
def test_terminal_never_changes(transfer_store, make, user_id, terminal):
    record = make(user_id, status=PENDING)
    error = "rejected by spot" if terminal is FAILED else None
    assert transfer_store.compare_and_set_status(record.request_id, IN_FLIGHT, terminal, error, now_ms=7_000)
    finished = transfer_store.get(record.request_id)
    for new_status in TransferStatus:
        assert transfer_store.compare_and_set_status(record.request_id, IN_FLIGHT, new_status, "late") is False
    assert transfer_store.get(record.request_id) == finished


@pytest.mark.parametrize("terminal", [SUCCESS, FAILED])
def test_terminal_never_changes_even_when_a_caller_names_it_as_expected(transfer_store, make, user_id, terminal):
    # "Terminal is final" is the store's promise, not only its callers' habit:
    # a buggy caller passing a terminal status in `expected` must not move it.
    record = make(user_id, status=terminal, error_message="x" if terminal is FAILED else None)
    other = FAILED if terminal is SUCCESS else SUCCESS
    try:
        changed = transfer_store.compare_and_set_status(record.request_id, set(TransferStatus), other, "late")
    except ValueError:
        changed = False
    assert changed is False
    assert transfer_store.get(record.request_id) == record


def test_cas_to_the_same_status_from_it(transfer_store, make, user_id):
    # A repeated step (e.g. a re-drive publishing again) may re-assert `pending`.
    record = make(user_id, status=PENDING, updated_at_ms=1_000)
    assert transfer_store.compare_and_set_status(record.request_id, {PENDING}, PENDING, now_ms=2_000) is True
    assert transfer_store.get(record.request_id).status is PENDING


def test_cas_changes_only_its_own_record(transfer_store, make, user_id):
    target = make(user_id, status=PENDING)
    bystander = make(user_id, status=PENDING)
    assert transfer_store.compare_and_set_status(target.request_id, {PENDING}, SUCCESS)
    assert transfer_store.get(bystander.request_id) == bystander


@pytest.mark.django_db(transaction=True)
def test_concurrent_cas_exactly_one_wins(transfer_store, make, user_id):
    # Transactional: each thread has its own connection and must see the
    # committed records. Works on PostgreSQL and on SQLite's shared-cache test
    # database alike. An earlier transactional test may have flushed the
    # seeded assets, so seed them again (the flush after this test removes them).
    import importlib

    from django.apps import apps
    from django.db import connections

    importlib.import_module("transfers.migrations.0002_seed_assets").seed_assets(apps, None)

    rounds = 15
    records = [make(user_id, status=PENDING) for _ in range(rounds)]
    for record in records:
        barrier = threading.Barrier(2)
        results: dict[TransferStatus, bool | BaseException] = {}

        def race(new_status: TransferStatus, record=record, barrier=barrier, results=results) -> None:
            try:
                barrier.wait(timeout=10)
                error = "insufficient balance" if new_status is FAILED else None
                results[new_status] = transfer_store.compare_and_set_status(
                    record.request_id, {PENDING}, new_status, error
                )
            except BaseException as error:  # reported by the assertion below
                results[new_status] = error
            finally:
                connections.close_all()

        threads = [threading.Thread(target=race, args=(status,)) for status in (SUCCESS, FAILED)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert set(results) == {SUCCESS, FAILED}, results
        assert all(isinstance(value, bool) for value in results.values()), results
        winners = [status for status, won in results.items() if won]
        assert len(winners) == 1, results
        stored = transfer_store.get(record.request_id)
        assert stored.status is winners[0]
        assert stored.error_message == ("insufficient balance" if winners[0] is FAILED else None)


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_under_one_client_id_store_exactly_one(transfer_store, ids, user_id):
    """Clients retrying at once: four different records race for one client id; one is stored."""
    import importlib

    from django.apps import apps
    from django.db import connection, connections

    if connection.vendor == "sqlite" and transfer_store.__class__.__name__ == "OrmTransferStore":
        pytest.skip("needs a database whose writers wait for each other (PostgreSQL)")  # as below
    importlib.import_module("transfers.migrations.0002_seed_assets").seed_assets(apps, None)

    for round_number in range(8):
        at = now_ms()
        contenders = [
            TransferRecord(request_id=ids.next_id(), user_id=user_id, asset_id=USDT[0], asset_code=USDT[1],
                           direction=Direction.FUNDING_TO_SPOT, amount=1_000 + n, status=REQUESTING,
                           client_transfer_id=f"retry-{round_number}", error_message=None,
                           created_at_ms=at, updated_at_ms=at)
            for n in range(4)
        ]
        barrier = threading.Barrier(len(contenders))
        outcomes: dict[int, object] = {}

        def create(record: TransferRecord, barrier=barrier, outcomes=outcomes) -> None:
            try:
                barrier.wait(timeout=10)
                transfer_store.create(record)
                outcomes[record.request_id] = "stored"
            except ClientTransferIdTaken as taken:
                outcomes[record.request_id] = taken.existing
            except BaseException as error:  # reported by the assertion below
                outcomes[record.request_id] = error
            finally:
                connections.close_all()

        threads = [threading.Thread(target=create, args=(record,)) for record in contenders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        winners = [record for record in contenders if outcomes.get(record.request_id) == "stored"]
        assert len(winners) == 1, outcomes
        (winner,) = winners
        assert all(outcomes[r.request_id] == winner for r in contenders if r is not winner), outcomes
        assert transfer_store.get_by_client_transfer_id(user_id, f"retry-{round_number}") == winner
        assert [r for r in contenders if transfer_store.get(r.request_id) is not None] == [winner]
        transfer_store.compare_and_set_status(winner.request_id, IN_FLIGHT, FAILED, "contract test cleanup")


# --- compare_and_set_many: a batch of compare-and-sets in one call ------------


def test_cas_many_moves_each_record_from_an_expected_status_and_says_from_which(transfer_store, make, user_id):
    requesting = make(user_id, status=REQUESTING, updated_at_ms=1_000)
    pending = make(user_id, status=PENDING, updated_at_ms=1_000)
    moved = transfer_store.compare_and_set_many(
        [
            StatusChange(requesting.request_id, (PENDING, REQUESTING), SUCCESS),
            StatusChange(pending.request_id, (PENDING, REQUESTING), FAILED, "insufficient balance"),
        ],
        now_ms=2_000,
    )
    assert moved == {requesting.request_id: REQUESTING, pending.request_id: PENDING}
    assert transfer_store.get(requesting.request_id) == dataclasses.replace(
        requesting, status=SUCCESS, updated_at_ms=2_000
    )
    assert transfer_store.get(pending.request_id) == dataclasses.replace(
        pending, status=FAILED, error_message="insufficient balance", updated_at_ms=2_000
    )


def test_cas_many_leaves_unexpected_terminal_and_missing_records_alone(transfer_store, make, ids, user_id):
    unexpected = make(user_id, status=PENDING)
    finished = make(user_id, status=SUCCESS)
    missing = ids.next_id()
    moved = transfer_store.compare_and_set_many(
        [
            StatusChange(unexpected.request_id, (REQUESTING,), PENDING),
            StatusChange(finished.request_id, (SUCCESS, PENDING), FAILED, "x"),  # terminal is final
            StatusChange(missing, (PENDING,), SUCCESS),
        ]
    )
    assert moved == {}
    assert transfer_store.get(unexpected.request_id) == unexpected
    assert transfer_store.get(finished.request_id) == finished
    assert transfer_store.get(missing) is None


def test_cas_many_of_nothing_is_nothing(transfer_store):
    assert transfer_store.compare_and_set_many([]) == {}


def test_cas_many_applies_changes_of_one_record_in_order(transfer_store, make, user_id):
    record = make(user_id, status=REQUESTING)
    moved = transfer_store.compare_and_set_many(
        [
            StatusChange(record.request_id, (REQUESTING,), PENDING),
            StatusChange(record.request_id, (PENDING,), SUCCESS),
            StatusChange(record.request_id, (PENDING,), FAILED, "too late"),
        ]
    )
    assert moved == {record.request_id: REQUESTING}
    stored = transfer_store.get(record.request_id)
    assert (stored.status, stored.error_message) == (SUCCESS, None)


def test_cas_many_of_a_large_batch(transfer_store, make, user_id):
    records = [make(user_id, status=PENDING) for _ in range(120)]
    moved = transfer_store.compare_and_set_many([StatusChange(r.request_id, (PENDING,), SUCCESS) for r in records])
    assert moved == {r.request_id: PENDING for r in records}
    assert {r.status for r in transfer_store.get_many([r.request_id for r in records]).values()} == {SUCCESS}


@pytest.mark.django_db(transaction=True)
def test_concurrent_cas_many_and_cas_exactly_one_wins(transfer_store, make, user_id):
    # As test_concurrent_cas_exactly_one_wins, one side a batch.
    import importlib

    from django.apps import apps
    from django.db import connection, connections

    if connection.vendor == "sqlite" and transfer_store.__class__.__name__ == "OrmTransferStore":
        # The test database is in-memory with a shared cache, where a second writer gets "table is
        # locked" at once instead of waiting (a file database waits: busy timeout). PostgreSQL runs it.
        pytest.skip("needs a database whose writers wait for each other (PostgreSQL)")

    importlib.import_module("transfers.migrations.0002_seed_assets").seed_assets(apps, None)

    for _ in range(10):
        records = [make(user_id, status=PENDING) for _ in range(5)]
        barrier = threading.Barrier(2)
        results: dict[str, object] = {}

        def batch(records=records, barrier=barrier, results=results) -> None:
            try:
                barrier.wait(timeout=10)
                results["batch"] = transfer_store.compare_and_set_many(
                    [StatusChange(r.request_id, (PENDING,), SUCCESS) for r in records]
                )
            except BaseException as error:
                results["batch"] = error
            finally:
                connections.close_all()

        def single(records=records, barrier=barrier, results=results) -> None:
            try:
                barrier.wait(timeout=10)
                results["single"] = transfer_store.compare_and_set_status(records[2].request_id, {PENDING}, FAILED, "x")
            except BaseException as error:
                results["single"] = error
            finally:
                connections.close_all()

        threads = [threading.Thread(target=batch), threading.Thread(target=single)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert isinstance(results["batch"], dict) and isinstance(results["single"], bool), results
        contested = records[2].request_id
        assert (contested in results["batch"]) != results["single"], results
        stored = transfer_store.get(contested)
        assert stored.status is (FAILED if results["single"] else SUCCESS)
        others = {r.request_id for r in records} - {contested}
        assert others <= set(results["batch"])


# --- list_for_user -----------------------------------------------------------


def test_list_for_user_is_newest_first(transfer_store, make, user_id):
    records = [make(user_id) for _ in range(5)]
    page = transfer_store.list_for_user(user_id)
    assert page.items == sorted(records, key=lambda r: r.request_id, reverse=True)
    assert page.next_cursor is None


def test_list_for_user_of_a_user_without_transfers_is_empty(transfer_store, user_id):
    page = transfer_store.list_for_user(user_id)
    assert page.items == []
    assert page.next_cursor is None


def test_list_for_user_never_lists_other_users(transfer_store, make, user_id):
    mine = [make(user_id) for _ in range(3)]
    for other in (user_id + 1, user_id - 1, user_id * 2):
        make(other, client_transfer_id="same")
    make(user_id + 1, asset=BTC, status=SUCCESS)
    items, _ = collect_all(transfer_store, user_id, limit=2)
    assert {r.request_id for r in items} == {r.request_id for r in mine}
    assert all(r.user_id == user_id for r in items)


def test_list_for_user_filters_by_asset_and_status(transfer_store, make, user_id):
    usdt_pending = make(user_id, asset=USDT, status=PENDING)
    usdt_success = make(user_id, asset=USDT, status=SUCCESS)
    btc_pending = make(user_id, asset=BTC, status=PENDING)
    btc_failed = make(user_id, asset=BTC, status=FAILED, error_message="insufficient balance")
    eth_requesting = make(user_id, asset=ETH, status=REQUESTING)
    make(user_id + 1, asset=BTC, status=PENDING)  # another user's

    def listed(**filters):
        return [r.request_id for r in transfer_store.list_for_user(user_id, **filters).items]

    def newest_first(*records):
        return sorted((r.request_id for r in records), reverse=True)

    assert listed(asset_id=USDT[0]) == newest_first(usdt_pending, usdt_success)
    assert listed(asset_id=BTC[0]) == newest_first(btc_pending, btc_failed)
    assert listed(statuses={PENDING}) == newest_first(usdt_pending, btc_pending)
    assert listed(statuses={FAILED}) == newest_first(btc_failed)
    assert listed(statuses={REQUESTING}) == newest_first(eth_requesting)
    assert listed(asset_id=BTC[0], statuses={PENDING}) == newest_first(btc_pending)
    assert listed(asset_id=ETH[0], statuses={SUCCESS}) == []
    # Several statuses at once (the API's `pending` is requesting or pending), and the edge sets.
    assert listed(statuses={REQUESTING, PENDING}) == newest_first(usdt_pending, btc_pending, eth_requesting)
    assert listed(statuses=[SUCCESS, FAILED]) == newest_first(usdt_success, btc_failed)
    assert listed(asset_id=BTC[0], statuses={REQUESTING, PENDING}) == newest_first(btc_pending)
    assert listed(statuses=set(TransferStatus)) == listed()
    assert listed(statuses=set()) == []
    assert listed() == newest_first(usdt_pending, usdt_success, btc_pending, btc_failed, eth_requesting)


def test_list_for_user_sees_status_changes(transfer_store, make, user_id):
    record = make(user_id, status=PENDING)
    assert transfer_store.compare_and_set_status(record.request_id, {PENDING}, SUCCESS)
    assert transfer_store.list_for_user(user_id, statuses={PENDING}).items == []
    (listed,) = transfer_store.list_for_user(user_id, statuses={SUCCESS}).items
    assert listed.request_id == record.request_id
    assert listed.status is SUCCESS


@pytest.mark.parametrize(("count", "limit"), [(10, 3), (9, 3), (3, 3), (1, 1), (4, 50), (7, 1)])
def test_pagination_walks_every_record_once(transfer_store, make, user_id, count, limit):
    records = [make(user_id) for _ in range(count)]
    items, pages = collect_all(transfer_store, user_id, limit=limit)
    assert [r.request_id for r in items] == sorted((r.request_id for r in records), reverse=True)
    assert items == sorted(records, key=lambda r: r.request_id, reverse=True)
    assert pages == -(-count // limit)  # no empty trailing page
    first_page = transfer_store.list_for_user(user_id, limit=limit)
    assert len(first_page.items) == min(count, limit)


def test_pagination_with_filters(transfer_store, make, user_id):
    wanted = []
    for i in range(12):
        asset = BTC if i % 2 else USDT
        status = PENDING if i % 3 else SUCCESS
        record = make(user_id, asset=asset, status=status)
        if asset == BTC and status is PENDING:
            wanted.append(record)
    items, _ = collect_all(transfer_store, user_id, asset_id=BTC[0], statuses={PENDING}, limit=2)
    assert [r.request_id for r in items] == sorted((r.request_id for r in wanted), reverse=True)


@pytest.mark.parametrize("limit", [1, 2, 3, 50])
def test_pagination_over_several_statuses_is_newest_first_without_gaps(transfer_store, make, user_id, limit):
    # Interleaved statuses, so a page's rows come from each status in turn (the ScyllaDB store
    # merges one query per status: every page must still be the newest of the union).
    cycle = [REQUESTING, PENDING, PENDING, SUCCESS, REQUESTING, FAILED, PENDING]
    records = [make(user_id, status=status) for status in cycle * 2]
    wanted = sorted((r.request_id for r in records if r.status in (REQUESTING, PENDING)), reverse=True)
    items, pages = collect_all(transfer_store, user_id, statuses={REQUESTING, PENDING}, limit=limit)
    assert [r.request_id for r in items] == wanted
    assert pages == -(-len(wanted) // limit)  # no empty trailing page
    items, _ = collect_all(transfer_store, user_id, statuses={SUCCESS, FAILED, REQUESTING}, limit=limit)
    assert [r.request_id for r in items] == sorted(
        (r.request_id for r in records if r.status in (SUCCESS, FAILED, REQUESTING)), reverse=True
    )


def test_records_created_while_paging_do_not_cause_duplicates_or_gaps(transfer_store, make, user_id):
    older = [make(user_id) for _ in range(6)]
    first = transfer_store.list_for_user(user_id, limit=3)
    newer = make(user_id)  # newer than the cursor: belongs before it, never on a later page
    rest, _ = collect_all_from(transfer_store, user_id, first.next_cursor, limit=3)
    seen = [r.request_id for r in first.items + rest]
    assert seen == sorted((r.request_id for r in older), reverse=True)
    assert newer.request_id not in seen


def collect_all_from(store, user_id, cursor, **filters):
    items, pages = [], 0
    while cursor is not None:
        page = store.list_for_user(user_id, cursor=cursor, **filters)
        items.extend(page.items)
        cursor = page.next_cursor
        pages += 1
        assert pages < 1000
    return items, pages


def test_a_cursor_is_only_a_position_not_a_user(transfer_store, make, user_id):
    # Another user's cursor must never reveal this user's neighbour's data.
    mine = [make(user_id) for _ in range(4)]
    theirs = [make(user_id + 1) for _ in range(4)]
    their_cursor = transfer_store.list_for_user(user_id + 1, limit=2).next_cursor
    try:
        page = transfer_store.list_for_user(user_id, cursor=their_cursor, limit=10)
    except InvalidCursor:
        return
    assert all(r.user_id == user_id for r in page.items)
    assert {r.request_id for r in page.items} <= {r.request_id for r in mine}
    assert not {r.request_id for r in page.items} & {r.request_id for r in theirs}


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "",
        " ",
        "-1",
        "1.5",
        "1e3",
        "0x10",
        "\uff11\uff12",  # fullwidth digits
        "\u0661\u0662",  # Arabic-Indic digits
        "12 ",
        "9" * 30,
        "99999999999999999999",  # 20 digits: above any 64-bit id
        "18446744073709551616",  # 2**64
        "eyJpZCI6MX0=",
        "\x00",
        "' OR 1=1 --",
    ],
)
def test_garbage_cursor_is_invalid(transfer_store, make, user_id, cursor):
    make(user_id)
    with pytest.raises(InvalidCursor):
        transfer_store.list_for_user(user_id, cursor=cursor)


def test_invalid_cursor_is_a_value_error():
    assert issubclass(InvalidCursor, ValueError)


# --- list_not_moved_since ----------------------------------------------------


def test_list_not_moved_since_returns_only_in_flight_records_older_than_the_cutoff(transfer_store, make, user_id):
    cutoff = now_ms() - 600_000
    old_requesting = make(user_id, status=REQUESTING, updated_at_ms=cutoff - 50_000)
    old_pending = make(user_id + 1, status=PENDING, updated_at_ms=cutoff - 1)
    make(user_id, status=PENDING, updated_at_ms=cutoff)  # exactly at the cutoff: not older
    make(user_id, status=PENDING, updated_at_ms=cutoff + 1)
    make(user_id, status=REQUESTING, updated_at_ms=now_ms())
    make(user_id, status=SUCCESS, updated_at_ms=cutoff - 50_000)
    make(user_id, status=FAILED, error_message="x", updated_at_ms=cutoff - 50_000)
    ours = {user_id, user_id + 1}

    found = transfer_store.list_not_moved_since(IN_FLIGHT, cutoff, limit=10_000)
    assert all(r.status in IN_FLIGHT and r.updated_at_ms < cutoff for r in found)
    assert {r.request_id for r in found if r.user_id in ours} == {old_requesting.request_id, old_pending.request_id}
    # The records come back whole.
    by_id = {r.request_id: r for r in found}
    assert by_id[old_pending.request_id] == old_pending

    only_requesting = transfer_store.list_not_moved_since({REQUESTING}, cutoff, limit=10_000)
    assert all(r.status is REQUESTING for r in only_requesting)
    assert {r.request_id for r in only_requesting if r.user_id in ours} == {old_requesting.request_id}


def test_list_not_moved_since_respects_the_limit(transfer_store, make, user_id):
    cutoff = now_ms() - 600_000
    for i in range(3):
        make(user_id, status=PENDING, updated_at_ms=cutoff - 1_000 - i)
    assert len(transfer_store.list_not_moved_since(IN_FLIGHT, cutoff, limit=2)) == 2
    assert len(transfer_store.list_not_moved_since(IN_FLIGHT, cutoff, limit=1)) == 1


def test_list_not_moved_since_lists_only_the_users_of_the_given_shards(transfer_store, make, user_id):
    """What one relay copy sees: users with `user_id % count` in its shards, and every one of them."""
    cutoff = now_ms() - 600_000
    users = [user_id + n for n in range(4)]
    made = {u: make(u, status=REQUESTING, updated_at_ms=cutoff - 100 + n) for n, u in enumerate(users)}
    ours = set(users)

    def listed(shards: UserShards) -> set[int]:
        found = transfer_store.list_not_moved_since({REQUESTING}, cutoff, limit=10_000, users=shards)
        return {r.request_id for r in found if r.user_id in ours}

    even, odd = UserShards(2, frozenset({0})), UserShards(2, frozenset({1}))
    assert listed(even) == {made[u].request_id for u in users if u % 2 == 0}
    assert listed(odd) == {made[u].request_id for u in users if u % 2 == 1}
    assert listed(UserShards(4, frozenset({0, 1, 2, 3}))) == {r.request_id for r in made.values()}
    assert listed(UserShards(4, frozenset())) == set()


def test_a_status_change_takes_a_record_out_of_the_stuck_list(transfer_store, make, user_id):
    cutoff = now_ms() - 600_000
    stuck = make(user_id, status=REQUESTING, updated_at_ms=cutoff - 10)
    moved = make(user_id, status=REQUESTING, updated_at_ms=cutoff - 10)
    finished = make(user_id, status=PENDING, updated_at_ms=cutoff - 10)
    assert transfer_store.compare_and_set_status(moved.request_id, {REQUESTING}, PENDING)  # now: fresh
    assert transfer_store.compare_and_set_status(finished.request_id, {PENDING}, SUCCESS, now_ms=cutoff - 5)
    found = transfer_store.list_not_moved_since(IN_FLIGHT, cutoff, limit=10_000)
    assert {r.request_id for r in found if r.user_id == user_id} == {stuck.request_id}


# --- timeline (append_events / timeline) -------------------------------------


def test_timeline_of_a_transfer_without_events_is_empty(transfer_store, ids):
    assert transfer_store.timeline(ids.next_id()) == []


def test_appended_events_come_back_oldest_first_whole(transfer_store, make, user_id):
    from transfers.domain import EventKind, TimelineEvent

    record = make(user_id, status=REQUESTING)
    at = record.created_at_ms
    accepted = TimelineEvent(record.request_id, EventKind.ACCEPTED, at, {}, "", "web")
    published = TimelineEvent(record.request_id, EventKind.PUBLISHED, at, {"message": "TransferRequested"}, "", "web")
    moved = TimelineEvent(record.request_id, EventKind.STATUS_CHANGED, at + 7,
                          {"from": "requesting", "to": "pending"}, "", "web")
    answer = TimelineEvent(record.request_id, EventKind.UBSCORE_ANSWER, at + 40,
                           {"status": "rejected", "reason": "spot account frozen — ünïcode"}, "", "worker")
    # Appended out of time order, in two calls: the timeline is ordered by time.
    transfer_store.append_events([accepted, published, answer])
    transfer_store.append_events([moved])
    assert transfer_store.timeline(record.request_id) == [accepted, published, moved, answer]
    assert transfer_store.timeline(record.request_id, limit=2) == [accepted, published]


def test_create_stores_the_records_first_events_with_it(transfer_store, make, ids, user_id):
    from transfers.domain import EventKind, TimelineEvent

    first = make(user_id, client_transfer_id="with-events")
    record = dataclasses.replace(first, request_id=ids.next_id(), client_transfer_id="with-events-2")
    accepted = TimelineEvent(record.request_id, EventKind.ACCEPTED, record.created_at_ms, {}, "", "web")
    transfer_store.create(record, [accepted])
    assert transfer_store.get(record.request_id) == record
    assert transfer_store.timeline(record.request_id) == [accepted]

    # A create refused for its client id stores neither the record nor its events.
    refused = dataclasses.replace(first, request_id=ids.next_id())
    with pytest.raises(ClientTransferIdTaken):
        transfer_store.create(refused, [TimelineEvent(refused.request_id, EventKind.ACCEPTED, 1, {}, "", "web")])
    assert transfer_store.get(refused.request_id) is None
    assert transfer_store.timeline(refused.request_id) == []


def test_one_batch_appends_events_of_many_transfers(transfer_store, make, user_id):
    from transfers.domain import EventKind, TimelineEvent

    first, second = make(user_id), make(user_id + 1)
    batch = [
        TimelineEvent(first.request_id, EventKind.LEDGER_RESERVED, 10, {"ledger_status": "CREATED"}),
        TimelineEvent(second.request_id, EventKind.LEDGER_RESERVE_REFUSED, 10, {"ledger_status": "EXCEEDS_CREDITS"}),
        TimelineEvent(first.request_id, EventKind.TRANSFER_IN_SENT, 11),
    ]
    transfer_store.append_events(batch)
    assert transfer_store.timeline(first.request_id) == [batch[0], batch[2]]
    assert transfer_store.timeline(second.request_id) == [batch[1]]
    transfer_store.append_events([])  # nothing to do


def test_the_timeline_is_append_only(transfer_store, make, user_id):
    from transfers.domain import EventKind, TimelineEvent

    record = make(user_id)
    redrive = TimelineEvent(record.request_id, EventKind.REDRIVE, 500, {"status": "pending"}, "admin:alice")
    transfer_store.append_events([redrive])
    transfer_store.append_events([redrive])  # the same event again is another entry, never an overwrite
    assert transfer_store.timeline(record.request_id) == [redrive, redrive]
    # A status change does not touch the timeline; the record does not depend on it.
    assert transfer_store.compare_and_set_status(record.request_id, IN_FLIGHT, SUCCESS)
    assert transfer_store.timeline(record.request_id) == [redrive, redrive]


@pytest.mark.parametrize("request_id", [2**63, 2**64 + 5, 9_999_999_999_999_999_999])
def test_an_id_beyond_the_64_bit_range_is_unknown_not_an_error(transfer_store, request_id):
    assert transfer_store.get(request_id) is None


# --- The operations overview -------------------------------------------------------
# Relative to a first read: a server that keeps data between runs has other transfers in the window.


def _delta(after: dict, before: dict) -> dict:
    return {key: after.get(key, 0) - before.get(key, 0) for key in after.keys() | before.keys()
            if after.get(key, 0) != before.get(key, 0)}


def test_activity_counts_accepted_and_finished_transfers_per_minute(transfer_store, make, user_id):
    minute = now_ms() // 60_000 * 60_000 - 2 * 60_000  # two minutes ago, so both minutes are whole
    before = transfer_store.activity_since(minute)
    records = [make(user_id, created_at_ms=minute + 5_000 + i, updated_at_ms=minute + 5_000 + i) for i in range(3)]
    assert transfer_store.compare_and_set_status(records[0].request_id, {PENDING}, SUCCESS, now_ms=minute + 61_000)
    assert transfer_store.compare_and_set_status(records[1].request_id, {PENDING}, FAILED, "insufficient balance",
                                                 now_ms=minute + 62_000)
    after = transfer_store.activity_since(minute)

    assert _delta(after.per_minute, before.per_minute) == {
        (minute, "accepted"): 3,
        (minute + 60_000, "success"): 1,
        (minute + 60_000, "failed"): 1,
    }
    assert _delta(after.failure_reasons, before.failure_reasons) == {"insufficient balance": 1}
    later = transfer_store.activity_since(minute + 60_000)  # the window starts after the accepts
    assert (minute, "accepted") not in later.per_minute
    assert later.per_minute.get((minute + 60_000, "success"), 0) >= 1


def test_in_flight_and_stuck_counts(transfer_store, make, user_id):
    cutoff = now_ms() - 30_000
    before = transfer_store.count_in_flight(cutoff, limit=1_000_000)
    old = [make(user_id, updated_at_ms=cutoff - 60_000) for _ in range(2)]
    make(user_id, status=REQUESTING)  # fresh: in flight, not stuck
    finished = make(user_id)
    assert transfer_store.compare_and_set_status(finished.request_id, {PENDING}, SUCCESS)
    after = transfer_store.count_in_flight(cutoff, limit=1_000_000)

    assert after.complete
    assert _delta(after.in_flight, before.in_flight) == {PENDING: 2, REQUESTING: 1}
    assert _delta(after.stuck, before.stuck) == {PENDING: 2}
    assert transfer_store.compare_and_set_status(old[0].request_id, {PENDING}, FAILED, "contract test")
    assert _delta(transfer_store.count_in_flight(cutoff, limit=1_000_000).stuck, before.stuck) == {PENDING: 1}


def test_in_flight_count_stops_at_its_limit(transfer_store, make, user_id):
    for _ in range(40):
        make(user_id)
    counts = transfer_store.count_in_flight(now_ms(), limit=16)
    total = sum(counts.in_flight.values())
    # The ORM counts with its index and is always complete; a store that scans says it stopped.
    if counts.complete:
        assert total >= 40
    else:
        assert 0 < total <= 16
