"""The funding-ledger port, with TigerBeetle's data model and result codes.

Adapters: `sql` (settlement.ledger.sql, one machine) and `tigerbeetle`
(settlement.ledger.tigerbeetle). Both answer exactly as TigerBeetle does, so
the saga and the contract suite (tests/contract/test_ledger_contract.py) do
not know which one they talk to. Result codes keep TigerBeetle's names and
numbers; every create call returns one status per event, in order.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Iterator, Sequence

UINT128_MAX = (1 << 128) - 1


class AccountFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1 << 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
    HISTORY = 1 << 3
    IMPORTED = 1 << 4
    CLOSED = 1 << 5


class TransferFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1 << 0
    PENDING = 1 << 1
    POST_PENDING_TRANSFER = 1 << 2
    VOID_PENDING_TRANSFER = 1 << 3
    BALANCING_DEBIT = 1 << 4
    BALANCING_CREDIT = 1 << 5
    CLOSING_DEBIT = 1 << 6
    CLOSING_CREDIT = 1 << 7
    IMPORTED = 1 << 8


class CreateAccountStatus(enum.IntEnum):
    CREATED = 0xFFFFFFFF
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    IMPORTED_EVENT_EXPECTED = 22
    IMPORTED_EVENT_NOT_EXPECTED = 23
    TIMESTAMP_MUST_BE_ZERO = 3
    IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE = 24
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE = 25
    RESERVED_FIELD = 4
    RESERVED_FLAG = 5
    ID_MUST_NOT_BE_ZERO = 6
    ID_MUST_NOT_BE_INT_MAX = 7
    EXISTS_WITH_DIFFERENT_FLAGS = 15
    EXISTS_WITH_DIFFERENT_USER_DATA_128 = 16
    EXISTS_WITH_DIFFERENT_USER_DATA_64 = 17
    EXISTS_WITH_DIFFERENT_USER_DATA_32 = 18
    EXISTS_WITH_DIFFERENT_LEDGER = 19
    EXISTS_WITH_DIFFERENT_CODE = 20
    EXISTS = 21
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 8
    DEBITS_PENDING_MUST_BE_ZERO = 9
    DEBITS_POSTED_MUST_BE_ZERO = 10
    CREDITS_PENDING_MUST_BE_ZERO = 11
    CREDITS_POSTED_MUST_BE_ZERO = 12
    LEDGER_MUST_NOT_BE_ZERO = 13
    CODE_MUST_NOT_BE_ZERO = 14
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS = 26


class CreateTransferStatus(enum.IntEnum):
    CREATED = 0xFFFFFFFF
    LINKED_EVENT_FAILED = 1
    LINKED_EVENT_CHAIN_OPEN = 2
    IMPORTED_EVENT_EXPECTED = 56
    IMPORTED_EVENT_NOT_EXPECTED = 57
    TIMESTAMP_MUST_BE_ZERO = 3
    IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE = 58
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE = 59
    RESERVED_FLAG = 4
    ID_MUST_NOT_BE_ZERO = 5
    ID_MUST_NOT_BE_INT_MAX = 6
    EXISTS_WITH_DIFFERENT_FLAGS = 36
    EXISTS_WITH_DIFFERENT_PENDING_ID = 40
    EXISTS_WITH_DIFFERENT_TIMEOUT = 44
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = 37
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = 38
    EXISTS_WITH_DIFFERENT_AMOUNT = 39
    EXISTS_WITH_DIFFERENT_USER_DATA_128 = 41
    EXISTS_WITH_DIFFERENT_USER_DATA_64 = 42
    EXISTS_WITH_DIFFERENT_USER_DATA_32 = 43
    EXISTS_WITH_DIFFERENT_LEDGER = 67
    EXISTS_WITH_DIFFERENT_CODE = 45
    EXISTS = 46
    ID_ALREADY_FAILED = 68
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = 7
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 8
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 9
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = 10
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX = 11
    ACCOUNTS_MUST_BE_DIFFERENT = 12
    PENDING_ID_MUST_BE_ZERO = 13
    PENDING_ID_MUST_NOT_BE_ZERO = 14
    PENDING_ID_MUST_NOT_BE_INT_MAX = 15
    PENDING_ID_MUST_BE_DIFFERENT = 16
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = 17
    CLOSING_TRANSFER_MUST_BE_PENDING = 64
    LEDGER_MUST_NOT_BE_ZERO = 19
    CODE_MUST_NOT_BE_ZERO = 20
    DEBIT_ACCOUNT_NOT_FOUND = 21
    CREDIT_ACCOUNT_NOT_FOUND = 22
    ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER = 23
    TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS = 24
    PENDING_TRANSFER_NOT_FOUND = 25
    PENDING_TRANSFER_NOT_PENDING = 26
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = 27
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = 28
    PENDING_TRANSFER_HAS_DIFFERENT_LEDGER = 29
    PENDING_TRANSFER_HAS_DIFFERENT_CODE = 30
    EXCEEDS_PENDING_TRANSFER_AMOUNT = 31
    PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = 32
    PENDING_TRANSFER_ALREADY_POSTED = 33
    PENDING_TRANSFER_ALREADY_VOIDED = 34
    PENDING_TRANSFER_EXPIRED = 35
    IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS = 60
    IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT = 61
    IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_CREDIT_ACCOUNT = 62
    IMPORTED_EVENT_TIMEOUT_MUST_BE_ZERO = 63
    DEBIT_ACCOUNT_ALREADY_CLOSED = 65
    CREDIT_ACCOUNT_ALREADY_CLOSED = 66
    OVERFLOWS_DEBITS_PENDING = 47
    OVERFLOWS_CREDITS_PENDING = 48
    OVERFLOWS_DEBITS_POSTED = 49
    OVERFLOWS_CREDITS_POSTED = 50
    OVERFLOWS_DEBITS = 51
    OVERFLOWS_CREDITS = 52
    OVERFLOWS_TIMEOUT = 53
    EXCEEDS_CREDITS = 54
    EXCEEDS_DEBITS = 55


# Statuses that mean "this exact event is in the ledger" (a retry of it).
ACCOUNT_IN_LEDGER = frozenset({CreateAccountStatus.CREATED, CreateAccountStatus.EXISTS})
TRANSFER_IN_LEDGER = frozenset({CreateTransferStatus.CREATED, CreateTransferStatus.EXISTS})


@dataclasses.dataclass(frozen=True)
class Account:
    id: int
    ledger: int
    code: int
    flags: AccountFlags = AccountFlags.NONE
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    timestamp: int = 0

    @property
    def available(self) -> int:
        """What a debit-limited account can still spend."""
        return self.credits_posted - self.debits_posted - self.debits_pending


@dataclasses.dataclass(frozen=True)
class Transfer:
    id: int
    debit_account_id: int
    credit_account_id: int
    amount: int
    ledger: int
    code: int
    flags: TransferFlags = TransferFlags.NONE
    pending_id: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timeout: int = 0
    timestamp: int = 0


class LedgerUnavailable(Exception):
    """The ledger did not answer; what it did with the request is unknown."""


class FundingLedger(abc.ABC):
    """Accounts and double-entry transfers, with TigerBeetle's semantics."""

    #: The most events one create call takes.
    max_batch_size: int = 8189

    @abc.abstractmethod
    def create_accounts(self, accounts: Sequence[Account]) -> list[CreateAccountStatus]:
        """One status per account, in order (CREATED, EXISTS or an error)."""

    @abc.abstractmethod
    def create_transfers(self, transfers: Sequence[Transfer]) -> list[CreateTransferStatus]:
        """One status per transfer, in order. Linked chains succeed or fail whole."""

    @abc.abstractmethod
    def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        """The accounts that exist among `ids`, in the order asked."""

    @abc.abstractmethod
    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        """The transfers that exist among `ids`, in the order asked."""

    def accounts_with_code(self, ledger: int, code: int) -> Iterator[Account]:
        """Every account of this ledger with this code, oldest (lowest timestamp) first.

        Used by reconciliation to sum the user funding accounts of an asset.
        Not one snapshot: an adapter may read the accounts a page at a time.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list accounts by ledger and code")

    def ping(self) -> None:
        """Raise LedgerUnavailable if the ledger does not answer."""
        self.lookup_accounts([1])

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
