"""The transfer as the rest of the service sees it, whatever store keeps it."""

from __future__ import annotations

import dataclasses
import enum


class AccountType(enum.StrEnum):
    FUNDING = "funding"
    SPOT = "spot"


class Direction(enum.StrEnum):
    FUNDING_TO_SPOT = "funding_to_spot"
    SPOT_TO_FUNDING = "spot_to_funding"

    @classmethod
    def between(cls, source: AccountType, destination: AccountType) -> Direction:
        if (source, destination) == (AccountType.FUNDING, AccountType.SPOT):
            return cls.FUNDING_TO_SPOT
        if (source, destination) == (AccountType.SPOT, AccountType.FUNDING):
            return cls.SPOT_TO_FUNDING
        raise ValueError(f"no transfer direction from {source} to {destination}")

    @property
    def source(self) -> AccountType:
        return AccountType.FUNDING if self is Direction.FUNDING_TO_SPOT else AccountType.SPOT

    @property
    def destination(self) -> AccountType:
        return AccountType.SPOT if self is Direction.FUNDING_TO_SPOT else AccountType.FUNDING


class TransferStatus(enum.StrEnum):
    REQUESTING = "requesting"
    PENDING = "pending"
    SUCCESS = "success"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (TransferStatus.SUCCESS, TransferStatus.FAILED)


# Statuses a transfer may move on from; terminal ones never change.
IN_FLIGHT = frozenset({TransferStatus.REQUESTING, TransferStatus.PENDING})
TERMINAL = frozenset({TransferStatus.SUCCESS, TransferStatus.FAILED})


class PublicStatus(enum.StrEnum):
    """A transfer's status as users see it (the API, webhooks): `requesting` is the outbox's business.

    Stored and not yet published (`requesting`) or published and settling
    (`pending`), the user's transfer is the same thing: accepted, not finished.
    """

    PENDING = "pending"
    SUCCESS = "success"
    FAILED = "failed"

    @classmethod
    def of(cls, status: TransferStatus) -> PublicStatus:
        return cls.PENDING if status in IN_FLIGHT else cls(status.value)

    @property
    def stored_statuses(self) -> frozenset[TransferStatus]:
        """The stored statuses shown as this one: what a history filter on it must match."""
        return IN_FLIGHT if self is PublicStatus.PENDING else frozenset({TransferStatus(self.value)})


@dataclasses.dataclass(frozen=True)
class TransferRecord:
    request_id: int
    user_id: int
    asset_id: int
    asset_code: str
    direction: Direction
    amount: int  # minor units of the asset
    status: TransferStatus
    client_transfer_id: str | None
    error_message: str | None
    created_at_ms: int
    updated_at_ms: int

    @property
    def from_account(self) -> AccountType:
        return self.direction.source

    @property
    def to_account(self) -> AccountType:
        return self.direction.destination


class EventKind(enum.StrEnum):
    """What a timeline event says happened to a transfer."""

    ACCEPTED = "accepted"  # stored as `requesting`
    PUBLISHED = "published"  # its first message is on Kafka (detail: message)
    PUBLISH_FAILED = "publish_failed"  # the relay tries again
    STATUS_CHANGED = "status_changed"  # detail: from, to, error
    LEDGER_RESERVED = "ledger_reserved"  # detail: ledger_status
    LEDGER_RESERVE_REFUSED = "ledger_reserve_refused"  # detail: ledger_status
    TRANSFER_IN_SENT = "transfer_in_sent"
    TRANSFER_OUT_SENT = "transfer_out_sent"
    UBSCORE_ANSWER = "ubscore_answer"  # detail: status (applied | rejected), reason
    LEDGER_POSTED = "ledger_posted"  # detail: ledger_status
    LEDGER_VOIDED = "ledger_voided"  # detail: ledger_status
    FUNDING_CREDITED = "funding_credited"  # detail: ledger_status
    LEDGER_STEP_FAILED = "ledger_step_failed"  # detail: step, ledger_status; retried
    REDRIVE = "redrive"  # detail: status, age_ms; actor says who


@dataclasses.dataclass(frozen=True)
class TimelineEvent:
    """One entry of a transfer's append-only timeline (TransferStore.append_events)."""

    request_id: int
    kind: EventKind
    at_ms: int
    detail: dict[str, str] = dataclasses.field(default_factory=dict)
    actor: str = ""  # empty: the service itself; "admin:<username>" for staff
    process: str = ""  # PROCESS_NAME of the process that recorded it
