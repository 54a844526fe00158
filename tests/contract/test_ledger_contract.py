"""The funding-ledger contract: what every adapter must answer, as TigerBeetle does.

Runs unchanged against each adapter (see conftest.py). A TigerBeetle server
keeps its state between runs, so every test uses fresh random ids and its own
random ledger number; no test depends on what another one left behind.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

import pytest

from settlement.ledger.base import (
    ACCOUNT_IN_LEDGER,
    TRANSFER_IN_LEDGER,
    UINT128_MAX,
    Account,
    AccountFlags,
    CreateAccountStatus,
    CreateTransferStatus,
    FundingLedger,
    Transfer,
    TransferFlags,
)

A = CreateAccountStatus
T = CreateTransferStatus
AMOUNT_MAX = UINT128_MAX  # a post with this amount posts the whole pending amount


def new_id() -> int:
    return random.getrandbits(120) | 1


class Book:
    """A fresh ledger number on the adapter under test, with helpers to fill it."""

    def __init__(self, ledger: FundingLedger) -> None:
        self.ledger = ledger
        self.number = random.randint(1, (1 << 32) - 2)

    def new_account(self, flags: AccountFlags = AccountFlags.NONE, code: int = 1, **fields: int) -> Account:
        account = Account(id=new_id(), ledger=self.number, code=code, flags=flags, **fields)
        assert self.ledger.create_accounts([account]) == [A.CREATED]
        return account

    def user(self) -> Account:
        """An account that can never spend more than it was credited."""
        return self.new_account(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)

    def external(self) -> Account:
        return self.new_account(code=3)

    def transfer(self, debit: Account, credit: Account, amount: int, **fields: int) -> Transfer:
        fields.setdefault("ledger", self.number)
        fields.setdefault("code", 1)
        return Transfer(id=new_id(), debit_account_id=debit.id, credit_account_id=credit.id, amount=amount, **fields)

    def post(self, pending: Transfer, amount: int | None = None, **fields: int) -> Transfer:
        return Transfer(
            id=new_id(),
            debit_account_id=fields.pop("debit_account_id", 0),
            credit_account_id=fields.pop("credit_account_id", 0),
            amount=pending.amount if amount is None else amount,
            ledger=fields.pop("ledger", 0),
            code=fields.pop("code", 0),
            flags=fields.pop("flags", TransferFlags.POST_PENDING_TRANSFER),
            pending_id=pending.id,
            **fields,
        )

    def void(self, pending: Transfer, amount: int = 0, **fields: int) -> Transfer:
        return self.post(pending, amount, flags=TransferFlags.VOID_PENDING_TRANSFER, **fields)

    def create(self, *transfers: Transfer) -> list[CreateTransferStatus]:
        return self.ledger.create_transfers(list(transfers))

    def fund(self, account: Account, amount: int) -> None:
        assert self.create(self.transfer(self.external(), account, amount)) == [T.CREATED]

    def get(self, account: Account) -> Account:
        (found,) = self.ledger.lookup_accounts([account.id])
        return found

    def balances(self, account: Account) -> tuple[int, int, int, int]:
        """(debits_pending, debits_posted, credits_pending, credits_posted)."""
        a = self.get(account)
        return (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)


@pytest.fixture
def book(funding_ledger: FundingLedger) -> Book:
    return Book(funding_ledger)


def status_id(value: object) -> str | None:
    """Test ids named after the expected status."""
    return value.name.lower() if isinstance(value, (CreateAccountStatus, CreateTransferStatus)) else None


def statuses(values: Sequence[int]) -> list[str]:
    """Readable names in assertion failures."""
    return [T(v).name for v in values]


# --- Accounts -------------------------------------------------------------------


def test_create_account_then_retry_answers_exists(book: Book) -> None:
    account = Account(id=new_id(), ledger=book.number, code=7, user_data_64=42)
    assert book.ledger.create_accounts([account]) == [A.CREATED]
    assert book.ledger.create_accounts([account]) == [A.EXISTS]
    assert A.EXISTS in ACCOUNT_IN_LEDGER

    (found,) = book.ledger.lookup_accounts([account.id])
    assert (found.id, found.ledger, found.code, found.flags, found.user_data_64) == (
        account.id,
        book.number,
        7,
        AccountFlags.NONE,
        42,
    )
    assert (found.debits_pending, found.debits_posted, found.credits_pending, found.credits_posted) == (0, 0, 0, 0)
    assert found.timestamp > 0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"flags": AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS}, A.EXISTS_WITH_DIFFERENT_FLAGS),
        ({"user_data_128": 5}, A.EXISTS_WITH_DIFFERENT_USER_DATA_128),
        ({"user_data_64": 5}, A.EXISTS_WITH_DIFFERENT_USER_DATA_64),
        ({"user_data_32": 5}, A.EXISTS_WITH_DIFFERENT_USER_DATA_32),
        ({"code": 2}, A.EXISTS_WITH_DIFFERENT_CODE),
        ({"ledger_delta": 1}, A.EXISTS_WITH_DIFFERENT_LEDGER),
        # Flags are compared first.
        ({"flags": AccountFlags.NONE, "code": 2}, A.EXISTS_WITH_DIFFERENT_FLAGS),
    ],
    ids=status_id,
)
def test_same_account_id_with_a_different_field(book: Book, change: dict, expected: CreateAccountStatus) -> None:
    account = book.user()
    change = dict(change)
    ledger = book.number + change.pop("ledger_delta", 0)
    other = Account(
        id=account.id,
        ledger=ledger,
        code=change.pop("code", account.code),
        flags=change.pop("flags", account.flags),
        **change,
    )
    assert book.ledger.create_accounts([other]) == [expected]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"id": 0}, A.ID_MUST_NOT_BE_ZERO),
        ({"id": UINT128_MAX}, A.ID_MUST_NOT_BE_INT_MAX),
        ({"ledger": 0}, A.LEDGER_MUST_NOT_BE_ZERO),
        ({"code": 0}, A.CODE_MUST_NOT_BE_ZERO),
        (
            {"flags": AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS},
            A.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
        ),
        ({"flags": AccountFlags(1 << 10)}, A.RESERVED_FLAG),
        ({"credits_posted": 10}, A.CREDITS_POSTED_MUST_BE_ZERO),
        ({"timestamp": 12345}, A.TIMESTAMP_MUST_BE_ZERO),
    ],
    ids=status_id,
)
def test_invalid_account(book: Book, fields: dict, expected: CreateAccountStatus) -> None:
    values = {"id": new_id(), "ledger": book.number, "code": 1, **fields}
    assert book.ledger.create_accounts([Account(**values)]) == [expected]


def test_failed_account_does_not_burn_its_id(book: Book) -> None:
    account_id = new_id()
    assert book.ledger.create_accounts([Account(id=account_id, ledger=book.number, code=0)]) == [
        A.CODE_MUST_NOT_BE_ZERO
    ]
    assert book.ledger.create_accounts([Account(id=account_id, ledger=book.number, code=1)]) == [A.CREATED]


def test_linked_accounts_are_created_together_or_not_at_all(book: Book) -> None:
    first = Account(id=new_id(), ledger=book.number, code=1, flags=AccountFlags.LINKED)
    bad = Account(id=new_id(), ledger=book.number, code=0)
    alone = Account(id=new_id(), ledger=book.number, code=1)
    assert book.ledger.create_accounts([first, bad, alone]) == [
        A.LINKED_EVENT_FAILED,
        A.CODE_MUST_NOT_BE_ZERO,
        A.CREATED,
    ]
    assert book.ledger.lookup_accounts([first.id, bad.id, alone.id]) == book.ledger.lookup_accounts([alone.id])


# --- Single-phase transfers ---------------------------------------------------------


def test_transfer_moves_balances(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    transfer = book.transfer(alice, bob, 30, user_data_64=9)
    assert book.create(transfer) == [T.CREATED]

    assert book.balances(alice) == (0, 30, 0, 100)
    assert book.balances(bob) == (0, 0, 0, 30)
    (stored,) = book.ledger.lookup_transfers([transfer.id])
    assert (stored.debit_account_id, stored.credit_account_id, stored.amount, stored.user_data_64) == (
        alice.id,
        bob.id,
        30,
        9,
    )
    assert stored.flags == TransferFlags.NONE
    assert stored.timestamp > 0


def test_retry_of_the_same_transfer_answers_exists_and_moves_nothing(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    transfer = book.transfer(alice, bob, 30)
    assert book.create(transfer) == [T.CREATED]
    assert book.create(transfer) == [T.EXISTS]
    assert book.create(transfer, transfer) == [T.EXISTS, T.EXISTS]
    assert T.EXISTS in TRANSFER_IN_LEDGER
    assert book.balances(alice) == (0, 30, 0, 100)
    assert book.balances(bob) == (0, 0, 0, 30)


def test_same_id_twice_in_one_batch(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    transfer = book.transfer(alice, bob, 30)
    assert book.create(transfer, transfer) == [T.CREATED, T.EXISTS]
    assert book.balances(bob) == (0, 0, 0, 30)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"amount": 31}, T.EXISTS_WITH_DIFFERENT_AMOUNT),
        ({"user_data_128": 1}, T.EXISTS_WITH_DIFFERENT_USER_DATA_128),
        ({"user_data_64": 1}, T.EXISTS_WITH_DIFFERENT_USER_DATA_64),
        ({"user_data_32": 1}, T.EXISTS_WITH_DIFFERENT_USER_DATA_32),
        ({"code": 2}, T.EXISTS_WITH_DIFFERENT_CODE),
        ({"flags": TransferFlags.PENDING}, T.EXISTS_WITH_DIFFERENT_FLAGS),
        ({"timeout": 5}, T.EXISTS_WITH_DIFFERENT_TIMEOUT),
        # TigerBeetle's precedence: flags, pending_id, timeout, accounts, amount, user data, ledger, code.
        ({"flags": TransferFlags.PENDING, "amount": 1}, T.EXISTS_WITH_DIFFERENT_FLAGS),
        ({"amount": 1, "code": 2}, T.EXISTS_WITH_DIFFERENT_AMOUNT),
        ({"pending_id": 77, "amount": 1}, T.EXISTS_WITH_DIFFERENT_PENDING_ID),
    ],
    ids=status_id,
)
def test_same_transfer_id_with_a_different_field(book: Book, change: dict, expected: CreateTransferStatus) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    transfer = book.transfer(alice, bob, 30)
    assert book.create(transfer) == [T.CREATED]
    values = {
        "id": transfer.id,
        "debit_account_id": alice.id,
        "credit_account_id": bob.id,
        "amount": 30,
        "ledger": book.number,
        "code": 1,
        **change,
    }
    assert statuses(book.create(Transfer(**values))) == [expected.name]
    assert book.balances(bob) == (0, 0, 0, 30)


def test_same_transfer_id_with_different_accounts(book: Book) -> None:
    alice, bob, carol = book.user(), book.user(), book.user()
    book.fund(alice, 100)
    book.fund(carol, 100)
    transfer = book.transfer(alice, bob, 30)
    assert book.create(transfer) == [T.CREATED]
    other_debit = Transfer(**{**vars(transfer), "debit_account_id": carol.id})
    other_credit = Transfer(**{**vars(transfer), "credit_account_id": carol.id})
    assert book.create(other_debit, other_credit) == [
        T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID,
        T.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID,
    ]


def test_insufficient_funds_then_retry_of_the_same_id_already_failed(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 10)
    transfer = book.transfer(alice, bob, 11)
    assert book.create(transfer) == [T.EXCEEDS_CREDITS]
    assert book.balances(alice) == (0, 0, 0, 10)

    # Even once the money is there, the id stays failed: one id, one outcome.
    book.fund(alice, 10)
    assert book.create(transfer) == [T.ID_ALREADY_FAILED]
    assert book.ledger.lookup_transfers([transfer.id]) == []
    assert book.balances(bob) == (0, 0, 0, 0)


def test_credits_must_not_exceed_debits(book: Book) -> None:
    capped = book.new_account(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
    source = book.external()
    assert book.create(book.transfer(source, capped, 1)) == [T.EXCEEDS_DEBITS]
    assert book.create(book.transfer(capped, source, 5)) == [T.CREATED]
    assert book.create(book.transfer(source, capped, 5)) == [T.CREATED]
    assert book.balances(capped) == (0, 5, 0, 5)


def test_exact_balance_can_be_spent(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 10)
    assert book.create(book.transfer(alice, bob, 10)) == [T.CREATED]
    assert book.get(alice).available == 0
    assert book.create(book.transfer(alice, bob, 1)) == [T.EXCEEDS_CREDITS]


@pytest.mark.parametrize("missing_side", ["debit", "credit"])
def test_account_not_found(book: Book, missing_side: str) -> None:
    existing = book.external()
    ghost = Account(id=new_id(), ledger=book.number, code=1)
    debit, credit = (ghost, existing) if missing_side == "debit" else (existing, ghost)
    transfer = book.transfer(debit, credit, 1)
    expected = T.DEBIT_ACCOUNT_NOT_FOUND if missing_side == "debit" else T.CREDIT_ACCOUNT_NOT_FOUND
    assert book.create(transfer) == [expected]
    # Not finding an account is transient: the id is burnt even if the account appears.
    assert book.ledger.create_accounts([ghost]) == [A.CREATED]
    assert book.create(transfer) == [T.ID_ALREADY_FAILED]


def test_invalid_transfers(book: Book) -> None:
    alice, bob = book.user(), book.user()
    other_ledger = Account(id=new_id(), ledger=book.number + 1, code=1)
    assert book.ledger.create_accounts([other_ledger]) == [A.CREATED]
    book.fund(alice, 100)

    def with_(**fields: int) -> Transfer:
        return Transfer(**{**vars(book.transfer(alice, bob, 1)), **fields})

    cases = [
        (with_(id=0), T.ID_MUST_NOT_BE_ZERO),
        (with_(id=UINT128_MAX), T.ID_MUST_NOT_BE_INT_MAX),
        (with_(flags=TransferFlags(1 << 12)), T.RESERVED_FLAG),
        (with_(debit_account_id=0), T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        (with_(debit_account_id=UINT128_MAX), T.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX),
        (with_(credit_account_id=0), T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        (with_(credit_account_id=UINT128_MAX), T.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX),
        (with_(credit_account_id=alice.id), T.ACCOUNTS_MUST_BE_DIFFERENT),
        (with_(pending_id=new_id()), T.PENDING_ID_MUST_BE_ZERO),
        (with_(timeout=10), T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        (with_(flags=TransferFlags.CLOSING_DEBIT), T.CLOSING_TRANSFER_MUST_BE_PENDING),
        (with_(ledger=0), T.LEDGER_MUST_NOT_BE_ZERO),
        (with_(code=0), T.CODE_MUST_NOT_BE_ZERO),
        (with_(credit_account_id=other_ledger.id), T.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER),
        (with_(ledger=book.number + 1), T.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS),
        (with_(timestamp=1), T.TIMESTAMP_MUST_BE_ZERO),
    ]
    results = book.create(*(transfer for transfer, _ in cases))
    assert statuses(results) == [expected.name for _, expected in cases]
    assert book.balances(alice) == (0, 0, 0, 100)

    # None of these codes is transient: the ids can still be used.
    retry = Transfer(**{**vars(cases[8][0]), "pending_id": 0})
    assert book.create(retry) == [T.CREATED]


def test_batch_with_one_bad_transfer_does_not_fail_its_neighbours(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    results = book.create(
        book.transfer(alice, bob, 10),
        book.transfer(alice, bob, 1000),
        book.transfer(alice, alice, 1),
        book.transfer(alice, bob, 20),
    )
    assert results == [T.CREATED, T.EXCEEDS_CREDITS, T.ACCOUNTS_MUST_BE_DIFFERENT, T.CREATED]
    assert book.balances(bob) == (0, 0, 0, 30)


def test_later_events_see_earlier_events_of_the_batch(book: Book) -> None:
    alice, bob, carol = book.user(), book.user(), book.user()
    book.fund(alice, 10)
    results = book.create(book.transfer(alice, bob, 10), book.transfer(bob, carol, 10), book.transfer(bob, carol, 1))
    assert results == [T.CREATED, T.CREATED, T.EXCEEDS_CREDITS]
    assert book.balances(carol) == (0, 0, 0, 10)


def test_empty_batch(book: Book) -> None:
    assert book.ledger.create_transfers([]) == []
    assert book.ledger.create_accounts([]) == []


# --- Linked chains -------------------------------------------------------------------


def test_linked_chain_fails_whole_when_one_event_fails(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    first = book.transfer(alice, bob, 50, flags=TransferFlags.LINKED)
    second = book.transfer(alice, bob, 60)  # exceeds once the first has moved 50
    assert book.create(first, second) == [T.LINKED_EVENT_FAILED, T.EXCEEDS_CREDITS]
    assert book.balances(alice) == (0, 0, 0, 100)
    assert book.balances(bob) == (0, 0, 0, 0)
    assert book.ledger.lookup_transfers([first.id, second.id]) == []

    # The rolled-back event's id is free again; the transient failure's is burnt.
    assert book.create(Transfer(**{**vars(first), "flags": TransferFlags.NONE})) == [T.CREATED]
    assert book.create(second) == [T.ID_ALREADY_FAILED]


def test_linked_chain_succeeds_whole(book: Book) -> None:
    alice, bob, carol = book.user(), book.user(), book.user()
    book.fund(alice, 100)
    chain = [
        book.transfer(alice, bob, 40, flags=TransferFlags.LINKED),
        book.transfer(bob, carol, 40, flags=TransferFlags.LINKED),
        book.transfer(carol, alice, 15),
    ]
    assert book.create(*chain) == [T.CREATED, T.CREATED, T.CREATED]
    assert book.balances(alice) == (0, 40, 0, 115)
    assert book.balances(carol) == (0, 15, 0, 40)


def test_failing_chain_does_not_affect_other_events_of_the_batch(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    results = book.create(
        book.transfer(alice, bob, 1),
        book.transfer(alice, bob, 2, flags=TransferFlags.LINKED),
        book.transfer(alice, bob, 0, code=0, flags=TransferFlags.LINKED),
        book.transfer(alice, bob, 4),
        book.transfer(alice, bob, 8),
    )
    assert results == [T.CREATED, T.LINKED_EVENT_FAILED, T.CODE_MUST_NOT_BE_ZERO, T.LINKED_EVENT_FAILED, T.CREATED]
    assert book.balances(bob) == (0, 0, 0, 9)


def test_chain_left_open_at_the_end_of_the_batch(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    results = book.create(
        book.transfer(alice, bob, 1),
        book.transfer(alice, bob, 2, flags=TransferFlags.LINKED),
        book.transfer(alice, bob, 3, flags=TransferFlags.LINKED),
    )
    assert results == [T.CREATED, T.LINKED_EVENT_FAILED, T.LINKED_EVENT_CHAIN_OPEN]
    assert book.balances(bob) == (0, 0, 0, 1)


def test_exists_breaks_a_chain(book: Book) -> None:
    # Only CREATED keeps a chain going: a retried event inside it fails the rest.
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    done = book.transfer(alice, bob, 5, flags=TransferFlags.LINKED)
    assert book.create(done, book.transfer(alice, bob, 1)) == [T.CREATED, T.CREATED]
    follow_up = book.transfer(alice, bob, 7)
    assert book.create(done, follow_up) == [T.EXISTS, T.LINKED_EVENT_FAILED]
    assert book.balances(bob) == (0, 0, 0, 6)


# --- Two-phase transfers ---------------------------------------------------------------


def test_pending_then_post_moves_reserved_to_posted(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    assert book.create(pending) == [T.CREATED]
    assert book.balances(alice) == (30, 0, 0, 100)
    assert book.balances(bob) == (0, 0, 30, 0)
    assert book.get(alice).available == 70

    post = book.post(pending)
    assert book.create(post) == [T.CREATED]
    assert book.balances(alice) == (0, 30, 0, 100)
    assert book.balances(bob) == (0, 0, 0, 30)
    assert book.get(alice).available == 70

    # A retry of the same post is idempotent.
    assert book.create(post) == [T.EXISTS]
    (stored,) = book.ledger.lookup_transfers([post.id])
    assert (stored.debit_account_id, stored.credit_account_id, stored.amount, stored.pending_id) == (
        alice.id,
        bob.id,
        30,
        pending.id,
    )
    assert (stored.ledger, stored.code) == (book.number, 1)  # taken from the pending transfer


def test_post_with_amount_max_posts_the_full_amount(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    post = book.post(pending, AMOUNT_MAX)
    assert book.create(pending, post) == [T.CREATED, T.CREATED]
    assert book.balances(alice) == (0, 30, 0, 100)
    (stored,) = book.ledger.lookup_transfers([post.id])
    assert stored.amount == 30
    assert book.create(post) == [T.EXISTS]


def test_partial_post_releases_the_rest(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    assert book.create(pending, book.post(pending, 12)) == [T.CREATED, T.CREATED]
    assert book.balances(alice) == (0, 12, 0, 100)
    assert book.balances(bob) == (0, 0, 0, 12)


def test_post_of_zero_posts_nothing(book: Book) -> None:
    # Since TigerBeetle 0.16, amount 0 no longer means "the full amount" (AMOUNT_MAX does).
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    assert book.create(pending, book.post(pending, 0)) == [T.CREATED, T.CREATED]
    assert book.balances(alice) == (0, 0, 0, 100)
    assert book.balances(bob) == (0, 0, 0, 0)


def test_pending_then_void_releases_the_reservation(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    void = book.void(pending)
    assert book.create(pending) == [T.CREATED]
    assert book.create(void) == [T.CREATED]
    assert book.balances(alice) == (0, 0, 0, 100)
    assert book.balances(bob) == (0, 0, 0, 0)
    assert book.create(void) == [T.EXISTS]
    # Voiding with the full amount spelt out is the same void.
    assert book.create(Transfer(**{**vars(void), "amount": 30})) == [T.EXISTS]


def test_post_and_void_may_repeat_the_pending_fields(book: Book) -> None:
    # This is how the saga builds them: same accounts, amount and ledger.
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING, user_data_64=5)
    post = book.post(
        pending, debit_account_id=alice.id, credit_account_id=bob.id, ledger=book.number, code=1, user_data_64=5
    )
    assert book.create(pending, post) == [T.CREATED, T.CREATED]
    assert book.create(post) == [T.EXISTS]


def test_post_with_another_code_than_the_pending_transfer(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    assert book.create(pending, book.post(pending, code=2)) == [T.CREATED, T.PENDING_TRANSFER_HAS_DIFFERENT_CODE]


def test_double_post_answers_already_posted(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    assert book.create(pending, book.post(pending)) == [T.CREATED, T.CREATED]
    assert book.create(book.post(pending)) == [T.PENDING_TRANSFER_ALREADY_POSTED]
    assert book.create(book.void(pending)) == [T.PENDING_TRANSFER_ALREADY_POSTED]
    assert book.balances(alice) == (0, 30, 0, 100)


def test_post_after_void_answers_already_voided(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    assert book.create(pending, book.void(pending)) == [T.CREATED, T.CREATED]
    assert book.create(book.post(pending)) == [T.PENDING_TRANSFER_ALREADY_VOIDED]
    assert book.create(book.void(pending)) == [T.PENDING_TRANSFER_ALREADY_VOIDED]
    assert book.balances(alice) == (0, 0, 0, 100)


def test_post_and_void_in_one_batch(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    assert book.create(pending) == [T.CREATED]
    assert book.create(book.post(pending), book.void(pending)) == [T.CREATED, T.PENDING_TRANSFER_ALREADY_POSTED]


def test_pending_reservation_counts_against_debits_must_not_exceed_credits(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    assert book.create(book.transfer(alice, bob, 80, flags=TransferFlags.PENDING)) == [T.CREATED]
    assert book.create(book.transfer(alice, bob, 21)) == [T.EXCEEDS_CREDITS]
    assert book.create(book.transfer(alice, bob, 21, flags=TransferFlags.PENDING)) == [T.EXCEEDS_CREDITS]
    assert book.create(book.transfer(alice, bob, 20)) == [T.CREATED]
    assert book.get(alice).available == 0


def test_pending_rules(book: Book) -> None:
    alice, bob, carol = book.user(), book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    single = book.transfer(alice, bob, 1)
    assert book.create(pending, single) == [T.CREATED, T.CREATED]

    both = TransferFlags.POST_PENDING_TRANSFER | TransferFlags.VOID_PENDING_TRANSFER
    self_reference = book.post(pending)
    self_reference = Transfer(**{**vars(self_reference), "pending_id": self_reference.id})
    cases = [
        (book.post(pending, flags=both), T.FLAGS_ARE_MUTUALLY_EXCLUSIVE),
        (
            book.post(pending, flags=TransferFlags.POST_PENDING_TRANSFER | TransferFlags.PENDING),
            T.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
        ),
        (Transfer(**{**vars(book.post(pending)), "pending_id": 0}), T.PENDING_ID_MUST_NOT_BE_ZERO),
        (Transfer(**{**vars(book.post(pending)), "pending_id": UINT128_MAX}), T.PENDING_ID_MUST_NOT_BE_INT_MAX),
        (self_reference, T.PENDING_ID_MUST_BE_DIFFERENT),
        (book.post(pending, timeout=5), T.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        (book.post(single), T.PENDING_TRANSFER_NOT_PENDING),
        (book.post(pending, debit_account_id=carol.id), T.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID),
        (book.post(pending, credit_account_id=carol.id), T.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID),
        (book.post(pending, ledger=book.number + 1), T.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER),
        (book.post(pending, 31), T.EXCEEDS_PENDING_TRANSFER_AMOUNT),
        (book.void(pending, 31), T.EXCEEDS_PENDING_TRANSFER_AMOUNT),
        (book.void(pending, 29), T.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT),
    ]
    results = book.create(*(transfer for transfer, _ in cases))
    assert statuses(results) == [expected.name for _, expected in cases]
    assert book.balances(alice) == (30, 1, 0, 100)


def test_pending_transfer_not_found_burns_the_id(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING)
    post = book.post(pending)
    assert book.create(post) == [T.PENDING_TRANSFER_NOT_FOUND]
    assert book.create(pending) == [T.CREATED]
    assert book.create(post) == [T.ID_ALREADY_FAILED]


def test_post_retry_with_different_fields(book: Book) -> None:
    alice, bob, carol = book.user(), book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING, user_data_32=3)
    post = book.post(pending, 20)
    assert book.create(pending, post) == [T.CREATED, T.CREATED]
    (stored,) = book.ledger.lookup_transfers([post.id])
    assert stored.user_data_32 == 3  # zero user data is inherited from the pending transfer

    def with_(**fields: int) -> Transfer:
        return Transfer(**{**vars(post), **fields})

    cases = [
        (with_(amount=21), T.EXISTS_WITH_DIFFERENT_AMOUNT),
        (with_(amount=AMOUNT_MAX), T.EXISTS_WITH_DIFFERENT_AMOUNT),
        (with_(debit_account_id=carol.id), T.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID),
        (with_(user_data_32=4), T.EXISTS_WITH_DIFFERENT_USER_DATA_32),
        (with_(user_data_32=3), T.EXISTS),
        (with_(code=9), T.EXISTS_WITH_DIFFERENT_CODE),
        (with_(flags=TransferFlags.VOID_PENDING_TRANSFER), T.EXISTS_WITH_DIFFERENT_FLAGS),
        (post, T.EXISTS),
    ]
    results = book.create(*(transfer for transfer, _ in cases))
    assert statuses(results) == [expected.name for _, expected in cases]


def test_pending_transfer_times_out(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING, timeout=1)
    assert book.create(pending) == [T.CREATED]
    assert book.balances(alice) == (30, 0, 0, 100)
    time.sleep(1.2)
    post = book.post(pending)
    assert book.create(post) == [T.PENDING_TRANSFER_EXPIRED]
    # Not a transient code: the same post answers the same.
    assert book.create(post) == [T.PENDING_TRANSFER_EXPIRED]
    # The reservation is released (TigerBeetle does it on its next expiry pulse).
    deadline = time.monotonic() + 5
    while book.balances(alice) != (0, 0, 0, 100) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert book.balances(alice) == (0, 0, 0, 100)
    assert book.balances(bob) == (0, 0, 0, 0)


# --- Balancing and closing ---------------------------------------------------------


def test_balancing_debit_moves_at_most_what_is_available(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 25)
    sweep = book.transfer(alice, bob, 1000, flags=TransferFlags.BALANCING_DEBIT)
    assert book.create(sweep) == [T.CREATED]
    (stored,) = book.ledger.lookup_transfers([sweep.id])
    assert stored.amount == 25
    assert book.balances(bob) == (0, 0, 0, 25)
    # Resubmitting within the limit is the same transfer; below what moved is not.
    assert book.create(sweep) == [T.EXISTS]
    assert book.create(Transfer(**{**vars(sweep), "amount": 24})) == [T.EXISTS_WITH_DIFFERENT_AMOUNT]


def test_closing_debit_closes_the_account_until_voided(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    closing = book.transfer(alice, bob, 0, flags=TransferFlags.PENDING | TransferFlags.CLOSING_DEBIT)
    assert book.create(closing) == [T.CREATED]
    assert book.get(alice).flags & AccountFlags.CLOSED
    assert book.create(book.transfer(alice, bob, 1)) == [T.DEBIT_ACCOUNT_ALREADY_CLOSED]
    assert book.create(book.transfer(bob, alice, 1)) == [T.CREDIT_ACCOUNT_ALREADY_CLOSED]
    assert book.create(book.void(closing)) == [T.CREATED]
    assert not book.get(alice).flags & AccountFlags.CLOSED
    assert book.create(book.transfer(alice, bob, 1)) == [T.CREATED]


# --- Imported events ----------------------------------------------------------------


def test_batch_decides_by_its_first_event_whether_it_imports(book: Book) -> None:
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    imported = book.transfer(alice, bob, 1, flags=TransferFlags.IMPORTED, timestamp=1)
    assert book.create(book.transfer(alice, bob, 1), imported) == [T.CREATED, T.IMPORTED_EVENT_NOT_EXPECTED]
    normal = book.transfer(alice, bob, 1)
    # An imported timestamp older than the accounts is refused after the batch check.
    assert book.create(imported, normal)[1] == T.IMPORTED_EVENT_EXPECTED


def test_imported_events_keep_their_past_timestamps(book: Book) -> None:
    # Imported timestamps must lie between the newest event and now. Another
    # writer on a shared server can get in between: then try again.
    for _attempt in range(5):
        anchor = book.get(book.external()).timestamp  # the newest event, unless someone else writes
        first = Account(id=new_id(), ledger=book.number, code=1, flags=AccountFlags.IMPORTED, timestamp=anchor + 1)
        second = Account(id=new_id(), ledger=book.number, code=1, flags=AccountFlags.IMPORTED, timestamp=anchor + 2)
        moved = book.transfer(first, second, 7, flags=TransferFlags.IMPORTED, timestamp=anchor + 3)
        if book.ledger.create_accounts([first, second]) == [A.CREATED, A.CREATED] and book.create(moved) == [T.CREATED]:
            break
    else:
        pytest.fail("imported events kept answering IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS")

    assert book.get(first).timestamp == anchor + 1
    (stored,) = book.ledger.lookup_transfers([moved.id])
    assert stored.timestamp == anchor + 3
    assert book.balances(second) == (0, 0, 0, 7)

    late_account = Account(id=new_id(), ledger=book.number, code=1, flags=AccountFlags.IMPORTED, timestamp=anchor + 1)
    assert book.ledger.create_accounts([late_account]) == [A.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS]
    late = book.transfer(first, second, 1, flags=TransferFlags.IMPORTED, timestamp=anchor + 3)
    assert book.create(late) == [T.IMPORTED_EVENT_TIMESTAMP_MUST_NOT_REGRESS]
    newer_account = book.external()
    too_early = Transfer(
        **{**vars(book.transfer(newer_account, second, 1)), "flags": TransferFlags.IMPORTED, "timestamp": anchor + 4}
    )
    assert book.create(too_early) == [T.IMPORTED_EVENT_TIMESTAMP_MUST_POSTDATE_DEBIT_ACCOUNT]
    assert book.create(moved) == [T.EXISTS]


# --- Lookups --------------------------------------------------------------------------


def test_lookups_return_only_existing_in_the_order_asked(book: Book) -> None:
    alice, bob, carol = book.user(), book.user(), book.user()
    book.fund(alice, 100)
    first, second = book.transfer(alice, bob, 1), book.transfer(alice, carol, 2)
    assert book.create(first, second) == [T.CREATED, T.CREATED]
    ghost = new_id()

    accounts = book.ledger.lookup_accounts([carol.id, ghost, alice.id, bob.id])
    assert [a.id for a in accounts] == [carol.id, alice.id, bob.id]
    transfers = book.ledger.lookup_transfers([second.id, ghost, first.id])
    assert [t.id for t in transfers] == [second.id, first.id]
    assert book.ledger.lookup_accounts([]) == []
    assert book.ledger.lookup_transfers([ghost]) == []


def test_accounts_with_code_lists_one_ledger_and_code_oldest_first(book: Book) -> None:
    wanted = [book.new_account(code=5) for _ in range(3)]
    book.new_account(code=6)
    other_ledger = Account(id=new_id(), ledger=book.number + 1, code=5)
    assert book.ledger.create_accounts([other_ledger]) == [A.CREATED]
    book.fund(wanted[1], 40)

    listed = list(book.ledger.accounts_with_code(book.number, 5))
    assert [a.id for a in listed] == [a.id for a in wanted]
    assert listed[1].credits_posted == 40
    assert list(book.ledger.accounts_with_code(book.number, 9)) == []


def test_account_available() -> None:
    account = Account(id=1, ledger=1, code=1, debits_pending=20, debits_posted=30, credits_posted=100)
    assert account.available == 50


def test_ping(funding_ledger: FundingLedger) -> None:
    funding_ledger.ping()


# --- Size -------------------------------------------------------------------------------


def test_full_batches(book: Book) -> None:
    """max_batch_size events over more accounts than one SQL statement takes parameters for."""
    users = [Account(id=new_id(), ledger=book.number, code=1, flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)]
    users += [Account(id=new_id(), ledger=book.number, code=1) for _ in range(1499)]
    assert set(book.ledger.create_accounts(users)) == {A.CREATED}
    source = book.external()
    assert set(book.create(*(book.transfer(source, user, 100) for user in users))) == {T.CREATED}

    rng = random.Random(7)
    batch: list[Transfer] = []
    while len(batch) < book.ledger.max_batch_size:
        debit, credit = rng.sample(users, 2)
        pending = book.transfer(debit, credit, 2, flags=TransferFlags.PENDING)
        batch += [pending, book.post(pending, 1)]
    batch = batch[: book.ledger.max_batch_size]
    results = book.create(*batch)
    assert len(results) == book.ledger.max_batch_size
    assert set(results) == {T.CREATED}
    accounts = book.ledger.lookup_accounts([user.id for user in users])
    assert len(accounts) == len(users)
    assert sum(a.credits_posted - a.debits_posted for a in accounts) == 100 * len(users)
    posts = sum(1 for t in batch if t.flags & TransferFlags.POST_PENDING_TRANSFER)
    open_reservations = sum(1 for t in batch if t.flags & TransferFlags.PENDING) - posts
    assert sum(a.debits_pending for a in accounts) == 2 * open_reservations


# --- Concurrency ------------------------------------------------------------------------


def test_concurrent_writers_never_overspend(book: Book) -> None:
    """Several threads (own connections) spend one account and shuffle between two others."""
    from django.db import connection

    if connection.vendor == "sqlite" and connection.is_in_memory_db() and book.ledger.__module__.endswith(".sql"):
        # Shared-cache in-memory SQLite answers "table is locked" instead of waiting;
        # the file database the service runs on queues writers (IMMEDIATE + timeout).
        pytest.skip("concurrent writers need PostgreSQL or a file SQLite database")
    alice, bob, carol = book.user(), book.user(), book.user()
    book.fund(alice, 50)
    book.fund(bob, 1000)
    book.fund(carol, 1000)
    results: list[CreateTransferStatus] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        from django.db import connection

        rng = random.Random(seed)
        try:
            for _ in range(10):
                batch = [book.transfer(alice, rng.choice([bob, carol]), 1)]
                # Opposite directions in one batch: lock ordering must prevent deadlocks.
                batch += [book.transfer(bob, carol, 1), book.transfer(carol, bob, 1)]
                rng.shuffle(batch)
                outcome = book.ledger.create_transfers(batch)
                with lock:
                    results.extend(s for t, s in zip(batch, outcome, strict=True) if t.debit_account_id == alice.id)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results.count(T.CREATED) == 50
    assert results.count(T.EXCEEDS_CREDITS) == 30
    assert book.balances(alice) == (0, 50, 0, 50)
    bob_now, carol_now = book.get(bob), book.get(carol)
    assert bob_now.credits_posted - bob_now.debits_posted + carol_now.credits_posted - carol_now.debits_posted == 2050


# --- Where the SQL ledger documents a difference ------------------------------------


@pytest.fixture
def sql_book(book: Book) -> Book:
    from settlement.ledger.sql import SqlFundingLedger

    if not isinstance(book.ledger, SqlFundingLedger):
        pytest.skip("a limit of the SQL ledger only")
    return book


def test_sql_ledger_overflows_beyond_int64(sql_book: Book) -> None:
    from settlement.ledger.sql import INT64_MAX

    book = sql_book
    source, sink = book.external(), book.external()
    assert book.create(book.transfer(source, sink, INT64_MAX + 1)) == [T.OVERFLOWS_DEBITS_POSTED]
    pending = book.transfer(source, sink, INT64_MAX + 1, flags=TransferFlags.PENDING)
    assert book.create(pending) == [T.OVERFLOWS_DEBITS_PENDING]
    assert book.create(book.transfer(source, sink, INT64_MAX)) == [T.CREATED]
    assert book.create(book.transfer(sink, source, 1), book.transfer(source, sink, 1)) == [
        T.CREATED,
        T.OVERFLOWS_DEBITS_POSTED,
    ]
    assert book.balances(source) == (0, INT64_MAX, 0, 1)


def test_sql_ledger_expires_idle_reservations_on_request(sql_book: Book) -> None:
    book = sql_book
    alice, bob = book.user(), book.user()
    book.fund(alice, 100)
    pending = book.transfer(alice, bob, 30, flags=TransferFlags.PENDING, timeout=1)
    assert book.create(pending) == [T.CREATED]
    assert book.ledger.expire_pending_transfers() == 0
    time.sleep(1.1)
    assert book.ledger.expire_pending_transfers() >= 1
    assert book.balances(alice) == (0, 0, 0, 100)
    assert book.balances(bob) == (0, 0, 0, 0)
    assert book.create(book.void(pending)) == [T.PENDING_TRANSFER_EXPIRED]


@pytest.mark.parametrize(
    "transfer",
    [
        Transfer(id=1, debit_account_id=2, credit_account_id=3, amount=-1, ledger=1, code=1),
        Transfer(id=1 << 128, debit_account_id=2, credit_account_id=3, amount=1, ledger=1, code=1),
        Transfer(id=1, debit_account_id=2, credit_account_id=3, amount=1, ledger=1 << 32, code=1),
        Transfer(id=1, debit_account_id=2, credit_account_id=3, amount=1, ledger=1, code=1 << 16),
    ],
)
def test_sql_ledger_refuses_what_a_client_could_not_encode(sql_book: Book, transfer: Transfer) -> None:
    with pytest.raises(ValueError):
        sql_book.ledger.create_transfers([transfer])


def test_sql_ledger_refuses_oversized_batches(sql_book: Book) -> None:
    too_many = [Account(id=new_id(), ledger=1, code=1)] * (sql_book.ledger.max_batch_size + 1)
    with pytest.raises(ValueError):
        sql_book.ledger.create_accounts(too_many)


def test_sql_ledger_lists_accounts_across_pages(sql_book: Book) -> None:
    book = sql_book
    wanted = [book.new_account(code=5) for _ in range(5)]
    pages = book.ledger._accounts_with_code(book.number, 5, page_size=2)
    assert [a.id for a in pages] == [a.id for a in wanted]
