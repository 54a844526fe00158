"""The TigerBeetle adapter's own logic, without a server (settlement/ledger/tigerbeetle.py).

A fake client is injected through `client_factory`. It encodes every event
with the real client's ctypes structures, so what the adapter hands over is
exactly what `tigerbeetle.ClientSync` would accept. What TigerBeetle answers
is the contract suite's business (tests/contract, with TIGERBEETLE_ADDRESSES).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import pytest
import tigerbeetle as tb
from tigerbeetle import bindings
from tigerbeetle.client import InitError
from tigerbeetle.lib import c_uint128

from settlement.ledger import tigerbeetle as adapter
from settlement.ledger.base import (
    UINT128_MAX,
    Account,
    AccountFlags,
    CreateAccountStatus,
    CreateTransferStatus,
    FundingLedger,
    LedgerUnavailable,
    Transfer,
    TransferFlags,
)
from settlement.ledger.tigerbeetle import RequestTooLarge, TigerBeetleFundingLedger, chunks, split_point

T = CreateTransferStatus


class FakeClient:
    """Stands in for tigerbeetle.ClientSync; behaviour is set by its FakeCluster."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.closed = False
        self.pid = os.getpid()

    def _submit(self, operation: str, events: Sequence, encode) -> None:
        assert not self.closed, "request on a closed client"
        for event in events:
            encode(event)  # what the real client does first; raises on bad values
        self.cluster.calls.append((operation, list(events)))
        self.cluster.threads.add(threading.get_ident())
        if self.cluster.block is not None:
            self.cluster.block.wait()
        if self.cluster.fail is not None:
            error, self.cluster.fail = self.cluster.fail, None
            raise error
        limit = self.cluster.max_events
        if limit is not None and len(events) > limit:
            raise tb.TooMuchDataError()

    def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]:
        self._submit("create_accounts", accounts, bindings.CAccount.from_param)
        # user_data_32, when set, is the status to answer: order is checkable.
        return [
            tb.CreateAccountResult(
                timestamp=i + 1,
                status=tb.CreateAccountStatus(a.user_data_32) if a.user_data_32 else tb.CreateAccountStatus.CREATED,
            )
            for i, a in enumerate(accounts)
        ][: self.cluster.results_limit]

    def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]:
        self._submit("create_transfers", transfers, bindings.CTransfer.from_param)
        return [
            tb.CreateTransferResult(
                timestamp=i + 1,
                status=tb.CreateTransferStatus(t.user_data_32) if t.user_data_32 else tb.CreateTransferStatus.CREATED,
            )
            for i, t in enumerate(transfers)
        ][: self.cluster.results_limit]

    def lookup_accounts(self, ids: list[int]) -> list[tb.Account]:
        self._submit("lookup_accounts", ids, c_uint128.from_param)
        return [self.cluster.accounts[i] for i in ids if i in self.cluster.accounts]

    def lookup_transfers(self, ids: list[int]) -> list[tb.Transfer]:
        self._submit("lookup_transfers", ids, c_uint128.from_param)
        return [self.cluster.transfers[i] for i in ids if i in self.cluster.transfers]

    def query_accounts(self, query: tb.QueryFilter) -> list[tb.Account]:
        bindings.CQueryFilter.from_param(query)
        if self.cluster.max_query_limit is not None and query.limit > self.cluster.max_query_limit:
            raise tb.TooMuchDataError()
        found = [
            a
            for a in sorted(self.cluster.accounts.values(), key=lambda a: a.timestamp)
            if a.ledger == query.ledger and a.code == query.code and a.timestamp >= query.timestamp_min
        ][: query.limit]
        self.cluster.queries.append((query, found))
        return found

    def close(self) -> None:
        assert self.pid == os.getpid(), "a client closed in another process than its own"
        self.closed = True


class FakeCluster:
    """The client factory: records the clients it made and what they were asked."""

    def __init__(self) -> None:
        self.clients: list[FakeClient] = []
        self.calls: list[tuple[str, list]] = []
        self.queries: list[tuple[tb.QueryFilter, list[tb.Account]]] = []  # answered ones
        self.threads: set[int] = set()
        self.max_events: int | None = None
        self.max_query_limit: int | None = None
        self.results_limit: int | None = None
        self.fail: BaseException | None = None
        self.block: threading.Event | None = None
        self.accounts: dict[int, tb.Account] = {}
        self.transfers: dict[int, tb.Transfer] = {}
        self.factory_error: BaseException | None = None

    def __call__(self, cluster_id: int, addresses: str) -> FakeClient:
        if self.factory_error is not None:
            raise self.factory_error
        client = FakeClient(self)
        self.clients.append(client)
        return client

    def sizes(self, operation: str) -> list[int]:
        return [len(events) for op, events in self.calls if op == operation]


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def ledger(cluster: FakeCluster) -> TigerBeetleFundingLedger:
    return TigerBeetleFundingLedger(cluster_id=0, addresses="127.0.0.1:3000", client_factory=cluster)


def transfer(n: int, flags: TransferFlags = TransferFlags.NONE, status: int = 0) -> Transfer:
    return Transfer(
        id=n, debit_account_id=1, credit_account_id=2, amount=n, ledger=1, code=1, flags=flags, user_data_32=status
    )


# --- Mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (AccountFlags, tb.AccountFlags),
        (TransferFlags, tb.TransferFlags),
        (CreateAccountStatus, tb.CreateAccountStatus),
        (CreateTransferStatus, tb.CreateTransferStatus),
    ],
)
def test_port_enums_are_the_clients(ours: type, theirs: type) -> None:
    assert {m.name: int(m) for m in ours} == {m.name: int(m) for m in theirs}


def test_a_client_enum_that_drifts_fails_the_import() -> None:
    import enum

    class Drifted(enum.IntEnum):
        CREATED = 0xFFFFFFFF
        EXISTS = 99

    with pytest.raises(ImportError, match="no longer matches"):
        adapter._same_enum(CreateAccountStatus, Drifted)


def test_account_round_trip_keeps_every_field() -> None:
    account = Account(
        id=UINT128_MAX - 1,
        ledger=(1 << 32) - 1,
        code=(1 << 16) - 1,
        flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags.HISTORY,
        user_data_128=UINT128_MAX,
        user_data_64=(1 << 64) - 1,
        user_data_32=(1 << 32) - 1,
        debits_pending=1,
        debits_posted=2,
        credits_pending=3,
        credits_posted=1 << 127,
        timestamp=(1 << 63) + 5,
    )
    theirs = adapter.account_to_tb(account)
    assert isinstance(theirs, tb.Account)
    assert theirs.flags == tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | tb.AccountFlags.HISTORY
    # Encodable by the real client, and back through its own decoder.
    decoded = bindings.CAccount.from_param(theirs).to_python()
    back = adapter.account_from_tb(decoded)
    assert back == account
    assert type(back.flags) is AccountFlags


def test_transfer_round_trip_keeps_every_field() -> None:
    ours = Transfer(
        id=7,
        debit_account_id=UINT128_MAX - 1,
        credit_account_id=1 << 100,
        amount=UINT128_MAX,  # AMOUNT_MAX: "post the full pending amount"
        ledger=9,
        code=3,
        flags=TransferFlags.POST_PENDING_TRANSFER | TransferFlags.LINKED,
        pending_id=1 << 90,
        user_data_128=11,
        user_data_64=(1 << 64) - 1,
        user_data_32=13,
        timeout=(1 << 32) - 1,
        timestamp=17,
    )
    theirs = adapter.transfer_to_tb(ours)
    assert theirs.amount == tb.AMOUNT_MAX
    back = adapter.transfer_from_tb(bindings.CTransfer.from_param(theirs).to_python())
    assert back == ours
    assert type(back.flags) is TransferFlags


def test_reserved_flag_bits_pass_through_for_the_server_to_refuse() -> None:
    # The contract suite expects RESERVED_FLAG from the server, not a client-side error.
    account = Account(id=1, ledger=1, code=1, flags=AccountFlags(1 << 10))
    assert int(bindings.CAccount.from_param(adapter.account_to_tb(account)).flags) == 1 << 10


def test_statuses_map_by_value_for_every_code() -> None:
    for status in tb.CreateTransferStatus:
        result = tb.CreateTransferResult(timestamp=1, status=status)
        assert adapter.transfer_status_from_tb(result).name == status.name
    for status in tb.CreateAccountStatus:
        result = tb.CreateAccountResult(timestamp=1, status=status)
        assert adapter.account_status_from_tb(result).name == status.name


def test_values_the_client_cannot_encode_are_caller_errors(ledger: TigerBeetleFundingLedger) -> None:
    with pytest.raises(TypeError):
        ledger.create_transfers([Transfer(**{**vars(transfer(1)), "amount": 1.5})])
    with pytest.raises(ValueError, match="negative"):
        ledger.create_transfers([Transfer(**{**vars(transfer(1)), "amount": -1})])
    with pytest.raises(ValueError, match="too large"):
        ledger.lookup_accounts([UINT128_MAX + 1])  # the client itself would wrap it around
    with pytest.raises(ValueError, match="too large"):
        ledger.lookup_transfers([-1])


def test_create_answers_one_status_per_event_in_order(ledger: TigerBeetleFundingLedger, cluster: FakeCluster) -> None:
    events = [transfer(1), transfer(2, status=T.EXCEEDS_CREDITS), transfer(3, status=T.EXISTS), transfer(4)]
    assert ledger.create_transfers(events) == [T.CREATED, T.EXCEEDS_CREDITS, T.EXISTS, T.CREATED]
    ((operation, sent),) = cluster.calls
    assert operation == "create_transfers"
    assert [t.id for t in sent] == [1, 2, 3, 4]
    accounts = [
        Account(id=1, ledger=1, code=1),
        Account(id=2, ledger=1, code=1, user_data_32=CreateAccountStatus.EXISTS),
    ]
    assert ledger.create_accounts(accounts) == [CreateAccountStatus.CREATED, CreateAccountStatus.EXISTS]


def test_lookups_map_back_in_the_order_found(ledger: TigerBeetleFundingLedger, cluster: FakeCluster) -> None:
    cluster.accounts = {i: tb.Account(id=i, ledger=1, code=2, credits_posted=i * 10, timestamp=i) for i in (5, 6)}
    cluster.transfers = {9: adapter.transfer_to_tb(transfer(9))}
    found = ledger.lookup_accounts([6, 404, 5])
    assert [(a.id, a.credits_posted, a.code) for a in found] == [(6, 60, 2), (5, 50, 2)]
    assert all(isinstance(a, Account) for a in found)
    assert ledger.lookup_transfers([9, 10]) == [transfer(9)]


def test_a_short_answer_is_not_taken_for_a_full_one(ledger: TigerBeetleFundingLedger, cluster: FakeCluster) -> None:
    cluster.results_limit = 1
    with pytest.raises(LedgerUnavailable, match="1 results for 2 events"):
        ledger.create_transfers([transfer(1), transfer(2)])


def test_empty_batches_need_no_client(ledger: TigerBeetleFundingLedger, cluster: FakeCluster) -> None:
    assert ledger.create_transfers([]) == []
    assert ledger.create_accounts([]) == []
    assert ledger.lookup_accounts([]) == []
    assert cluster.clients == []


# --- Batches ------------------------------------------------------------------------------


def test_large_batches_go_in_requests_of_at_most_max_batch_size(
    ledger: TigerBeetleFundingLedger, cluster: FakeCluster
) -> None:
    assert ledger.max_batch_size == 8189
    events = [transfer(i + 1) for i in range(8189 + 3)]
    assert ledger.create_transfers(events) == [T.CREATED] * len(events)
    assert cluster.sizes("create_transfers") == [8189, 3]
    ledger.lookup_accounts(list(range(1, 8189 * 2 + 2)))
    assert cluster.sizes("lookup_accounts") == [8189, 8189, 1]


def test_too_much_data_splits_in_halves_and_keeps_the_order(
    ledger: TigerBeetleFundingLedger, cluster: FakeCluster
) -> None:
    cluster.max_events = 3
    events = [transfer(i + 1, status=T.EXISTS if i % 4 == 0 else 0) for i in range(10)]
    expected = [T.EXISTS if i % 4 == 0 else T.CREATED for i in range(10)]
    assert ledger.create_transfers(events) == expected
    accepted = [events for op, events in cluster.calls if len(events) <= 3]
    assert [t.id for piece in accepted for t in piece] == list(range(1, 11))


def test_the_request_size_the_server_takes_is_learnt(ledger: TigerBeetleFundingLedger, cluster: FakeCluster) -> None:
    # A development server (--limit-request=32KiB) takes 253 transfers per request.
    cluster.max_events = 253
    events = [transfer(i + 1) for i in range(3000)]
    for _ in range(4):
        assert ledger.create_transfers(events) == [T.CREATED] * 3000
    cluster.calls.clear()
    assert ledger.create_transfers(events) == [T.CREATED] * 3000
    sizes = cluster.sizes("create_transfers")
    assert max(sizes) <= 253  # no refusals any more
    assert len(sizes) <= 3000 // 200 + 1  # and nearly full requests


def test_a_server_limit_that_shrinks_is_learnt_again(ledger: TigerBeetleFundingLedger, cluster: FakeCluster) -> None:
    cluster.max_events = 100
    ledger.create_transfers([transfer(i + 1) for i in range(500)])
    cluster.max_events = 10
    assert ledger.create_transfers([transfer(i + 1) for i in range(500)]) == [T.CREATED] * 500


def test_splitting_never_cuts_a_linked_chain(ledger: TigerBeetleFundingLedger, cluster: FakeCluster) -> None:
    cluster.max_events = 4
    linked = TransferFlags.LINKED
    flags = [0, linked, linked, 0, 0, linked, 0, linked, linked, linked, 0, 0]
    events = [transfer(i + 1, TransferFlags(f)) for i, f in enumerate(flags)]
    assert ledger.create_transfers(events) == [T.CREATED] * len(events)
    accepted = [piece for _, piece in cluster.calls if len(piece) <= 4]
    assert [t.id for piece in accepted for t in piece] == list(range(1, 13))
    for piece in accepted:
        assert not piece[-1].flags & linked, [t.id for t in piece]


def test_a_chain_that_cannot_fit_one_request_is_refused(
    ledger: TigerBeetleFundingLedger, cluster: FakeCluster
) -> None:
    cluster.max_events = 4
    chain = [transfer(i + 1, TransferFlags.LINKED) for i in range(5)] + [transfer(6)]
    with pytest.raises(RequestTooLarge):
        ledger.create_transfers(chain)
    assert all(len(piece) == 6 for _, piece in cluster.calls)  # never sent cut


def test_chunks_cut_between_chains_only() -> None:
    linked = TransferFlags.LINKED
    events = [transfer(i + 1, TransferFlags(f)) for i, f in enumerate([0, linked, linked, 0, linked, 0, 0])]
    pieces = [[t.id for t in piece] for piece in chunks(events, 3)]
    assert pieces == [[1], [2, 3, 4], [5, 6, 7]]
    # A chain longer than the size stays whole; an open chain stays at the end.
    long_chain = [transfer(i + 1, linked) for i in range(5)] + [transfer(6), transfer(7, linked)]
    assert [[t.id for t in piece] for piece in chunks(long_chain, 2)] == [[1, 2, 3, 4, 5, 6], [7]]
    assert split_point(events) == 4
    assert split_point([transfer(1, linked), transfer(2)]) is None


# --- Failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (tb.ClientEvictedError(), "evicted"),
        (tb.ClientClosedError(), "closed"),
        (tb.ClientReleaseTooLowError(), "too old"),
        (tb.ClientReleaseTooHighError(), "newer than the cluster"),
        (Exception("Unexpected PacketStatus"), "Unexpected PacketStatus"),
    ],
)
def test_a_failed_session_raises_ledger_unavailable_and_the_next_call_opens_another(
    ledger: TigerBeetleFundingLedger, cluster: FakeCluster, error: Exception, message: str
) -> None:
    cluster.fail = error
    with pytest.raises(LedgerUnavailable, match=message) as raised:
        ledger.create_transfers([transfer(1)])
    assert raised.value.__cause__ is error
    assert cluster.clients[0].closed
    assert ledger.create_transfers([transfer(1)]) == [T.CREATED]
    assert len(cluster.clients) == 2 and not cluster.clients[1].closed


def test_caller_errors_keep_the_session(ledger: TigerBeetleFundingLedger, cluster: FakeCluster) -> None:
    with pytest.raises(ValueError):
        ledger.create_transfers([Transfer(**{**vars(transfer(1)), "ledger": 1 << 32})])
    ledger.create_transfers([transfer(1)])
    assert len(cluster.clients) == 1 and not cluster.clients[0].closed


def test_invalid_addresses_are_a_configuration_error(cluster: FakeCluster) -> None:
    with pytest.raises(ValueError, match="empty"):
        TigerBeetleFundingLedger(cluster_id=0, addresses=" ")
    # The real client parses addresses without a server.
    with pytest.raises(ValueError, match="ADDRESS_INVALID"):
        TigerBeetleFundingLedger(cluster_id=0, addresses="not an address").ping()
    cluster.factory_error = InitError(tb.InitStatus.SYSTEM_RESOURCES)
    ledger = TigerBeetleFundingLedger(cluster_id=0, addresses="3000", client_factory=cluster)
    with pytest.raises(LedgerUnavailable, match="SYSTEM_RESOURCES"):
        ledger.ping()


def test_addresses_of_a_cluster_are_joined() -> None:
    ledger = TigerBeetleFundingLedger(cluster_id=5, addresses=["10.0.0.1:3000", " 10.0.0.2:3000", "10.0.0.3:3000"])
    assert ledger.addresses == "10.0.0.1:3000,10.0.0.2:3000,10.0.0.3:3000"
    assert ledger.cluster_id == 5
    spaced = TigerBeetleFundingLedger(cluster_id=0, addresses=" 127.0.0.1:3000, 127.0.0.1:3001 ,")
    assert spaced.addresses == "127.0.0.1:3000,127.0.0.1:3001"


def test_a_silent_cluster_raises_ledger_unavailable_after_the_timeout(cluster: FakeCluster) -> None:
    ledger = TigerBeetleFundingLedger(
        cluster_id=0, addresses="3000", client_factory=cluster, request_timeout=0.2, ping_timeout=0.1, max_waiting=2
    )
    cluster.block = threading.Event()
    try:
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable, match=r"did not answer lookup_accounts within 0\.1s"):
            ledger.ping()
        with pytest.raises(LedgerUnavailable, match=r"within 0\.2s"):
            ledger.create_transfers([transfer(1)])
        assert time.monotonic() - started < 2
        # Two requests still wait for the cluster: the next call fails at once.
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable, match=r"2 requests .* still unanswered"):
            ledger.lookup_accounts([1])
        assert time.monotonic() - started < 0.1
    finally:
        cluster.block.set()
    # The cluster answers again: the waiting requests finish, the session is the same.
    deadline = time.monotonic() + 5
    while ledger._state.waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    cluster.block = None
    ledger.ping()
    assert len(cluster.clients) == 1


def test_without_a_timeout_the_request_runs_on_the_calling_thread(cluster: FakeCluster) -> None:
    ledger = TigerBeetleFundingLedger(cluster_id=0, addresses="3000", client_factory=cluster, request_timeout=None)
    ledger.create_transfers([transfer(1)])
    assert cluster.threads == {threading.get_ident()}


# --- Sessions: lazy, shared by threads, one per process -----------------------------------


def test_the_client_is_created_on_first_use_and_shared_by_threads(
    ledger: TigerBeetleFundingLedger, cluster: FakeCluster
) -> None:
    assert cluster.clients == []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for n in range(20):
                ledger.create_transfers([transfer(n + 1)])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cluster.clients) == 1
    assert len(cluster.calls) == 160


def test_close_closes_the_client_and_a_later_call_opens_a_new_one(
    ledger: TigerBeetleFundingLedger, cluster: FakeCluster
) -> None:
    ledger.close()  # nothing opened yet: nothing to do
    ledger.ping()
    ledger.close()
    assert cluster.clients[0].closed
    ledger.ping()
    assert len(cluster.clients) == 2


def test_a_forked_process_gets_its_own_client(
    ledger: TigerBeetleFundingLedger, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.ping()
    parent_client = cluster.clients[0]
    monkeypatch.setattr(adapter.os, "getpid", lambda: parent_client.pid + 1)
    monkeypatch.setattr(FakeClient, "close", lambda self: setattr(self, "closed", True))
    ledger.close()  # the parent's client is not this process's to close
    assert not parent_client.closed
    ledger.ping()
    assert len(cluster.clients) == 2
    assert not parent_client.closed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_real_fork_opens_a_client_in_the_child(ledger: TigerBeetleFundingLedger, cluster: FakeCluster) -> None:
    ledger.ping()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's teardown
        code = 1
        try:
            ledger.ping()
            ledger.close()
            children = [c for c in cluster.clients if c.pid == os.getpid()]
            report = f"{len(cluster.clients)} {len(children)} {children[0].closed} {cluster.clients[0].closed}"
            os.write(write_end, report.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # In the child: a second client of its own, closed by close(); the parent's untouched.
    assert report == "2 1 True False"
    assert len(cluster.clients) == 1 and not cluster.clients[0].closed


# --- accounts_with_code ----------------------------------------------------------------------


def test_accounts_with_code_pages_through_by_timestamp(
    ledger: TigerBeetleFundingLedger, cluster: FakeCluster
) -> None:
    cluster.accounts = {
        i: tb.Account(id=i, ledger=7 if i % 5 else 8, code=1 if i % 3 else 2, credits_posted=i, timestamp=1000 + i)
        for i in range(1, 400)
    }
    cluster.max_query_limit = 50
    found = list(ledger.accounts_with_code(7, 1))
    expected = [i for i in range(1, 400) if i % 5 and i % 3]
    assert [a.id for a in found] == expected
    assert all(isinstance(a, Account) and a.credits_posted == a.id for a in found)
    queries = [query for query, _ in cluster.queries]
    assert {(q.ledger, q.code, q.timestamp_max, q.flags) for q in queries} == {(7, 1, 0, tb.QueryFilterFlags.NONE)}
    assert queries[0].timestamp_min == 0
    for (_, page), (query, _) in zip(cluster.queries, cluster.queries[1:], strict=False):
        assert query.timestamp_min == page[-1].timestamp + 1  # the next page starts after the last one
    assert len(cluster.queries[-1][1]) < cluster.queries[-1][0].limit  # a short page ends it


def test_accounts_with_code_ends_on_an_exactly_full_page(
    ledger: TigerBeetleFundingLedger, cluster: FakeCluster
) -> None:
    cluster.accounts = {i: tb.Account(id=i, ledger=7, code=1, timestamp=i) for i in range(1, 9)}
    cluster.max_query_limit = 4
    assert [a.id for a in ledger.accounts_with_code(7, 1)] == list(range(1, 9))
    assert list(ledger.accounts_with_code(7, 2)) == []


@pytest.mark.parametrize(("ledger_number", "code"), [(0, 1), (1, 0), (1 << 32, 1), (1, 1 << 16)])
def test_accounts_with_code_refuses_a_zero_filter(
    ledger: TigerBeetleFundingLedger, ledger_number: int, code: int
) -> None:
    # Zero would mean "any ledger" / "any code" to TigerBeetle.
    with pytest.raises(ValueError):
        ledger.accounts_with_code(ledger_number, code)


def test_the_port_does_not_list_accounts_unless_the_adapter_can() -> None:
    class Minimal(FundingLedger):
        def create_accounts(self, accounts):  # pragma: no cover - not called
            return []

        def create_transfers(self, transfers):  # pragma: no cover - not called
            return []

        def lookup_accounts(self, ids):  # pragma: no cover - not called
            return []

        def lookup_transfers(self, ids):  # pragma: no cover - not called
            return []

    with pytest.raises(NotImplementedError):
        Minimal().accounts_with_code(1, 1)
