"""The funding ledger on the Django database: TigerBeetle's semantics on SQL.

`SqlFundingLedger` answers exactly as a TigerBeetle 0.17 cluster does for the
features below, so the saga and the contract suite
(tests/contract/test_ledger_contract.py) cannot tell the two apart.

Implemented, following TigerBeetle's state machine (src/state_machine.zig):

* accounts: every create_accounts code except RESERVED_FIELD (the port's
  Account has no reserved field); flags DEBITS_MUST_NOT_EXCEED_CREDITS and
  CREDITS_MUST_NOT_EXCEED_DEBITS; HISTORY is stored but no balance history is
  kept (the port cannot query it); CLOSED is stored and honoured.
* transfers: validation in TigerBeetle's order; single-phase, PENDING,
  POST_PENDING_TRANSFER (amount AMOUNT_MAX = 2**128-1 posts the full pending
  amount, a smaller amount posts only that much — since TigerBeetle 0.16 an
  amount of 0 posts 0 and releases the whole reservation), VOID_PENDING_TRANSFER
  (amount 0 or the pending amount); pending timeouts (PENDING_TRANSFER_EXPIRED);
  BALANCING_DEBIT / BALANCING_CREDIT; CLOSING_DEBIT / CLOSING_CREDIT;
  IMPORTED events with their timestamp rules.
* id idempotency: EXISTS / EXISTS_WITH_DIFFERENT_* in TigerBeetle's precedence,
  and ID_ALREADY_FAILED for ids that failed with a transient code
  (TRANSIENT_TRANSFER_STATUSES).
* linked chains: all or nothing; the failing event gets its own code, the rest
  of the chain LINKED_EVENT_FAILED; a batch ending inside a chain gets
  LINKED_EVENT_CHAIN_OPEN on its last event.

Where the SQL ledger differs from TigerBeetle:

* Amounts and balances are signed 64-bit columns: they go up to 2**63-1
  (INT64_MAX). A transfer that would take an amount or a balance beyond that
  gets TigerBeetle's OVERFLOWS_* code (OVERFLOWS_DEBITS_POSTED, ...) where
  TigerBeetle would go on to 2**128-1.
* Pending transfers that time out are expired lazily: at the start of every
  create_transfers call (for the accounts it touches) and by
  `expire_pending_transfers()`. Until then `lookup_accounts` still shows their
  reservation in debits_pending/credits_pending (TigerBeetle also releases
  them only on its next expiry pulse); posting or voiding one after its
  timeout answers PENDING_TRANSFER_EXPIRED either way.
* Timestamps are wall-clock nanoseconds, unique per stored row and increasing
  per account, but not one strict global order across concurrent writers.

Atomicity and concurrency: a whole batch runs in one `transaction.atomic()`.
Events are applied in memory (a linked chain is rolled back by an undo log,
which plays the role of a savepoint without a round trip per chain), then the
result is written with a few bulk statements. Every account a batch touches is
locked with SELECT ... FOR UPDATE in id order (no deadlocks between batches);
on PostgreSQL the batch's transfer/account ids are also taken as transaction
advisory locks first, so two writers of the same id are serialized (one
answers EXISTS / ID_ALREADY_FAILED instead of both succeeding). On SQLite the
settings' IMMEDIATE transactions serialize writers. A deadlock, serialization
failure or unique-key race is retried a few times; a database that does not
answer raises LedgerUnavailable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    transaction,
)
from django.db.models import Max

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
from settlement.models import LedgerAccount, LedgerFailedTransferId, LedgerTransfer, PendingStatus
from transfer_site import compiled_sql

#: Largest amount or balance a BIGINT column holds; beyond it, OVERFLOWS_*.
INT64_MAX = (1 << 63) - 1
#: A post with this amount posts the full pending amount (TigerBeetle's AMOUNT_MAX).
AMOUNT_MAX = UINT128_MAX

#: Codes after which TigerBeetle burns the transfer id: a retry with the same
#: id answers ID_ALREADY_FAILED (tigerbeetle.zig, CreateTransferStatus.transient).
TRANSIENT_TRANSFER_STATUSES = frozenset(
    {
        CreateTransferStatus.DEBIT_ACCOUNT_NOT_FOUND,
        CreateTransferStatus.CREDIT_ACCOUNT_NOT_FOUND,
        CreateTransferStatus.PENDING_TRANSFER_NOT_FOUND,
        CreateTransferStatus.EXCEEDS_CREDITS,
        CreateTransferStatus.EXCEEDS_DEBITS,
        CreateTransferStatus.DEBIT_ACCOUNT_ALREADY_CLOSED,
        CreateTransferStatus.CREDIT_ACCOUNT_ALREADY_CLOSED,
    }
)

_U16_MAX = (1 << 16) - 1
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1
_TIMESTAMP_MAX = (1 << 63) - 1  # TigerBeetle's TimestampRange.timestamp_max (u63)
_NS_PER_S = 1_000_000_000
_ACCOUNT_FLAGS_KNOWN = 0x3F  # the bits AccountFlags defines; the rest are reserved
_TRANSFER_FLAGS_KNOWN = 0x1FF
_ZERO_HEX = "0" * 32

# PostgreSQL advisory-lock namespaces (first key of pg_advisory_xact_lock(int, int)).
_LOCK_NAMESPACE_ACCOUNT_ID = 0x4C444741  # "LDGA"
_LOCK_NAMESPACE_TRANSFER_ID = 0x4C444754  # "LDGT"
_ATTEMPTS = 5
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock

_T = TypeVar("_T")


# --- Column encodings ---------------------------------------------------------


_ACCOUNT_FIELDS = tuple(field.attname for field in LedgerAccount._meta.concrete_fields)
_TRANSFER_FIELDS = tuple(field.attname for field in LedgerTransfer._meta.concrete_fields)


def _hex(value: int) -> str:
    return f"{value:032x}"


def _int(hex_value: str) -> int:
    return int(hex_value, 16)


def _u64_to_db(value: int) -> int:
    # Two's complement: values below 2**63 (user ids...) stay readable in SQL.
    return value - (1 << 64) if value > INT64_MAX else value


def _u64_from_db(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def _check_range(name: str, value: int, maximum: int) -> None:
    # Values a TigerBeetle client could not even encode are a caller bug.
    if not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{name} out of range: {value!r}")


def _validate_account(a: Account) -> None:
    for name in ("id", "user_data_128", "debits_pending", "debits_posted", "credits_pending", "credits_posted"):
        _check_range(f"account.{name}", getattr(a, name), UINT128_MAX)
    _check_range("account.user_data_64", a.user_data_64, _U64_MAX)
    _check_range("account.timestamp", a.timestamp, _U64_MAX)
    for name in ("ledger", "user_data_32"):
        _check_range(f"account.{name}", getattr(a, name), _U32_MAX)
    _check_range("account.code", a.code, _U16_MAX)
    _check_range("account.flags", int(a.flags), _U16_MAX)


def _validate_transfer(t: Transfer) -> None:
    for name in ("id", "debit_account_id", "credit_account_id", "amount", "pending_id", "user_data_128"):
        _check_range(f"transfer.{name}", getattr(t, name), UINT128_MAX)
    _check_range("transfer.user_data_64", t.user_data_64, _U64_MAX)
    _check_range("transfer.timestamp", t.timestamp, _U64_MAX)
    for name in ("ledger", "user_data_32", "timeout"):
        _check_range(f"transfer.{name}", getattr(t, name), _U32_MAX)
    _check_range("transfer.code", t.code, _U16_MAX)
    _check_range("transfer.flags", int(t.flags), _U16_MAX)


def _validate_ids(ids: Sequence[int]) -> None:
    for value in ids:
        _check_range("id", value, UINT128_MAX)


# --- In-memory rows the batch works on ----------------------------------------


@dataclasses.dataclass
class _AccountRow:
    id: int
    ledger: int
    code: int
    flags: int
    user_data_128: int
    user_data_64: int
    user_data_32: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    timestamp: int

    @classmethod
    def from_values(cls, values: tuple) -> _AccountRow:
        """From a row of LedgerAccount's columns in _ACCOUNT_FIELDS order."""
        return cls.from_model(types.SimpleNamespace(**dict(zip(_ACCOUNT_FIELDS, values, strict=True))))

    @classmethod
    def from_model(cls, m: LedgerAccount) -> _AccountRow:
        return cls(
            id=_int(m.id),
            ledger=m.ledger,
            code=m.code,
            flags=m.flags,
            user_data_128=_int(m.user_data_128),
            user_data_64=_u64_from_db(m.user_data_64),
            user_data_32=m.user_data_32,
            debits_pending=m.debits_pending,
            debits_posted=m.debits_posted,
            credits_pending=m.credits_pending,
            credits_posted=m.credits_posted,
            timestamp=m.timestamp,
        )

    def to_model(self) -> LedgerAccount:
        return LedgerAccount(
            id=_hex(self.id),
            ledger=self.ledger,
            code=self.code,
            flags=self.flags,
            user_data_128=_hex(self.user_data_128),
            user_data_64=_u64_to_db(self.user_data_64),
            user_data_32=self.user_data_32,
            debits_pending=self.debits_pending,
            debits_posted=self.debits_posted,
            credits_pending=self.credits_pending,
            credits_posted=self.credits_posted,
            timestamp=self.timestamp,
        )

    def to_account(self) -> Account:
        return Account(
            id=self.id,
            ledger=self.ledger,
            code=self.code,
            flags=AccountFlags(self.flags),
            user_data_128=self.user_data_128,
            user_data_64=self.user_data_64,
            user_data_32=self.user_data_32,
            debits_pending=self.debits_pending,
            debits_posted=self.debits_posted,
            credits_pending=self.credits_pending,
            credits_posted=self.credits_posted,
            timestamp=self.timestamp,
        )

    def balances(self) -> tuple[int, int, int, int, int]:
        return (self.debits_pending, self.debits_posted, self.credits_pending, self.credits_posted, self.flags)

    def debits_exceed_credits(self, amount: int) -> bool:
        return bool(self.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS) and (
            self.debits_pending + self.debits_posted + amount > self.credits_posted
        )

    def credits_exceed_debits(self, amount: int) -> bool:
        return bool(self.flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS) and (
            self.credits_pending + self.credits_posted + amount > self.debits_posted
        )


@dataclasses.dataclass
class _TransferRow:
    id: int
    debit_account_id: int
    credit_account_id: int
    amount: int
    pending_id: int
    user_data_128: int
    user_data_64: int
    user_data_32: int
    timeout: int
    ledger: int
    code: int
    flags: int
    timestamp: int
    pending_status: int = PendingStatus.NONE
    expires_at: int | None = None

    @classmethod
    def from_values(cls, values: tuple) -> _TransferRow:
        """From a row of LedgerTransfer's columns in _TRANSFER_FIELDS order."""
        return cls.from_model(types.SimpleNamespace(**dict(zip(_TRANSFER_FIELDS, values, strict=True))))

    @classmethod
    def from_model(cls, m: LedgerTransfer) -> _TransferRow:
        return cls(
            id=_int(m.id),
            debit_account_id=_int(m.debit_account_id),
            credit_account_id=_int(m.credit_account_id),
            amount=m.amount,
            pending_id=_int(m.pending_id),
            user_data_128=_int(m.user_data_128),
            user_data_64=_u64_from_db(m.user_data_64),
            user_data_32=m.user_data_32,
            timeout=m.timeout,
            ledger=m.ledger,
            code=m.code,
            flags=m.flags,
            timestamp=m.timestamp,
            pending_status=m.pending_status,
            expires_at=m.expires_at,
        )

    def to_model(self) -> LedgerTransfer:
        return LedgerTransfer(
            id=_hex(self.id),
            debit_account_id=_hex(self.debit_account_id),
            credit_account_id=_hex(self.credit_account_id),
            amount=self.amount,
            pending_id=_hex(self.pending_id),
            user_data_128=_hex(self.user_data_128),
            user_data_64=_u64_to_db(self.user_data_64),
            user_data_32=self.user_data_32,
            timeout=self.timeout,
            ledger=self.ledger,
            code=self.code,
            flags=self.flags,
            timestamp=self.timestamp,
            pending_status=self.pending_status,
            expires_at=self.expires_at,
        )

    def to_transfer(self) -> Transfer:
        return Transfer(
            id=self.id,
            debit_account_id=self.debit_account_id,
            credit_account_id=self.credit_account_id,
            amount=self.amount,
            ledger=self.ledger,
            code=self.code,
            flags=TransferFlags(self.flags),
            pending_id=self.pending_id,
            user_data_128=self.user_data_128,
            user_data_64=self.user_data_64,
            user_data_32=self.user_data_32,
            timeout=self.timeout,
            timestamp=self.timestamp,
        )


class _UndoLog:
    """Rolls back the in-memory effects of a linked chain (TigerBeetle's scope)."""

    def __init__(self) -> None:
        self._entries: list[Callable[[], None]] | None = None

    def open(self) -> None:
        assert self._entries is None
        self._entries = []

    def record(self, undo: Callable[[], None]) -> None:
        if self._entries is not None:
            self._entries.append(undo)

    def persist(self) -> None:
        self._entries = None

    def discard(self) -> None:
        assert self._entries is not None
        for undo in reversed(self._entries):
            undo()
        self._entries = None


# --- The batch loop shared by accounts and transfers --------------------------

_E = TypeVar("_E", Account, Transfer)


def _execute_batch(
    events: Sequence[_E],
    status_type: type[CreateAccountStatus] | type[CreateTransferStatus],
    imported_flag: int,
    last_timestamp: int,
    undo: _UndoLog,
    create_one: Callable[[int, _E], CreateAccountStatus | CreateTransferStatus],
    on_failed: Callable[[_E, CreateAccountStatus | CreateTransferStatus, int], None],
) -> list:
    """TigerBeetle's execute_create: chains, imported-batch rules, one status per event."""
    count = len(events)
    results: list = [None] * count
    chain_start: int | None = None
    chain_broken = False
    # The first event decides whether the whole batch imports past timestamps.
    batch_imported = bool(int(events[0].flags) & imported_flag)
    for index, event in enumerate(events):
        flags = int(event.flags)
        linked = bool(flags & 1)  # LINKED is bit 0 for accounts and transfers
        timestamp_event = last_timestamp - count + index + 1
        status = None
        if linked:
            if chain_start is None:
                chain_start = index
                undo.open()
            if index == count - 1:
                status = status_type.LINKED_EVENT_CHAIN_OPEN
        if status is None and chain_broken:
            status = status_type.LINKED_EVENT_FAILED
        if status is None:
            imported = bool(flags & imported_flag)
            if batch_imported != imported:
                status = status_type.IMPORTED_EVENT_NOT_EXPECTED if imported else status_type.IMPORTED_EVENT_EXPECTED
            elif imported:
                if not 1 <= event.timestamp <= _TIMESTAMP_MAX:
                    status = status_type.IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE
                elif event.timestamp >= last_timestamp:
                    status = status_type.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE
            elif event.timestamp != 0:
                status = status_type.TIMESTAMP_MUST_BE_ZERO
        if status is None:
            status = create_one(timestamp_event, event)

        if status != status_type.CREATED:
            if chain_start is not None and not chain_broken:
                chain_broken = True
                undo.discard()
                for chain_index in range(chain_start, index):
                    results[chain_index] = status_type.LINKED_EVENT_FAILED
            on_failed(event, status, timestamp_event)
        results[index] = status

        if chain_start is not None and (not linked or status == status_type.LINKED_EVENT_CHAIN_OPEN):
            if not chain_broken:
                undo.persist()
            chain_start = None
            chain_broken = False
    return results


# --- Accounts batch -------------------------------------------------------------


class _AccountBatch:
    def __init__(
        self, existing: dict[int, _AccountRow], account_timestamp_max: int, transfer_timestamps: set[int]
    ) -> None:
        self.accounts = existing
        self.created: dict[int, _AccountRow] = {}
        self.undo = _UndoLog()
        # Only needed for imported events (TigerBeetle's key_range.key_max).
        self.account_timestamp_max = account_timestamp_max
        self.transfer_timestamps = transfer_timestamps

    def create_account(self, timestamp_event: int, a: Account) -> CreateAccountStatus:
        s = CreateAccountStatus
        flags = int(a.flags)
        if flags & ~_ACCOUNT_FLAGS_KNOWN:
            return s.RESERVED_FLAG
        if a.id == 0:
            return s.ID_MUST_NOT_BE_ZERO
        if a.id == UINT128_MAX:
            return s.ID_MUST_NOT_BE_INT_MAX
        existing = self.accounts.get(a.id)
        if existing is not None:
            return _account_exists(a, existing)
        if flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS:
            return s.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if a.debits_pending != 0:
            return s.DEBITS_PENDING_MUST_BE_ZERO
        if a.debits_posted != 0:
            return s.DEBITS_POSTED_MUST_BE_ZERO
        if a.credits_pending != 0:
            return s.CREDITS_PENDING_MUST_BE_ZERO
        if a.credits_posted != 0:
            return s.CREDITS_POSTED_MUST_BE_ZERO
        if a.ledger == 0:
            return s.LEDGER_MUST_NOT_BE_ZERO
        if a.code == 0:
            return s.CODE_MUST_NOT_BE_ZERO
        if flags & AccountFlags.IMPORTED:
            if a.timestamp <= self.account_timestamp_max or a.timestamp in self.transfer_timestamps:
                return s.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
            timestamp = a.timestamp
        else:
            timestamp = timestamp_event

        row = _AccountRow(
            id=a.id,
            ledger=a.ledger,
            code=a.code,
            flags=flags,
            user_data_128=a.user_data_128,
            user_data_64=a.user_data_64,
            user_data_32=a.user_data_32,
            debits_pending=0,
            debits_posted=0,
            credits_pending=0,
            credits_posted=0,
            timestamp=timestamp,
        )
        previous_max = self.account_timestamp_max
        self.accounts[a.id] = row
        self.created[a.id] = row
        self.account_timestamp_max = max(previous_max, timestamp)

        def rollback() -> None:
            del self.accounts[a.id]
            del self.created[a.id]
            self.account_timestamp_max = previous_max

        self.undo.record(rollback)
        return s.CREATED


def _account_exists(a: Account, e: _AccountRow) -> CreateAccountStatus:
    s = CreateAccountStatus
    if int(a.flags) != e.flags:
        return s.EXISTS_WITH_DIFFERENT_FLAGS
    if a.user_data_128 != e.user_data_128:
        return s.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if a.user_data_64 != e.user_data_64:
        return s.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if a.user_data_32 != e.user_data_32:
        return s.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if a.ledger != e.ledger:
        return s.EXISTS_WITH_DIFFERENT_LEDGER
    if a.code != e.code:
        return s.EXISTS_WITH_DIFFERENT_CODE
    return s.EXISTS


# --- Transfers batch ------------------------------------------------------------


class _TransferBatch:
    def __init__(
        self,
        accounts: dict[int, _AccountRow],
        transfers: dict[int, _TransferRow],
        failed_ids: set[int],
        transfer_timestamp_max: int,
        account_timestamps: set[int],
    ) -> None:
        self.accounts = accounts
        self.transfers = transfers
        self.failed_ids = failed_ids
        self.created: dict[int, _TransferRow] = {}
        self.newly_failed: dict[int, tuple[int, int]] = {}  # id -> (status, timestamp)
        self.undo = _UndoLog()
        self.transfer_timestamp_max = transfer_timestamp_max
        self.account_timestamps = account_timestamps

    # -- mutations that a linked chain can roll back --

    def _touch_account(self, account: _AccountRow) -> None:
        saved = dataclasses.replace(account)
        self.undo.record(lambda: account.__dict__.update(saved.__dict__))

    def _set_pending_status(self, pending: _TransferRow, status: int) -> None:
        previous = pending.pending_status
        pending.pending_status = status

        def rollback() -> None:
            pending.pending_status = previous

        self.undo.record(rollback)

    def _insert(self, row: _TransferRow) -> None:
        previous_max = self.transfer_timestamp_max
        self.transfers[row.id] = row
        self.created[row.id] = row
        self.transfer_timestamp_max = max(previous_max, row.timestamp)

        def rollback() -> None:
            del self.transfers[row.id]
            del self.created[row.id]
            self.transfer_timestamp_max = previous_max

        self.undo.record(rollback)

    def on_failed(self, t: Transfer, status: CreateTransferStatus, timestamp_event: int) -> None:
        # Not undone with the chain: TigerBeetle keeps the id burnt either way.
        if status in TRANSIENT_TRANSFER_STATUSES:
            self.failed_ids.add(t.id)
            self.newly_failed[t.id] = (int(status), timestamp_event)

    def expire(self, pending: _TransferRow) -> None:
        """Release a timed-out reservation (TigerBeetle's expire_pending_transfers pulse)."""
        dr = self.accounts[pending.debit_account_id]
        cr = self.accounts[pending.credit_account_id]
        pending.pending_status = PendingStatus.EXPIRED
        dr.debits_pending -= pending.amount
        cr.credits_pending -= pending.amount
        if pending.flags & TransferFlags.CLOSING_DEBIT:
            dr.flags &= ~AccountFlags.CLOSED
        if pending.flags & TransferFlags.CLOSING_CREDIT:
            cr.flags &= ~AccountFlags.CLOSED

    # -- TigerBeetle's create_transfer --

    def create_transfer(self, timestamp_event: int, t: Transfer) -> CreateTransferStatus:
        s = CreateTransferStatus
        flags = int(t.flags)
        if flags & ~_TRANSFER_FLAGS_KNOWN:
            return s.RESERVED_FLAG
        if t.id == 0:
            return s.ID_MUST_NOT_BE_ZERO
        if t.id == UINT128_MAX:
            return s.ID_MUST_NOT_BE_INT_MAX
        existing = self.transfers.get(t.id)
        if existing is not None:
            return self._transfer_exists(t, existing)
        if t.id in self.failed_ids:
            return s.ID_ALREADY_FAILED

        if flags & (TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER):
            return self._post_or_void_pending_transfer(timestamp_event, t)

        if t.debit_account_id == 0:
            return s.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.debit_account_id == UINT128_MAX:
            return s.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if t.credit_account_id == 0:
            return s.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.credit_account_id == UINT128_MAX:
            return s.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
        if t.credit_account_id == t.debit_account_id:
            return s.ACCOUNTS_MUST_BE_DIFFERENT
        if t.pending_id != 0:
            return s.PENDING_ID_MUST_BE_ZERO
        if not flags & TransferFlags.PENDING:
            if t.timeout != 0:
                return s.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
            if flags & (TransferFlags.CLOSING_DEBIT | TransferFlags.CLOSING_CREDIT):
                return s.CLOSING_TRANSFER_MUST_BE_PENDING
        if t.ledger == 0:
            return s.LEDGER_MUST_NOT_BE_ZERO
        if t.code == 0:
            return s.CODE_MUST_NOT_BE_ZERO

        dr = self.accounts.get(t.debit_account_id)
        if dr is None:
            return s.DEBIT_ACCOUNT_NOT_FOUND
        cr = self.accounts.get(t.credit_account_id)
        if cr is None:
            return s.CREDIT_ACCOUNT_NOT_FOUND
        if dr.ledger != cr.ledger:
            return s.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if t.ledger != dr.ledger:
            return s.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS

        if flags & TransferFlags.IMPORTED:
            status = self._imported_must_not_regress(t)
            if status is not None:
                return status
            if t.timestamp <= dr.timestamp:
                return s.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT
            if t.timestamp <= cr.timestamp:
                return s.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT
            if t.timeout != 0:
                return s.IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO
            timestamp = t.timestamp
        else:
            timestamp = timestamp_event

        if dr.flags & AccountFlags.CLOSED:
            return s.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr.flags & AccountFlags.CLOSED:
            return s.CREDIT_ACCOUNT_ALREADY_CLOSED

        amount = t.amount
        if flags & TransferFlags.BALANCING_DEBIT:
            amount = min(amount, max(0, dr.credits_posted - (dr.debits_posted + dr.debits_pending)))
        if flags & TransferFlags.BALANCING_CREDIT:
            amount = min(amount, max(0, cr.debits_posted - (cr.credits_posted + cr.credits_pending)))

        pending = bool(flags & TransferFlags.PENDING)
        if pending:
            if amount + dr.debits_pending > INT64_MAX:
                return s.OVERFLOWS_DEBITS_PENDING
            if amount + cr.credits_pending > INT64_MAX:
                return s.OVERFLOWS_CREDITS_PENDING
        if amount + dr.debits_posted > INT64_MAX:
            return s.OVERFLOWS_DEBITS_POSTED
        if amount + cr.credits_posted > INT64_MAX:
            return s.OVERFLOWS_CREDITS_POSTED
        if amount + dr.debits_pending + dr.debits_posted > INT64_MAX:
            return s.OVERFLOWS_DEBITS
        if amount + cr.credits_pending + cr.credits_posted > INT64_MAX:
            return s.OVERFLOWS_CREDITS
        if timestamp + t.timeout * _NS_PER_S > _TIMESTAMP_MAX:
            return s.OVERFLOWS_TIMEOUT

        if dr.debits_exceed_credits(amount):
            return s.EXCEEDS_CREDITS
        if cr.credits_exceed_debits(amount):
            return s.EXCEEDS_DEBITS

        # From here on the transfer succeeds.
        self._insert(
            _TransferRow(
                id=t.id,
                debit_account_id=t.debit_account_id,
                credit_account_id=t.credit_account_id,
                amount=amount,
                pending_id=0,
                user_data_128=t.user_data_128,
                user_data_64=t.user_data_64,
                user_data_32=t.user_data_32,
                timeout=t.timeout,
                ledger=t.ledger,
                code=t.code,
                flags=flags,
                timestamp=timestamp,
                pending_status=PendingStatus.PENDING if pending else PendingStatus.NONE,
                expires_at=timestamp + t.timeout * _NS_PER_S if pending and t.timeout else None,
            )
        )
        self._touch_account(dr)
        self._touch_account(cr)
        if pending:
            dr.debits_pending += amount
            cr.credits_pending += amount
        else:
            dr.debits_posted += amount
            cr.credits_posted += amount
        if flags & TransferFlags.CLOSING_DEBIT:
            dr.flags |= AccountFlags.CLOSED
        if flags & TransferFlags.CLOSING_CREDIT:
            cr.flags |= AccountFlags.CLOSED
        return s.CREATED

    def _imported_must_not_regress(self, t: Transfer) -> CreateTransferStatus | None:
        if t.timestamp <= self.transfer_timestamp_max or t.timestamp in self.account_timestamps:
            return CreateTransferStatus.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS
        return None

    def _transfer_exists(self, t: Transfer, e: _TransferRow) -> CreateTransferStatus:
        s = CreateTransferStatus
        flags = int(t.flags)
        # The flags change the meaning of the other fields: compare them first.
        if flags != e.flags:
            return s.EXISTS_WITH_DIFFERENT_FLAGS
        if t.pending_id != e.pending_id:
            return s.EXISTS_WITH_DIFFERENT_PENDING_ID
        if t.timeout != e.timeout:
            return s.EXISTS_WITH_DIFFERENT_TIMEOUT
        if flags & (TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER):
            return self._post_or_void_exists(t, e, self.transfers[t.pending_id])
        if t.debit_account_id != e.debit_account_id:
            return s.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id != e.credit_account_id:
            return s.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
        if flags & (TransferFlags.BALANCING_DEBIT | TransferFlags.BALANCING_CREDIT):
            # The amount is an upper limit: any resubmission within it is the same transfer.
            if t.amount < e.amount:
                return s.EXISTS_WITH_DIFFERENT_AMOUNT
        elif t.amount != e.amount:
            return s.EXISTS_WITH_DIFFERENT_AMOUNT
        if t.user_data_128 != e.user_data_128:
            return s.EXISTS_WITH_DIFFERENT_USER_DATA_128
        if t.user_data_64 != e.user_data_64:
            return s.EXISTS_WITH_DIFFERENT_USER_DATA_64
        if t.user_data_32 != e.user_data_32:
            return s.EXISTS_WITH_DIFFERENT_USER_DATA_32
        if t.ledger != e.ledger:
            return s.EXISTS_WITH_DIFFERENT_LEDGER
        if t.code != e.code:
            return s.EXISTS_WITH_DIFFERENT_CODE
        return s.EXISTS

    @staticmethod
    def _post_or_void_exists(t: Transfer, e: _TransferRow, p: _TransferRow) -> CreateTransferStatus:
        s = CreateTransferStatus
        if t.debit_account_id != 0 and t.debit_account_id != e.debit_account_id:
            return s.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id != 0 and t.credit_account_id != e.credit_account_id:
            return s.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
        if int(t.flags) & TransferFlags.VOID_PENDING_TRANSFER:
            expected = p.amount if t.amount == 0 else t.amount
        else:
            expected = p.amount if t.amount == AMOUNT_MAX else t.amount
        if e.amount != expected:
            return s.EXISTS_WITH_DIFFERENT_AMOUNT
        # Zero user data means "inherited from the pending transfer".
        if (t.user_data_128 or p.user_data_128) != e.user_data_128:
            return s.EXISTS_WITH_DIFFERENT_USER_DATA_128
        if (t.user_data_64 or p.user_data_64) != e.user_data_64:
            return s.EXISTS_WITH_DIFFERENT_USER_DATA_64
        if (t.user_data_32 or p.user_data_32) != e.user_data_32:
            return s.EXISTS_WITH_DIFFERENT_USER_DATA_32
        if t.ledger != 0 and t.ledger != e.ledger:
            return s.EXISTS_WITH_DIFFERENT_LEDGER
        if t.code != 0 and t.code != e.code:
            return s.EXISTS_WITH_DIFFERENT_CODE
        return s.EXISTS

    def _post_or_void_pending_transfer(self, timestamp_event: int, t: Transfer) -> CreateTransferStatus:
        s = CreateTransferStatus
        flags = int(t.flags)
        posting = bool(flags & TransferFlags.POST_PENDING_TRANSFER)
        voiding = bool(flags & TransferFlags.VOID_PENDING_TRANSFER)
        if posting and voiding:
            return s.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if flags & (
            TransferFlags.PENDING
            | TransferFlags.BALANCING_DEBIT
            | TransferFlags.BALANCING_CREDIT
            | TransferFlags.CLOSING_DEBIT
            | TransferFlags.CLOSING_CREDIT
        ):
            return s.FLAGS_ARE_MUTUALLY_EXCLUSIVE
        if t.pending_id == 0:
            return s.PENDING_ID_MUST_NOT_BE_ZERO
        if t.pending_id == UINT128_MAX:
            return s.PENDING_ID_MUST_NOT_BE_INT_MAX
        if t.pending_id == t.id:
            return s.PENDING_ID_MUST_BE_DIFFERENT
        if t.timeout != 0:
            return s.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER

        p = self.transfers.get(t.pending_id)
        if p is None:
            return s.PENDING_TRANSFER_NOT_FOUND
        if not p.flags & TransferFlags.PENDING:
            return s.PENDING_TRANSFER_NOT_PENDING
        dr = self.accounts[p.debit_account_id]
        cr = self.accounts[p.credit_account_id]
        if t.debit_account_id != 0 and t.debit_account_id != p.debit_account_id:
            return s.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id != 0 and t.credit_account_id != p.credit_account_id:
            return s.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
        # user_data may differ between the pending transfer and its post/void.
        if t.ledger != 0 and t.ledger != p.ledger:
            return s.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
        if t.code != 0 and t.code != p.code:
            return s.PENDING_TRANSFER_HAS_DIFFERENT_CODE

        if voiding:
            amount = p.amount if t.amount == 0 else t.amount
        else:
            amount = p.amount if t.amount == AMOUNT_MAX else t.amount
        if amount > p.amount:
            return s.EXCEEDS_PENDING_TRANSFER_AMOUNT
        if voiding and amount < p.amount:
            return s.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT

        if p.pending_status == PendingStatus.POSTED:
            return s.PENDING_TRANSFER_ALREADY_POSTED
        if p.pending_status == PendingStatus.VOIDED:
            return s.PENDING_TRANSFER_ALREADY_VOIDED
        if p.pending_status == PendingStatus.EXPIRED:
            return s.PENDING_TRANSFER_EXPIRED
        if p.expires_at is not None and p.expires_at <= timestamp_event:
            return s.PENDING_TRANSFER_EXPIRED

        if flags & TransferFlags.IMPORTED:
            status = self._imported_must_not_regress(t)
            if status is not None:
                return status
            timestamp = t.timestamp
        else:
            timestamp = timestamp_event

        # The only movement allowed in a closed account is voiding a pending transfer.
        if dr.flags & AccountFlags.CLOSED and not voiding:
            return s.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr.flags & AccountFlags.CLOSED and not voiding:
            return s.CREDIT_ACCOUNT_ALREADY_CLOSED

        self._insert(
            _TransferRow(
                id=t.id,
                debit_account_id=p.debit_account_id,
                credit_account_id=p.credit_account_id,
                amount=amount,
                pending_id=t.pending_id,
                user_data_128=t.user_data_128 or p.user_data_128,
                user_data_64=t.user_data_64 or p.user_data_64,
                user_data_32=t.user_data_32 or p.user_data_32,
                timeout=0,
                ledger=p.ledger,
                code=p.code,
                flags=flags,
                timestamp=timestamp,
            )
        )
        self._set_pending_status(p, PendingStatus.POSTED if posting else PendingStatus.VOIDED)
        self._touch_account(dr)
        self._touch_account(cr)
        dr.debits_pending -= p.amount
        cr.credits_pending -= p.amount
        if posting:
            dr.debits_posted += amount
            cr.credits_posted += amount
        else:
            # Voiding a closing transfer reopens the account.
            if p.flags & TransferFlags.CLOSING_DEBIT:
                dr.flags &= ~AccountFlags.CLOSED
            if p.flags & TransferFlags.CLOSING_CREDIT:
                cr.flags &= ~AccountFlags.CLOSED
        return s.CREATED


# --- Clock ----------------------------------------------------------------------

_clock_lock = threading.Lock()
_clock_last = 0


def _reset_clock_lock_after_fork() -> None:
    # A lock held by another thread at fork time would stay held in the child.
    global _clock_lock
    _clock_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_clock_lock_after_fork)


def _reserve_timestamps(count: int, at_least: int) -> int:
    """The first of `count` consecutive nanosecond timestamps, after `at_least` and any
    handed out before in this process."""
    global _clock_last
    with _clock_lock:
        first = max(time.time_ns(), _clock_last + 1, at_least + 1)
        _clock_last = first + max(count, 1) - 1
        return first


# --- The adapter ----------------------------------------------------------------


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _is_retryable(error: DatabaseError) -> bool:
    return getattr(error.__cause__, "sqlstate", None) in _RETRYABLE_SQLSTATES


class _Retry(Exception):
    """A deadlock or serialization failure: the batch was rolled back and can run again."""


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    """Database failures as the port's exceptions."""
    try:
        yield
    except OperationalError as error:
        if _is_retryable(error):
            raise _Retry from error
        raise LedgerUnavailable(f"ledger database error: {error}") from error
    except InterfaceError as error:
        raise LedgerUnavailable(f"ledger database error: {error}") from error


def _advisory_key(value: int) -> int:
    # Fold the 128-bit id into a signed int4; a collision only serializes two batches.
    folded = (value ^ (value >> 32) ^ (value >> 64) ^ (value >> 96)) & 0xFFFFFFFF
    return folded - (1 << 32) if folded >= 1 << 31 else folded


class SqlFundingLedger(FundingLedger):
    """The funding ledger in this service's own database (see the module docstring)."""

    max_batch_size: int = 8189

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using

    # -- port ------------------------------------------------------------------

    def create_accounts(self, accounts: Sequence[Account]) -> list[CreateAccountStatus]:
        self._check_batch(accounts)
        for account in accounts:
            _validate_account(account)
        if not accounts:
            return []
        return self._with_retries(lambda: self._create_accounts_once(accounts))

    def create_transfers(self, transfers: Sequence[Transfer]) -> list[CreateTransferStatus]:
        self._check_batch(transfers)
        for transfer in transfers:
            _validate_transfer(transfer)
        if not transfers:
            return []
        return self._with_retries(lambda: self._create_transfers_once(transfers))

    def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        _validate_ids(ids)
        found: dict[int, Account] = {}
        with _database_errors():
            for account_row in self._read_accounts(sorted({_hex(i) for i in ids}), lock=False):
                account = account_row.to_account()
                found[account.id] = account
        return [found[i] for i in ids if i in found]

    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        _validate_ids(ids)
        found: dict[int, Transfer] = {}
        with _database_errors():
            for transfer_row in self._read_transfers(sorted({_hex(i) for i in ids})):
                transfer = transfer_row.to_transfer()
                found[transfer.id] = transfer
        return [found[i] for i in ids if i in found]

    def accounts_with_code(self, ledger: int, code: int) -> Iterator[Account]:
        """Every account of `ledger` with `code`, oldest first, a page (query) at a time.

        Pages are read one after another, not as one snapshot, as TigerBeetle's
        query_accounts pages are.
        """
        # Zero would mean "any" in TigerBeetle's query filter: refuse it, as the
        # TigerBeetle adapter does.
        if not isinstance(ledger, int) or not 0 < ledger <= _U32_MAX:
            raise ValueError(f"ledger out of range: {ledger!r}")
        if not isinstance(code, int) or not 0 < code <= _U16_MAX:
            raise ValueError(f"code out of range: {code!r}")
        return self._accounts_with_code(ledger, code)

    def _accounts_with_code(self, ledger: int, code: int, page_size: int = 1000) -> Iterator[Account]:
        after = 0
        while True:
            with _database_errors():
                query = LedgerAccount.objects.using(self.using).filter(ledger=ledger, code=code, timestamp__gt=after)
                page = list(query.order_by("timestamp")[:page_size])
            for row in page:
                yield _AccountRow.from_model(row).to_account()
            if len(page) < page_size:
                return
            after = page[-1].timestamp

    def expire_pending_transfers(self, limit: int = 8189) -> int:
        """Release reservations whose timeout has passed; returns how many.

        create_transfers already does this for the accounts it touches; call
        this periodically so that lookups of idle accounts are current too.
        """
        return self._with_retries(lambda: self._expire_once(limit))

    # -- plumbing ----------------------------------------------------------------

    def _check_batch(self, events: Sequence[object]) -> None:
        if len(events) > self.max_batch_size:
            raise ValueError(f"batch of {len(events)} events exceeds max_batch_size {self.max_batch_size}")

    def _chunk_size(self) -> int:
        # SQLite's Django backend caps a statement at 999 parameters.
        limit = transaction.get_connection(self.using).features.max_query_params
        return min(limit - 10, 5000) if limit else 5000

    def _with_retries(self, attempt: Callable[[], _T]) -> _T:
        for number in range(1, _ATTEMPTS + 1):
            try:
                with _database_errors():
                    return attempt()
            except IntegrityError:
                # A concurrent writer took the same timestamp or id first; the
                # next attempt sees its row.
                if number == _ATTEMPTS:
                    raise
            except _Retry:
                if number == _ATTEMPTS:
                    raise LedgerUnavailable("the ledger database kept aborting the batch") from None
        raise AssertionError("unreachable")

    def _lock_ids(self, namespace: int, ids: Iterable[int]) -> None:
        """Serialize writers of the same ids on PostgreSQL (no-op elsewhere)."""
        connection = transaction.get_connection(self.using)
        if connection.vendor != "postgresql":
            return
        keys = sorted({_advisory_key(i) for i in ids})
        with connection.cursor() as cursor:
            # unnest keeps the array's (sorted) order, so every writer locks in one order.
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int[]) AS k",
                [namespace, keys],
            )
            cursor.fetchall()

    def _read_accounts(self, hex_ids: list[str], lock: bool, ordered: bool = False) -> Iterator[_AccountRow]:
        # SQLite has no FOR UPDATE (the ORM leaves it out there): its writer lock serializes instead.
        lock = lock and transaction.get_connection(self.using).features.has_select_for_update
        for chunk in _chunks(hex_ids, self._chunk_size()):

            def build(chunk=chunk):
                query = LedgerAccount.objects.using(self.using).filter(id__in=chunk)
                if ordered or lock:
                    # FOR UPDATE after ORDER BY locks in id order: no deadlock between batches.
                    query = query.order_by("id")
                if lock:
                    query = query.select_for_update()
                return query.values_list(*_ACCOUNT_FIELDS)

            shape = ("ledger accounts", len(chunk), ordered or lock, lock)
            for values in compiled_sql.rows(self.using, shape, build, chunk):
                yield _AccountRow.from_values(values)

    def _read_transfers(self, hex_ids: list[str]) -> Iterator[_TransferRow]:
        for chunk in _chunks(hex_ids, self._chunk_size()):

            def build(chunk=chunk):
                return LedgerTransfer.objects.using(self.using).filter(id__in=chunk).values_list(*_TRANSFER_FIELDS)

            for values in compiled_sql.rows(self.using, ("ledger transfers", len(chunk)), build, chunk):
                yield _TransferRow.from_values(values)

    def _fetch_accounts(self, ids: Iterable[int], lock: bool) -> dict[int, _AccountRow]:
        hex_ids = sorted({_hex(i) for i in ids})
        return {account.id: account for account in self._read_accounts(hex_ids, lock=lock, ordered=True)}

    def _fetch_transfers(self, ids: Iterable[int]) -> dict[int, _TransferRow]:
        return {transfer.id: transfer for transfer in self._read_transfers(sorted({_hex(i) for i in ids}))}

    def _fetch_failed_ids(self, ids: Iterable[int]) -> set[int]:
        hex_ids = sorted({_hex(i) for i in ids})
        failed: set[int] = set()
        for chunk in _chunks(hex_ids, self._chunk_size()):

            def build(chunk=chunk):
                return LedgerFailedTransferId.objects.using(self.using).filter(id__in=chunk).values_list("id")

            shape = ("ledger failed ids", len(chunk))
            failed.update(_int(hex_id) for (hex_id,) in compiled_sql.rows(self.using, shape, build, chunk))
        return failed

    def _due_pending_ids(self, cutoff: int, account_ids: set[int] | None, limit: int) -> list[int]:
        """Open reservations that have timed out, touching `account_ids` (or any)."""

        def build():
            return (
                LedgerTransfer.objects.using(self.using)
                .filter(pending_status=PendingStatus.PENDING, expires_at__isnull=False, expires_at__lte=cutoff)
                .order_by("expires_at")
                .values_list("id", "debit_account_id", "credit_account_id")
            )

        # The ORM binds the cutoff, then the status (the order compiled_sql checks).
        rows = compiled_sql.rows(self.using, "ledger due reservations", build, [cutoff, PendingStatus.PENDING])
        if account_ids is None:
            return [_int(hex_id) for hex_id, _, _ in rows[:limit]]
        # Only the due reservations are read, through the partial index on expires_at (few, if any),
        # and matched to the accounts here. With the accounts in the WHERE clause SQLite searched by
        # account instead (MULTI-INDEX OR) and read the whole history of the spot pool account on
        # every call: 157 ms at 25,000 transfers, growing with every transfer.
        wanted = {_hex(i) for i in account_ids}
        due: list[int] = []
        for hex_id, debit_id, credit_id in rows:
            if debit_id in wanted or credit_id in wanted:
                due.append(_int(hex_id))
                if len(due) >= limit:
                    break
        return due

    # -- create_accounts ---------------------------------------------------------------

    def _create_accounts_once(self, events: Sequence[Account]) -> list[CreateAccountStatus]:
        with transaction.atomic(using=self.using):
            event_ids = {a.id for a in events}
            self._lock_ids(_LOCK_NAMESPACE_ACCOUNT_ID, event_ids)
            existing = self._fetch_accounts(event_ids, lock=False)

            account_timestamp_max = 0
            transfer_timestamps: set[int] = set()
            if int(events[0].flags) & AccountFlags.IMPORTED:
                account_timestamp_max = self._max_timestamp(LedgerAccount)
                transfer_timestamps = self._timestamps_in(LedgerTransfer, {a.timestamp for a in events})

            seen = max((a.timestamp for a in existing.values()), default=0)
            first = _reserve_timestamps(len(events), max(seen, account_timestamp_max))
            batch = _AccountBatch(existing, account_timestamp_max, transfer_timestamps)
            results = _execute_batch(
                events,
                CreateAccountStatus,
                int(AccountFlags.IMPORTED),
                first + len(events) - 1,
                batch.undo,
                batch.create_account,
                lambda _event, _status, _timestamp: None,  # account errors never burn an id
            )
            if batch.created:
                LedgerAccount.objects.using(self.using).bulk_create([row.to_model() for row in batch.created.values()])
            return results

    # -- create_transfers --------------------------------------------------------------

    def _create_transfers_once(self, events: Sequence[Transfer]) -> list[CreateTransferStatus]:
        with transaction.atomic(using=self.using):
            event_ids = {t.id for t in events}
            self._lock_ids(_LOCK_NAMESPACE_TRANSFER_ID, event_ids)
            cutoff = time.time_ns()

            # Which accounts the batch can touch: its own, those of the pending
            # transfers it posts or voids, and those of reservations to expire.
            pending_ids = {
                t.pending_id
                for t in events
                if int(t.flags) & (TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER)
                and 0 < t.pending_id < UINT128_MAX
            }
            account_ids = {i for t in events for i in (t.debit_account_id, t.credit_account_id) if 0 < i < UINT128_MAX}
            for p in self._fetch_transfers(pending_ids).values():
                account_ids.update((p.debit_account_id, p.credit_account_id))
            due_ids = self._due_pending_ids(cutoff, account_ids, limit=self.max_batch_size)
            due_rows = self._fetch_transfers(due_ids)
            for p in due_rows.values():
                account_ids.update((p.debit_account_id, p.credit_account_id))

            accounts = self._fetch_accounts(account_ids, lock=True)
            # Read after the locks: whatever a concurrent batch on these accounts
            # did is committed and visible now.
            transfers = self._fetch_transfers(event_ids | pending_ids | set(due_ids))
            missing = {
                i
                for p in transfers.values()
                if p.id in pending_ids
                for i in (p.debit_account_id, p.credit_account_id)
                if i not in accounts
            }
            if missing:  # a pending transfer committed after the first read
                accounts.update(self._fetch_accounts(missing, lock=True))
            failed_ids = self._fetch_failed_ids(event_ids)

            batch_imported = bool(int(events[0].flags) & TransferFlags.IMPORTED)
            transfer_timestamp_max = 0
            account_timestamps: set[int] = set()
            if batch_imported:
                transfer_timestamp_max = self._max_timestamp(LedgerTransfer)
                account_timestamps = self._timestamps_in(LedgerAccount, {t.timestamp for t in events})

            original_accounts = {i: a.balances() for i, a in accounts.items()}
            original_status = {i: t.pending_status for i, t in transfers.items()}
            batch = _TransferBatch(accounts, transfers, failed_ids, transfer_timestamp_max, account_timestamps)

            for pending_id in due_ids:
                p = transfers.get(pending_id)
                if (
                    p is not None
                    and p.pending_status == PendingStatus.PENDING
                    and p.debit_account_id in accounts
                    and p.credit_account_id in accounts
                ):
                    batch.expire(p)

            seen = max(
                [a.timestamp for a in accounts.values()] + [t.timestamp for t in transfers.values()],
                default=0,
            )
            first = _reserve_timestamps(len(events), max(seen, cutoff - 1, transfer_timestamp_max))
            results = _execute_batch(
                events,
                CreateTransferStatus,
                int(TransferFlags.IMPORTED),
                first + len(events) - 1,
                batch.undo,
                batch.create_transfer,
                batch.on_failed,
            )
            self._write_transfer_batch(batch, original_accounts, original_status)
            return results

    def _write_transfer_batch(
        self,
        batch: _TransferBatch,
        original_accounts: dict[int, tuple[int, int, int, int, int]],
        original_status: dict[int, int],
    ) -> None:
        db = self.using
        if batch.created:
            LedgerTransfer.objects.using(db).bulk_create([row.to_model() for row in batch.created.values()])
        changed_accounts = [a for i, a in sorted(batch.accounts.items()) if a.balances() != original_accounts[i]]
        if changed_accounts:
            # Plain executemany: Django's bulk_update builds a CASE per row and
            # costs seconds for a full batch; this is one prepared statement.
            self._execute_many(
                LedgerAccount,
                ["debits_pending", "debits_posted", "credits_pending", "credits_posted", "flags"],
                [(*a.balances(), _hex(a.id)) for a in changed_accounts],
            )
        changed_pending = [
            t for i, t in batch.transfers.items() if i in original_status and t.pending_status != original_status[i]
        ]
        if changed_pending:
            self._execute_many(
                LedgerTransfer, ["pending_status"], [(t.pending_status, _hex(t.id)) for t in changed_pending]
            )
        if batch.newly_failed:
            LedgerFailedTransferId.objects.using(db).bulk_create(
                [
                    LedgerFailedTransferId(id=_hex(i), status=status, timestamp=timestamp)
                    for i, (status, timestamp) in batch.newly_failed.items()
                ]
            )

    def _execute_many(
        self, model: type[LedgerAccount] | type[LedgerTransfer], fields: list[str], rows: list[tuple[object, ...]]
    ) -> None:
        """UPDATE `fields` by primary key; each row is the new values, then the id."""
        connection = transaction.get_connection(self.using)
        quote = connection.ops.quote_name
        assignments = ", ".join(f"{quote(model._meta.get_field(f).column)} = %s" for f in fields)
        sql = f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(model._meta.pk.column)} = %s"  # noqa: S608 - names from the model, values bound
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)

    def _expire_once(self, limit: int) -> int:
        with transaction.atomic(using=self.using):
            cutoff = time.time_ns()
            due = self._fetch_transfers(self._due_pending_ids(cutoff, None, limit))
            if not due:
                return 0
            account_ids = {i for p in due.values() for i in (p.debit_account_id, p.credit_account_id)}
            accounts = self._fetch_accounts(account_ids, lock=True)
            fresh = self._fetch_transfers(due)
            original_accounts = {i: a.balances() for i, a in accounts.items()}
            original_status = {i: t.pending_status for i, t in fresh.items()}
            batch = _TransferBatch(accounts, fresh, set(), 0, set())
            expired = 0
            for p in fresh.values():
                if p.pending_status == PendingStatus.PENDING:
                    batch.expire(p)
                    expired += 1
            self._write_transfer_batch(batch, original_accounts, original_status)
            return expired

    def _max_timestamp(self, model: type[LedgerAccount] | type[LedgerTransfer]) -> int:
        return model.objects.using(self.using).aggregate(m=Max("timestamp"))["m"] or 0

    def _timestamps_in(self, model: type[LedgerAccount] | type[LedgerTransfer], timestamps: set[int]) -> set[int]:
        candidates = sorted(ts for ts in timestamps if 0 < ts <= _TIMESTAMP_MAX)
        found: set[int] = set()
        for chunk in _chunks(candidates, self._chunk_size()):
            found.update(
                model.objects.using(self.using).filter(timestamp__in=chunk).values_list("timestamp", flat=True)
            )
        return found
