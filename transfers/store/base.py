"""The transfer-store port: what settlement and the API need from a store."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Collection, Iterable, Sequence

from transfer_site.shards import EVERY_USER, UserShards
from transfers.domain import Direction, TimelineEvent, TransferRecord, TransferStatus


class ClientTransferIdTaken(Exception):
    """The user already has a transfer under this client_transfer_id."""

    def __init__(self, existing: TransferRecord) -> None:
        super().__init__(f"client_transfer_id taken by {existing.request_id}")
        self.existing = existing


class InvalidCursor(ValueError):
    """The history cursor was not issued by this store."""


@dataclasses.dataclass(frozen=True)
class TransferPage:
    items: list[TransferRecord]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True)
class StatusChange:
    """One compare-and-set of `compare_and_set_many`: move to `new_status` if the status is one of `expected`.

    `expected` is in the order to try them (the status as last read first).
    """

    request_id: int
    expected: tuple[TransferStatus, ...]
    new_status: TransferStatus
    error_message: str | None = None


@dataclasses.dataclass(frozen=True)
class FinishedDurations:
    """Time from request to terminal status of the transfers finished in a window, bucketed."""

    bucket_counts: list[int]  # cumulative: transfers that took at most each bound
    count: int
    sum_ms: int


ACCEPTED = "accepted"  # Activity's kind for a transfer stored, beside the terminal statuses


@dataclasses.dataclass(frozen=True)
class Activity:
    """What happened to transfers since a time, per minute: for the operations overview.

    `per_minute` counts transfers accepted in each minute (by creation time)
    and transfers that finished in it (by the time of their final status):
    {(minute start in ms, "accepted" | "success" | "failed"): count}.
    `failure_reasons` counts the error messages of those that failed.
    """

    per_minute: dict[tuple[int, str], int]
    failure_reasons: dict[str, int]


@dataclasses.dataclass(frozen=True)
class InFlightCounts:
    """Transfers not finished, and those of them whose status has not moved since a time, by status.

    `complete` is False when the count stopped at its limit (the numbers are then "at least").
    """

    in_flight: dict[TransferStatus, int]
    stuck: dict[TransferStatus, int]
    complete: bool = True


class TransferStore(abc.ABC):
    """Keeps transfer records and their timelines. Every status change is a compare-and-set."""

    @abc.abstractmethod
    def create(self, record: TransferRecord, events: Sequence[TimelineEvent] = ()) -> None:
        """Store a new record and its first timeline events; raise ClientTransferIdTaken if its client id is in use.

        The events go with the record in one write where the store can (the
        ORM store: one transaction); nothing is stored if the client id is taken.
        """

    @abc.abstractmethod
    def get(self, request_id: int) -> TransferRecord | None: ...

    @abc.abstractmethod
    def get_many(self, request_ids: Iterable[int]) -> dict[int, TransferRecord]: ...

    @abc.abstractmethod
    def get_by_client_transfer_id(self, user_id: int, client_transfer_id: str) -> TransferRecord | None: ...

    @abc.abstractmethod
    def compare_and_set_status(
        self,
        request_id: int,
        expected: Collection[TransferStatus],
        new_status: TransferStatus,
        error_message: str | None = None,
        now_ms: int | None = None,
    ) -> bool:
        """Move the record to `new_status` only if its status is in `expected`.

        Returns whether this call made the change.
        """

    def compare_and_set_many(
        self, changes: Sequence[StatusChange], now_ms: int | None = None
    ) -> dict[int, TransferStatus]:
        """Make each change as `compare_and_set_status` would, in order; {request_id: status it first moved from}.

        A batch's status changes in one call: stores that can do them in one
        round trip (the ORM store: one transaction) override this. Every change
        is still a compare-and-set on its own record, and a terminal status is
        never left. This default makes one compare-and-set per expected status.
        """
        moved: dict[int, TransferStatus] = {}
        for change in changes:
            for status in change.expected:
                if self.compare_and_set_status(
                    change.request_id, {status}, change.new_status, change.error_message, now_ms
                ):
                    moved.setdefault(change.request_id, status)
                    break
        return moved

    @abc.abstractmethod
    def list_for_user(
        self,
        user_id: int,
        *,
        asset_id: int | None = None,
        statuses: Collection[TransferStatus] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TransferPage:
        """The user's transfers, newest first, a page at a time.

        `statuses`: only transfers in one of these (None: any; empty: none), e.g.
        {requesting, pending} for what the API calls `pending`.
        """

    @abc.abstractmethod
    def list_not_moved_since(
        self, statuses: Collection[TransferStatus], updated_before_ms: int, limit: int,
        users: UserShards = EVERY_USER,
    ) -> list[TransferRecord]:
        """In-flight transfers of `users` whose status has not changed since the given time, oldest first."""

    # --- The timeline: an append-only log of events per transfer ------------

    @abc.abstractmethod
    def append_events(self, events: Sequence[TimelineEvent]) -> None:
        """Append events (any transfers, one call per batch). Never updates or deletes one."""

    @abc.abstractmethod
    def timeline(self, request_id: int, limit: int = 1000) -> list[TimelineEvent]:
        """The transfer's events, oldest first (appends of one process keep their order)."""

    # --- Counts for /metrics (stores that cannot count cheaply leave them out) --

    def count_by_status(self) -> dict[tuple[Direction, int, TransferStatus], int]:
        """How many transfers there are per (direction, asset id, status)."""
        raise NotImplementedError(f"{type(self).__name__} cannot count transfers")

    def finished_durations(
        self, finished_since_ms: int, bounds_ms: Sequence[int]
    ) -> dict[tuple[Direction, TransferStatus], FinishedDurations]:
        """Request-to-terminal times of transfers that finished since the given time."""
        raise NotImplementedError(f"{type(self).__name__} cannot list finished transfers by time")

    # --- The operations overview: reads bounded by time, never by how much is stored --

    @abc.abstractmethod
    def activity_since(self, since_ms: int) -> Activity:
        """Per-minute counts of accepted and finished transfers since `since_ms` (at most a few hours back)."""

    @abc.abstractmethod
    def count_in_flight(self, stuck_before_ms: int, limit: int) -> InFlightCounts:
        """In-flight transfers by status, and those not moved since `stuck_before_ms`; counts up to `limit`."""

    # --- Errors -------------------------------------------------------------------

    def is_unavailable(self, error: BaseException) -> bool:
        """Whether `error` means the store's servers could not be reached or did not answer in time
        (the API then answers 503, retry shortly) rather than a bug."""
        return False
