"""The funding ledger on a TigerBeetle cluster, through the official client.

Client: `tigerbeetle==0.17.9` (PyPI), pinned. It works with TigerBeetle
servers of release 0.17.9 or newer whose "oldest supported client version" is
at most 0.17.9 (docs/tigerbeetle.md). The port (settlement.ledger.base)
mirrors the 0.17 data model: accounts, transfers, flags and result codes are
converted field by field and by value, and the import fails if the client's
enums ever stop matching the port's.

Sessions and processes. One client (one TigerBeetle session) per process,
created on first use and shared by every thread of that process: the client
is thread-safe and batches concurrent requests of one session together.
Celery prefork and gunicorn fork after import, and a client's I/O thread does
not survive a fork, so the client belongs to the process id that created it;
a forked child silently starts its own (the parent's is left alone).

Batches. A create call returns one status per event, in order. Events are
sent in requests of at most `max_batch_size` (8189) events, never cut inside
a linked chain. A server started with a smaller request limit (`tigerbeetle
start --limit-request`, 32 KiB = 253 events in development) makes the client
answer TooMuchDataError without sending anything; the request is then split
in two at the chain boundary nearest its middle and retried, and later calls
start from what was learnt (_BatchLimit settles on the server's limit). A
linked chain that does not fit one request raises RequestTooLarge (TigerBeetle
cannot commit it atomically).
Splitting is invisible to single events and to chains; it only matters to a
caller that mixes imported and non-imported events (each request is judged by
its own first event).

Failures. The TigerBeetle client never times out and never reports network
errors: it retries until the cluster answers. The adapter waits at most
`request_timeout` seconds (`ping_timeout` for ping) and then raises
LedgerUnavailable; the request itself stays queued in the session and may
still execute (ledger ids are idempotent: the caller's retry with the same
ids answers EXISTS). At most `max_waiting` requests per process wait for a
silent cluster; beyond that, calls fail at once. An evicted or closed session,
a client/server release mismatch or any other client failure also raises
LedgerUnavailable (the next call opens a new session). Values that the client
cannot encode (negative, too wide, not integers) raise ValueError/TypeError.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import tigerbeetle as tb
from tigerbeetle.client import InitError

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

logger = logging.getLogger(__name__)

#: The client release this adapter is written and tested against.
CLIENT_RELEASE = "0.17.9"
#: Events per request in TigerBeetle's default configuration (1 MiB messages).
BATCH_MAX = 8189
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_PING_TIMEOUT = 2.0
DEFAULT_MAX_WAITING = 64

_U16_MAX = (1 << 16) - 1
_U32_MAX = (1 << 32) - 1
_LINKED = 1  # bit 0 of both AccountFlags and TransferFlags


class RequestTooLarge(ValueError):
    """A linked chain (or one event) that does not fit in a single request."""


class LedgerClient(Protocol):
    """What the adapter uses of `tigerbeetle.ClientSync` (tests inject fakes)."""

    def create_accounts(self, accounts: list[tb.Account]) -> list[tb.CreateAccountResult]: ...
    def create_transfers(self, transfers: list[tb.Transfer]) -> list[tb.CreateTransferResult]: ...
    def lookup_accounts(self, accounts: list[int]) -> list[tb.Account]: ...
    def lookup_transfers(self, transfers: list[int]) -> list[tb.Transfer]: ...
    def query_accounts(self, query_filter: tb.QueryFilter) -> list[tb.Account]: ...
    def close(self) -> None: ...


ClientFactory = Callable[[int, str], LedgerClient]


def official_client(cluster_id: int, addresses: str) -> LedgerClient:
    return tb.ClientSync(cluster_id=cluster_id, replica_addresses=addresses)


# --- Mapping between the port and the client ----------------------------------


def _same_enum(port: type, client: type) -> None:
    ours = {member.name: int(member.value) for member in port}
    theirs = {member.name: int(member.value) for member in client}
    if ours != theirs:
        differ = sorted(set(ours.items()) ^ set(theirs.items()))
        raise ImportError(
            f"tigerbeetle client {client.__name__} no longer matches the port's {port.__name__} "
            f"(pinned client {CLIENT_RELEASE}): {differ}"
        )


for _port_enum, _client_enum in (
    (AccountFlags, tb.AccountFlags),
    (TransferFlags, tb.TransferFlags),
    (CreateAccountStatus, tb.CreateAccountStatus),
    (CreateTransferStatus, tb.CreateTransferStatus),
):
    _same_enum(_port_enum, _client_enum)


def _int(value: object) -> int:
    # Floats, Decimals and strings are caller bugs, not amounts.
    return operator.index(value)  # type: ignore[arg-type]


def _id(value: object) -> int:
    # The client encodes lookup ids without checking them: 2**128 would wrap around.
    value = _int(value)
    if not 0 <= value <= UINT128_MAX:
        raise ValueError(f"id {value} is too large or negative for 128 bits")
    return value


def account_to_tb(account: Account) -> tb.Account:
    return tb.Account(
        id=_int(account.id),
        debits_pending=_int(account.debits_pending),
        debits_posted=_int(account.debits_posted),
        credits_pending=_int(account.credits_pending),
        credits_posted=_int(account.credits_posted),
        user_data_128=_int(account.user_data_128),
        user_data_64=_int(account.user_data_64),
        user_data_32=_int(account.user_data_32),
        ledger=_int(account.ledger),
        code=_int(account.code),
        flags=tb.AccountFlags(_int(account.flags)),
        timestamp=_int(account.timestamp),
    )


def account_from_tb(account: tb.Account) -> Account:
    return Account(
        id=account.id,
        ledger=account.ledger,
        code=account.code,
        flags=AccountFlags(int(account.flags)),
        user_data_128=account.user_data_128,
        user_data_64=account.user_data_64,
        user_data_32=account.user_data_32,
        debits_pending=account.debits_pending,
        debits_posted=account.debits_posted,
        credits_pending=account.credits_pending,
        credits_posted=account.credits_posted,
        timestamp=account.timestamp,
    )


def transfer_to_tb(transfer: Transfer) -> tb.Transfer:
    return tb.Transfer(
        id=_int(transfer.id),
        debit_account_id=_int(transfer.debit_account_id),
        credit_account_id=_int(transfer.credit_account_id),
        amount=_int(transfer.amount),
        pending_id=_int(transfer.pending_id),
        user_data_128=_int(transfer.user_data_128),
        user_data_64=_int(transfer.user_data_64),
        user_data_32=_int(transfer.user_data_32),
        timeout=_int(transfer.timeout),
        ledger=_int(transfer.ledger),
        code=_int(transfer.code),
        flags=tb.TransferFlags(_int(transfer.flags)),
        timestamp=_int(transfer.timestamp),
    )


def transfer_from_tb(transfer: tb.Transfer) -> Transfer:
    return Transfer(
        id=transfer.id,
        debit_account_id=transfer.debit_account_id,
        credit_account_id=transfer.credit_account_id,
        amount=transfer.amount,
        ledger=transfer.ledger,
        code=transfer.code,
        flags=TransferFlags(int(transfer.flags)),
        pending_id=transfer.pending_id,
        user_data_128=transfer.user_data_128,
        user_data_64=transfer.user_data_64,
        user_data_32=transfer.user_data_32,
        timeout=transfer.timeout,
        timestamp=transfer.timestamp,
    )


def account_status_from_tb(result: tb.CreateAccountResult) -> CreateAccountStatus:
    return CreateAccountStatus(int(result.status))


def transfer_status_from_tb(result: tb.CreateTransferResult) -> CreateTransferStatus:
    return CreateTransferStatus(int(result.status))


# --- Splitting batches without cutting linked chains ---------------------------


def _chain_ends_before(events: Sequence[Any], index: int) -> bool:
    """True if a request may end just before `index` without cutting a chain."""
    return not int(events[index - 1].flags) & _LINKED


def chunks(events: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive pieces of at most `size` events, cut only between chains.

    A chain longer than `size` makes one piece of its own (the server decides
    whether it fits). A chain left open at the end stays open at the end.
    """
    start, count = 0, len(events)
    while start < count:
        end = min(start + size, count)
        if end < count:
            cut = next((i for i in range(end, start, -1) if _chain_ends_before(events, i)), None)
            if cut is None:  # one chain fills the piece: keep it whole
                cut = next((i for i in range(end + 1, count) if _chain_ends_before(events, i)), count)
            end = cut
        yield events[start:end]
        start = end


def split_point(events: Sequence[Any]) -> int | None:
    """The chain boundary nearest the middle, or None if the events are one chain."""
    middle = len(events) / 2
    cuts = [i for i in range(1, len(events)) if _chain_ends_before(events, i)]
    return min(cuts, key=lambda i: abs(i - middle)) if cuts else None


class _BatchLimit:
    """How many events fit in one request, learnt from the client's refusals.

    A refused size halves the next attempt; sizes between the largest accepted
    and the smallest refused one are then probed (a binary search), so the
    limit settles on the server's (253 transfers at 32 KiB) in a few requests.
    A refusal costs no round trip: the client knows the server's limit.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.good = 0  # largest size accepted since the last contradicting refusal
        self.bad: int | None = None  # smallest size refused

    def __repr__(self) -> str:
        return f"_BatchLimit(size={self.size()}, good={self.good}, bad={self.bad})"

    def size(self) -> int:
        if self.bad is None:
            return self.maximum
        if self.good == 0:
            return max(1, self.bad // 2)
        return max(self.good, (self.good + self.bad) // 2)

    def refused(self, size: int) -> bool:
        """Record a refusal; True if it lowered the limit."""
        if self.good >= size:  # the server's limit went down
            self.good = 0
        if self.bad is None or size < self.bad:
            self.bad = size
            return True
        return False

    def accepted(self, size: int) -> None:
        if size > self.good and (self.bad is None or size < self.bad):
            self.good = size


# --- Per-process sessions ---------------------------------------------------------

_process_lock = threading.Lock()


def _reset_process_lock() -> None:
    # A thread of the parent may have held the lock at fork time.
    global _process_lock
    _process_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_process_lock)


@dataclasses.dataclass(eq=False)
class _Session:
    """One client of one process; closed once retired and no longer in use."""

    client: LedgerClient
    users: int = 0
    retired: bool = False
    closed: bool = False


@dataclasses.dataclass(eq=False)
class _ProcessState:
    pid: int
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    session: _Session | None = None
    waiting: int = 0  # requests handed to a helper thread and not answered yet


@dataclasses.dataclass(eq=False)
class _Reply:
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


_SESSION_ENDED = (
    tb.ClientEvictedError,
    tb.ClientClosedError,
    tb.ClientReleaseTooLowError,
    tb.ClientReleaseTooHighError,
)


def _explain(error: BaseException) -> str:
    if isinstance(error, tb.ClientEvictedError):
        return "TigerBeetle evicted this client session (more concurrent clients than the cluster's limit?)"
    if isinstance(error, tb.ClientReleaseTooLowError):
        return f"TigerBeetle refuses client release {CLIENT_RELEASE} as too old for the cluster; upgrade the client"
    if isinstance(error, tb.ClientReleaseTooHighError):
        return (
            f"TigerBeetle refuses client release {CLIENT_RELEASE} as newer than the cluster; "
            f"the cluster must run release {CLIENT_RELEASE} or newer"
        )
    if isinstance(error, tb.ClientClosedError):
        return "the TigerBeetle client was closed"
    return f"TigerBeetle client failed: {type(error).__name__}: {error}"


class TigerBeetleFundingLedger(FundingLedger):
    """FundingLedger on a TigerBeetle cluster (see the module docstring)."""

    max_batch_size: int = BATCH_MAX

    def __init__(
        self,
        cluster_id: int = 0,
        addresses: str | Sequence[str] = "",
        *,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
        ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
        max_waiting: int = DEFAULT_MAX_WAITING,
        client_factory: ClientFactory = official_client,
    ) -> None:
        # The client takes "ip:port,ip:port" (IP addresses, no host names) and no spaces.
        parts = addresses.split(",") if isinstance(addresses, str) else [str(part) for part in addresses]
        addresses = ",".join(part.strip() for part in parts if part.strip())
        if not addresses:
            raise ValueError("TigerBeetle addresses are empty: set TIGERBEETLE_ADDRESSES (e.g. 127.0.0.1:3000)")
        cluster_id = _int(cluster_id)
        if not 0 <= cluster_id <= UINT128_MAX:
            raise ValueError(f"TigerBeetle cluster id out of range: {cluster_id}")
        self.cluster_id = cluster_id
        self.addresses = addresses
        self.request_timeout = request_timeout
        self.ping_timeout = ping_timeout
        self.max_waiting = max_waiting
        self._client_factory = client_factory
        self._state: _ProcessState | None = None
        # Per operation, once the client refused a request as too large.
        self._batch_limits: dict[str, _BatchLimit] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cluster_id={self.cluster_id}, addresses={self.addresses!r})"

    # --- The port ------------------------------------------------------------------

    def create_accounts(self, accounts: Sequence[Account]) -> list[CreateAccountStatus]:
        results = self._create("create_accounts", [account_to_tb(account) for account in accounts])
        return [account_status_from_tb(result) for result in results]

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[CreateTransferStatus]:
        results = self._create("create_transfers", [transfer_to_tb(transfer) for transfer in transfers])
        return [transfer_status_from_tb(result) for result in results]

    def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        return [account_from_tb(found) for found in self._lookup("lookup_accounts", [_id(i) for i in ids])]

    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        return [transfer_from_tb(found) for found in self._lookup("lookup_transfers", [_id(i) for i in ids])]

    def accounts_with_code(self, ledger: int, code: int) -> Iterator[Account]:
        """Every account of `ledger` with `code`, oldest first, a page (query) at a time.

        Pages are read one after another, not as one snapshot: balances of
        accounts on different pages may be from different moments.
        """
        ledger, code = _int(ledger), _int(code)
        # Zero would switch the filter off (every ledger / every code).
        if not 0 < ledger <= _U32_MAX:
            raise ValueError(f"ledger out of range: {ledger}")
        if not 0 < code <= _U16_MAX:
            raise ValueError(f"code out of range: {code}")
        return self._query_accounts(ledger, code)

    def ping(self) -> None:
        self._request("lookup_accounts", [1], self.ping_timeout)

    def close(self) -> None:
        state = self._state
        if state is None or state.pid != os.getpid():
            return  # nothing of this process to close
        with state.lock:
            session = state.session
        if session is not None:
            self._retire(state, session)

    # --- Batching ------------------------------------------------------------------

    def _batch_limit(self, operation: str) -> int:
        limit = self._batch_limits.get(operation)
        return self.max_batch_size if limit is None else limit.size()

    def _refused(self, operation: str, size: int) -> None:
        limit = self._batch_limits.setdefault(operation, _BatchLimit(self.max_batch_size))
        if limit.refused(size):
            logger.info("TigerBeetle refused %d events in one %s request; sending fewer", size, operation)

    def _accepted(self, operation: str, size: int) -> None:
        limit = self._batch_limits.get(operation)
        if limit is not None:
            limit.accepted(size)

    def _create(self, operation: str, events: list[Any]) -> list[Any]:
        results: list[Any] = []
        for piece in chunks(events, self._batch_limit(operation)):
            results.extend(self._create_piece(operation, piece))
        return results

    def _create_piece(self, operation: str, events: Sequence[Any]) -> list[Any]:
        try:
            results = self._request(operation, list(events), self.request_timeout)
        except tb.TooMuchDataError:
            # Refused by the client before anything was sent: safe to split.
            self._refused(operation, len(events))
            cut = split_point(events)
            if cut is None:
                raise RequestTooLarge(
                    f"{len(events)} linked events do not fit in one TigerBeetle request"
                ) from None
            return self._create_piece(operation, events[:cut]) + self._create_piece(operation, events[cut:])
        if len(results) != len(events):
            raise LedgerUnavailable(f"TigerBeetle answered {len(results)} results for {len(events)} events")
        self._accepted(operation, len(events))
        return results

    def _lookup(self, operation: str, ids: list[int]) -> list[Any]:
        found: list[Any] = []
        limit = self._batch_limit(operation)
        for start in range(0, len(ids), limit):
            found.extend(self._lookup_piece(operation, ids[start : start + limit]))
        return found

    def _lookup_piece(self, operation: str, ids: list[int]) -> list[Any]:
        try:
            found = self._request(operation, ids, self.request_timeout)
        except tb.TooMuchDataError:
            self._refused(operation, len(ids))
            if len(ids) == 1:
                raise RequestTooLarge("one id does not fit in a TigerBeetle request") from None
            middle = len(ids) // 2
            return self._lookup_piece(operation, ids[:middle]) + self._lookup_piece(operation, ids[middle:])
        self._accepted(operation, len(ids))
        return found

    def _query_accounts(self, ledger: int, code: int) -> Iterator[Account]:
        timestamp_min = 0
        while True:
            limit = self._batch_limit("query_accounts")
            query = tb.QueryFilter(
                user_data_128=0,
                user_data_64=0,
                user_data_32=0,
                ledger=ledger,
                code=code,
                timestamp_min=timestamp_min,
                timestamp_max=0,
                limit=limit,
                flags=tb.QueryFilterFlags.NONE,
            )
            try:
                page = self._request("query_accounts", query, self.request_timeout)
            except tb.TooMuchDataError:
                if limit == 1:
                    raise RequestTooLarge("one account does not fit in a TigerBeetle reply") from None
                self._refused("query_accounts", limit)
                continue
            self._accepted("query_accounts", limit)
            for account in page:
                yield account_from_tb(account)
            # Since 0.17.0 a limit that cannot fit is refused (TooMuchData), never
            # truncated: a short page is the last one.
            if len(page) < limit:
                return
            timestamp_min = page[-1].timestamp + 1

    # --- Requests on this process's session --------------------------------------

    def _request(self, operation: str, argument: Any, timeout: float | None) -> Any:
        """Send one request; wait at most `timeout` seconds (None: as long as it takes)."""
        if isinstance(argument, list) and not argument:
            return []
        state = self._process_state()
        if timeout is None:
            return self._on_session(state, operation, argument)
        with state.lock:
            if state.waiting >= self.max_waiting:
                raise LedgerUnavailable(
                    f"{state.waiting} requests to TigerBeetle at {self.addresses} are still unanswered"
                )
            state.waiting += 1
        reply = _Reply()

        def run() -> None:
            try:
                reply.value = self._on_session(state, operation, argument)
            except BaseException as error:  # handed to the caller
                reply.error = error
            finally:
                with state.lock:
                    state.waiting -= 1
                reply.done.set()

        threading.Thread(target=run, name=f"tigerbeetle-{operation}", daemon=True).start()
        if not reply.done.wait(timeout):
            logger.warning(
                "TigerBeetle did not answer %s within %gs; the request may still execute", operation, timeout
            )
            raise LedgerUnavailable(
                f"TigerBeetle at {self.addresses} did not answer {operation} within {timeout:g}s "
                "(the request may still execute)"
            )
        if reply.error is not None:
            error, reply.error = reply.error, None
            raise error
        return reply.value

    def _on_session(self, state: _ProcessState, operation: str, argument: Any) -> Any:
        session = self._acquire(state)
        try:
            return getattr(session.client, operation)(argument)
        except tb.TooMuchDataError:
            raise  # nothing was sent; the caller splits
        except (TypeError, ValueError):
            raise  # a value the client cannot encode: a caller bug (IntegerOverflowError is a ValueError)
        except _SESSION_ENDED as error:
            self._retire(state, session)
            logger.error("%s", _explain(error))
            raise LedgerUnavailable(_explain(error)) from error
        except Exception as error:
            self._retire(state, session)
            raise LedgerUnavailable(_explain(error)) from error
        finally:
            self._release(state, session)

    def _process_state(self) -> _ProcessState:
        pid = os.getpid()
        state = self._state
        if state is not None and state.pid == pid:
            return state
        with _process_lock:
            state = self._state
            if state is None or state.pid != pid:
                # A forked child: the parent's client (and its I/O thread) is not
                # ours to use or close; this process opens its own session.
                state = self._state = _ProcessState(pid)
            return state

    def _acquire(self, state: _ProcessState) -> _Session:
        with state.lock:
            session = state.session
            if session is None:
                session = state.session = _Session(self._new_client())
            session.users += 1
            return session

    def _new_client(self) -> LedgerClient:
        try:
            return self._client_factory(self.cluster_id, self.addresses)
        except InitError as error:
            status = error.args[0] if error.args else None
            if status in (tb.InitStatus.ADDRESS_INVALID, tb.InitStatus.ADDRESS_LIMIT_EXCEEDED):
                raise ValueError(f"invalid TigerBeetle addresses {self.addresses!r}: {status.name}") from error
            raise LedgerUnavailable(f"cannot start a TigerBeetle client: {status!r}") from error

    def _release(self, state: _ProcessState, session: _Session) -> None:
        with state.lock:
            session.users -= 1
            close = self._take_for_closing(session)
        if close:
            self._close_client(session)

    def _retire(self, state: _ProcessState, session: _Session) -> None:
        """No new request goes to `session`; it is closed once no thread uses it."""
        with state.lock:
            if state.session is session:
                state.session = None
            session.retired = True
            close = self._take_for_closing(session)
        if close:
            self._close_client(session)

    @staticmethod
    def _take_for_closing(session: _Session) -> bool:
        if session.retired and session.users == 0 and not session.closed:
            session.closed = True
            return True
        return False

    @staticmethod
    def _close_client(session: _Session) -> None:
        try:
            session.client.close()
        except Exception:
            logger.warning("closing the TigerBeetle client failed", exc_info=True)
