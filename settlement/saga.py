"""The saga that drives each transfer from `pending` to `success` or `failed`.

Every step is idempotent and can be re-run from persisted state: ledger
transfer ids and UBSCore ref_ids are derived from the request id, UBSCore
answers a repeated ref_id with its first answer, and every status change is a
compare-and-set that never leaves a terminal status. The steps take batches
(one ledger call per batch) and return the request ids that must be retried.

Funding -> Spot:  reserve (pending ledger transfer user funding -> spot pool)
                  -> TransferIn to UBSCore -> post (applied) | void (rejected)
Spot -> Funding:  TransferOut to UBSCore (published by the outbox relay)
                  -> ledger transfer spot pool -> user funding (applied)
                  | failed (rejected)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence

from settlement.ledger import get_funding_ledger
from settlement.ledger.base import (
    ACCOUNT_IN_LEDGER,
    TRANSFER_IN_LEDGER,
    Account,
    CreateTransferStatus,
    FundingLedger,
    Transfer,
    TransferFlags,
)
from settlement.ledger.ids import (
    TransferStep,
    spot_pool_account,
    spot_pool_account_id,
    transfer_id,
    user_funding_account,
    user_funding_account_id,
)
from transfer_site import faults, topics
from transfer_site.bus import MessageBus, Outgoing, get_message_bus
from transfer_site.logging import log_context
from transfer_site.messages import (
    BalanceEvent,
    BalanceOperation,
    BalanceOperationStatus,
    BalanceOperationType,
    TransferRequested,
)
from transfers.domain import IN_FLIGHT, Direction, EventKind, TransferRecord, TransferStatus
from transfers.store import TransferStore, get_transfer_store
from transfers.store.base import StatusChange
from transfers.timeline import TimelineRecorder
from webhooks import services as webhook_events

logger = logging.getLogger(__name__)

INSUFFICIENT_BALANCE = "insufficient balance"


class LedgerSetupFailed(Exception):
    """The ledger refused to create an account the saga needs."""


@dataclasses.dataclass(frozen=True)
class Ports:
    """The external systems the saga talks to, whichever adapters serve them."""

    store: TransferStore
    ledger: FundingLedger
    bus: MessageBus


def default_ports() -> Ports:
    return Ports(store=get_transfer_store(), ledger=get_funding_ledger(), bus=get_message_bus())


# --- The ledger transfers of each step, derived from the record alone ------


def reserve_transfer(record: TransferRecord) -> Transfer:
    return Transfer(
        id=transfer_id(TransferStep.FUNDING_TO_SPOT_RESERVE, record.request_id),
        debit_account_id=user_funding_account_id(record.user_id, record.asset_id),
        credit_account_id=spot_pool_account_id(record.asset_id),
        amount=record.amount,
        ledger=record.asset_id,
        code=TransferStep.FUNDING_TO_SPOT_RESERVE,
        flags=TransferFlags.PENDING,
        user_data_64=record.request_id,
    )


def post_reserve_transfer(record: TransferRecord) -> Transfer:
    return _close_reserve(record, TransferStep.FUNDING_TO_SPOT_POST, TransferFlags.POST_PENDING_TRANSFER)


def void_reserve_transfer(record: TransferRecord) -> Transfer:
    return _close_reserve(record, TransferStep.FUNDING_TO_SPOT_VOID, TransferFlags.VOID_PENDING_TRANSFER)


def _close_reserve(record: TransferRecord, step: TransferStep, flags: TransferFlags) -> Transfer:
    return Transfer(
        id=transfer_id(step, record.request_id),
        debit_account_id=user_funding_account_id(record.user_id, record.asset_id),
        credit_account_id=spot_pool_account_id(record.asset_id),
        amount=record.amount,
        ledger=record.asset_id,
        code=TransferStep.FUNDING_TO_SPOT_RESERVE,  # the ledger requires the reserve's code
        flags=flags,
        pending_id=transfer_id(TransferStep.FUNDING_TO_SPOT_RESERVE, record.request_id),
        user_data_64=record.request_id,
    )


def spot_to_funding_credit_transfer(record: TransferRecord) -> Transfer:
    return Transfer(
        id=transfer_id(TransferStep.SPOT_TO_FUNDING_CREDIT, record.request_id),
        debit_account_id=spot_pool_account_id(record.asset_id),
        credit_account_id=user_funding_account_id(record.user_id, record.asset_id),
        amount=record.amount,
        ledger=record.asset_id,
        code=TransferStep.SPOT_TO_FUNDING_CREDIT,
        user_data_64=record.request_id,
    )


def transfer_requested_message(record: TransferRecord) -> TransferRequested:
    return TransferRequested(
        request_id=record.request_id,
        user_id=record.user_id,
        asset_id=record.asset_id,
        amount=record.amount,
        direction=record.direction.value,
    )


def balance_operation_for(record: TransferRecord) -> BalanceOperation:
    """What UBSCore is asked to do for this transfer (ref_id = request id)."""
    operation = (
        BalanceOperationType.TRANSFER_IN
        if record.direction is Direction.FUNDING_TO_SPOT
        else BalanceOperationType.TRANSFER_OUT
    )
    return BalanceOperation(
        ref_id=record.request_id,
        operation=operation.value,
        user_id=record.user_id,
        asset_id=record.asset_id,
        amount=record.amount,
    )


# --- Steps -------------------------------------------------------------------


def reserve_funding(
    request_ids: Sequence[int], ports: Ports | None = None, timeline: TimelineRecorder | None = None
) -> None:
    """Funding -> Spot, steps 2-3: reserve the funds, then ask UBSCore to credit spot."""
    ports = ports or default_ports()
    with _recording(ports, timeline) as timeline:
        _reserve_funding(request_ids, ports, timeline)


def _reserve_funding(request_ids: Sequence[int], ports: Ports, timeline: TimelineRecorder) -> None:
    records = [
        record
        for record in _in_flight(ports.store, request_ids)
        if _expect_direction(record, Direction.FUNDING_TO_SPOT)
    ]
    if not records:
        return
    ensure_accounts(
        ports.ledger,
        [user_funding_account(r.user_id, r.asset_id) for r in records]
        + [spot_pool_account(r.asset_id) for r in records],
    )
    statuses = create_transfers_in_batches(ports.ledger, [reserve_transfer(r) for r in records])
    reserved = []
    refused: list[tuple[TransferRecord, TransferStatus, str | None]] = []
    for record, status in zip(records, statuses, strict=True):
        with log_context(request_id=record.request_id, user_id=record.user_id):
            if status in TRANSFER_IN_LEDGER:
                logger.info("funds reserved in the funding ledger", extra={"ledger_status": status.name})
                timeline.add(record.request_id, EventKind.LEDGER_RESERVED, ledger_status=status.name)
                reserved.append(record)
            elif status in (CreateTransferStatus.EXCEEDS_CREDITS, CreateTransferStatus.ID_ALREADY_FAILED):
                # ID_ALREADY_FAILED: an earlier attempt with this id failed
                # transiently, which for a reserve from a debit-limited
                # account whose accounts exist means it exceeded credits.
                timeline.add(record.request_id, EventKind.LEDGER_RESERVE_REFUSED, ledger_status=status.name)
                refused.append((record, TransferStatus.FAILED, INSUFFICIENT_BALANCE))
            else:
                logger.error("funding ledger rejected the reserve", extra={"ledger_status": status.name})
                timeline.add(record.request_id, EventKind.LEDGER_RESERVE_REFUSED, ledger_status=status.name)
                refused.append((record, TransferStatus.FAILED, f"funding ledger rejected: {status.name.lower()}"))
    _finish_many(ports.store, refused, timeline)
    if reserved:
        faults.crash_point(faults.RESERVE_AFTER_LEDGER)  # test hook: the re-drive re-sends TransferIn
    ports.bus.publish_many(
        [Outgoing(topics.BALANCE_OPERATIONS, r.user_id, balance_operation_for(r)) for r in reserved]
    )
    for record in reserved:
        timeline.add(record.request_id, EventKind.TRANSFER_IN_SENT)
    # One store call for the batch. Only a record read as `requesting` can
    # still be: no status ever moves back to it.
    marked = ports.store.compare_and_set_many(
        [
            StatusChange(record.request_id, (TransferStatus.REQUESTING,), TransferStatus.PENDING)
            for record in reserved
            if record.status is TransferStatus.REQUESTING
        ]
    )
    for record in reserved:
        if marked.get(record.request_id) is TransferStatus.REQUESTING:
            timeline.status_changed(record.request_id, TransferStatus.REQUESTING, TransferStatus.PENDING)


def settle_balance_events(events: Sequence[BalanceEvent], ports: Ports | None = None) -> list[int]:
    """Both directions, last step: act on UBSCore's answers.

    Returns the request ids whose ledger step must be retried.
    """
    ports = ports or default_ports()
    with _recording(ports) as timeline:
        return _settle_balance_events(events, ports, timeline)


def _settle_balance_events(
    events: Sequence[BalanceEvent], ports: Ports, timeline: TimelineRecorder
) -> list[int]:
    transfer_events: dict[int, BalanceEvent] = {}
    for event in events:
        if event.operation not in (BalanceOperationType.TRANSFER_IN, BalanceOperationType.TRANSFER_OUT):
            continue
        if event.ref_id in transfer_events:
            with log_context(request_id=event.ref_id, user_id=event.user_id):
                logger.info("repeated balance event in one batch; handled once")
            continue
        transfer_events[event.ref_id] = event
    records = ports.store.get_many(transfer_events)
    to_post: list[TransferRecord] = []
    to_void: list[TransferRecord] = []
    to_credit: list[TransferRecord] = []
    finishes: list[tuple[TransferRecord, TransferStatus, str | None]] = []
    for ref_id, event in transfer_events.items():
        record = records.get(ref_id)
        with log_context(request_id=ref_id, user_id=event.user_id):
            if record is None:
                logger.error("balance event for an unknown transfer")
                continue
            if not _event_matches(record, event):
                logger.error("balance event does not match its transfer; not acted on", extra={"event": event})
                timeline.add(ref_id, EventKind.UBSCORE_ANSWER, status=event.status, reason=event.reason,
                             note="does not match the transfer; not acted on")
                continue
            if record.status.is_terminal:
                logger.info("balance event for a finished transfer; nothing to do")
                timeline.add(ref_id, EventKind.UBSCORE_ANSWER, status=event.status, reason=event.reason,
                             note="transfer already finished")
                continue
            timeline.add(ref_id, EventKind.UBSCORE_ANSWER, status=event.status, reason=event.reason)
            applied = event.status == BalanceOperationStatus.APPLIED
            if record.direction is Direction.FUNDING_TO_SPOT:
                (to_post if applied else to_void).append(record)
            elif applied:
                to_credit.append(record)
            else:
                finishes.append((record, TransferStatus.FAILED, event.reason or "rejected by spot"))
    _finish_many(ports.store, finishes, timeline)

    if to_post or to_void or to_credit:
        faults.crash_point(faults.SETTLE_BEFORE_LEDGER)  # test hook: UBSCore's stored answer comes again
    retry: list[int] = []
    finishes = []
    for record, status in _run_ledger_step(ports.ledger, to_post, post_reserve_transfer):
        with log_context(request_id=record.request_id, user_id=record.user_id):
            if status in TRANSFER_IN_LEDGER or status == CreateTransferStatus.PENDING_TRANSFER_ALREADY_POSTED:
                timeline.add(record.request_id, EventKind.LEDGER_POSTED, ledger_status=status.name)
                finishes.append((record, TransferStatus.SUCCESS, None))
            else:
                # Spot was credited, so the reserve must be posted; anything
                # else is a broken invariant for a human to look at.
                logger.critical("could not post the reserve after spot was credited",
                                extra={"ledger_status": status.name})
                timeline.add(record.request_id, EventKind.LEDGER_STEP_FAILED, step="post", ledger_status=status.name)
                retry.append(record.request_id)
    _finish_many(ports.store, finishes, timeline)
    finishes = []
    for record, status in _run_ledger_step(ports.ledger, to_void, void_reserve_transfer):
        with log_context(request_id=record.request_id, user_id=record.user_id):
            if status in TRANSFER_IN_LEDGER or status == CreateTransferStatus.PENDING_TRANSFER_ALREADY_VOIDED:
                reason = transfer_events[record.request_id].reason or "rejected by spot"
                timeline.add(record.request_id, EventKind.LEDGER_VOIDED, ledger_status=status.name)
                finishes.append((record, TransferStatus.FAILED, reason))
            else:
                logger.critical("could not void the reserve after spot rejected it",
                                extra={"ledger_status": status.name})
                timeline.add(record.request_id, EventKind.LEDGER_STEP_FAILED, step="void", ledger_status=status.name)
                retry.append(record.request_id)
    _finish_many(ports.store, finishes, timeline)
    finishes = []
    if to_credit:
        ensure_accounts(ports.ledger, [user_funding_account(r.user_id, r.asset_id) for r in to_credit])
    for record, status in _run_ledger_step(ports.ledger, to_credit, spot_to_funding_credit_transfer):
        with log_context(request_id=record.request_id, user_id=record.user_id):
            if status in TRANSFER_IN_LEDGER:
                timeline.add(record.request_id, EventKind.FUNDING_CREDITED, ledger_status=status.name)
                finishes.append((record, TransferStatus.SUCCESS, None))
            else:
                # Spot was debited: the funding credit must happen. Retried
                # with the same id until it does; stuck here is an alarm.
                logger.critical("funding credit refused after spot was debited; will retry",
                                extra={"ledger_status": status.name})
                timeline.add(record.request_id, EventKind.LEDGER_STEP_FAILED, step="credit",
                             ledger_status=status.name)
                retry.append(record.request_id)
    _finish_many(ports.store, finishes, timeline)
    return retry


def redrive_stuck_transfers(not_moved_for_ms: int, limit: int = 500, ports: Ports | None = None) -> int:
    """Drive on transfers that have not changed status for a while.

    Everything is redone from persisted state through the same idempotent
    steps: a funding -> spot transfer is reserved again (a no-op if it was)
    and its TransferIn re-sent; a spot -> funding transfer has its
    TransferOut re-sent (and a `requesting` one is then marked `pending`, as
    the relay would have). UBSCore answers a repeated ref_id with its first
    answer, and that answer finishes the transfer.

    Each transfer is claimed before it is driven: a compare-and-set to its own
    status, which moves `updated_at`. So a transfer is driven on at most once
    per `not_moved_for_ms` however often this runs (no re-drive storm while
    the pipeline is merely slow, or when several re-drives overlap), and one
    that stays stuck -- an alarm -- goes to the back of the oldest-first
    queue instead of holding one of the `limit` places for ever (no
    starvation). A step that fails is logged and tried again a period later;
    a funding -> spot batch that fails is retried one transfer at a time, so
    one bad transfer cannot hold back the others. Returns how many transfers
    were driven on.
    """
    ports = ports or default_ports()
    stuck = ports.store.list_not_moved_since(IN_FLIGHT, _now_ms() - not_moved_for_ms, limit)
    if not stuck:
        return 0
    return redrive_transfers([record.request_id for record in stuck], ports)


def redrive_transfers(request_ids: Sequence[int], ports: Ports | None = None, *, actor: str = "") -> int:
    """Drive these transfers on from persisted state: the recovery task's path, also the admin's.

    Finished and unknown transfers are left alone. `actor` names who asked
    (empty: the recovery task; "admin:<username>" from the admin) and goes
    into each transfer's timeline. Returns how many transfers were driven on.
    """
    ports = ports or default_ports()
    timeline = TimelineRecorder(ports.store, actor)
    try:
        return _redrive(_in_flight(ports.store, list(dict.fromkeys(request_ids))), ports, timeline)
    finally:
        timeline.flush()


def _redrive(records: Sequence[TransferRecord], ports: Ports, timeline: TimelineRecorder) -> int:
    now_ms = _now_ms()
    claimed: list[TransferRecord] = []
    for record in records:
        with log_context(request_id=record.request_id, user_id=record.user_id):
            if not ports.store.compare_and_set_status(record.request_id, {record.status}, record.status, now_ms=now_ms):
                logger.info("stuck transfer moved on meanwhile; left to its own course")
                continue
            logger.warning("transfer stuck; driving it on", extra={"status": record.status.value,
                                                                  "age_ms": now_ms - record.updated_at_ms,
                                                                  "actor": timeline.actor or "recovery task"})
            timeline.add(record.request_id, EventKind.REDRIVE, status=record.status.value,
                         age_ms=now_ms - record.updated_at_ms)
            claimed.append(record)
    errors: list[Exception] = []
    funding_to_spot = [r.request_id for r in claimed if r.direction is Direction.FUNDING_TO_SPOT]
    spot_to_funding = [r for r in claimed if r.direction is Direction.SPOT_TO_FUNDING]
    if funding_to_spot:
        try:
            reserve_funding(funding_to_spot, ports, timeline)
        except Exception:
            logger.exception("re-drive of a funding -> spot batch failed; driving them one at a time")
            for request_id in funding_to_spot:
                try:
                    reserve_funding([request_id], ports, timeline)
                except Exception as error:
                    with log_context(request_id=request_id):
                        logger.exception("re-drive of a funding -> spot transfer failed; tried again later")
                    errors.append(error)
    if spot_to_funding:
        try:
            _resend_transfer_out(spot_to_funding, ports, timeline)
        except Exception as error:
            logger.exception("re-drive of spot -> funding transfers failed; tried again later")
            errors.append(error)
    if errors:
        raise errors[0]  # after everything else was driven on: the task shows as failed
    return len(claimed)


def _resend_transfer_out(records: Sequence[TransferRecord], ports: Ports, timeline: TimelineRecorder) -> None:
    ports.bus.publish_many([Outgoing(topics.BALANCE_OPERATIONS, r.user_id, balance_operation_for(r)) for r in records])
    for record in records:
        timeline.add(record.request_id, EventKind.TRANSFER_OUT_SENT)
        if record.status is TransferStatus.REQUESTING:
            # Published now: `pending`, as the relay marks it after its own publish.
            if ports.store.compare_and_set_status(
                record.request_id, {TransferStatus.REQUESTING}, TransferStatus.PENDING
            ):
                timeline.status_changed(record.request_id, TransferStatus.REQUESTING, TransferStatus.PENDING)


# --- Helpers -----------------------------------------------------------------


def ensure_accounts(ledger: FundingLedger, accounts: Iterable[Account]) -> None:
    """Create the accounts if missing (idempotent: EXISTS is success).

    Almost every account a batch names exists already: they are looked up
    first (a read, which takes no write lock on the SQL ledger) and only the
    missing ones, or any whose fields differ (so create_accounts answers with
    its exact EXISTS_WITH_DIFFERENT_* code), are created.
    """
    unique = list({account.id: account for account in accounts}.values())
    found: dict[int, Account] = {}
    for start in range(0, len(unique), ledger.max_batch_size):
        chunk = [account.id for account in unique[start : start + ledger.max_batch_size]]
        found.update((account.id, account) for account in ledger.lookup_accounts(chunk))
    unique = [account for account in unique if not _same_account(account, found.get(account.id))]
    for start in range(0, len(unique), ledger.max_batch_size):
        chunk = unique[start : start + ledger.max_batch_size]
        for account, status in zip(chunk, ledger.create_accounts(chunk), strict=True):
            if status not in ACCOUNT_IN_LEDGER:
                raise LedgerSetupFailed(f"ledger refused account {account.id:#x}: {status.name}")


def _same_account(wanted: Account, existing: Account | None) -> bool:
    """What create_accounts would answer EXISTS for: the same fields (balances and timestamp aside)."""
    return existing is not None and (
        existing.ledger, existing.code, int(existing.flags), existing.user_data_128, existing.user_data_64,
        existing.user_data_32,
    ) == (wanted.ledger, wanted.code, int(wanted.flags), wanted.user_data_128, wanted.user_data_64,
          wanted.user_data_32)


def create_transfers_in_batches(ledger: FundingLedger, transfers: Sequence[Transfer]) -> list[CreateTransferStatus]:
    statuses: list[CreateTransferStatus] = []
    for start in range(0, len(transfers), ledger.max_batch_size):
        statuses.extend(ledger.create_transfers(transfers[start : start + ledger.max_batch_size]))
    return statuses


def _run_ledger_step(
    ledger: FundingLedger, records: Sequence[TransferRecord], make_transfer: Callable[[TransferRecord], Transfer]
) -> list[tuple[TransferRecord, CreateTransferStatus]]:
    """Create one ledger transfer per record, in batches; pair each with its status."""
    if not records:
        return []
    statuses = create_transfers_in_batches(ledger, [make_transfer(record) for record in records])
    faults.crash_point(faults.SETTLE_AFTER_LEDGER)  # test hook: a repeat answers EXISTS, then the status moves
    return list(zip(records, statuses, strict=True))


def _in_flight(store: TransferStore, request_ids: Sequence[int]) -> list[TransferRecord]:
    records = store.get_many(request_ids)
    in_flight = []
    for request_id in request_ids:
        record = records.get(request_id)
        if record is None:
            logger.error("no transfer record for request", extra={"request_id": str(request_id)})
        elif record.status in IN_FLIGHT:
            in_flight.append(record)
        else:
            with log_context(request_id=request_id, user_id=record.user_id):
                logger.info("request for a finished transfer; nothing to do")
    return in_flight


def _expect_direction(record: TransferRecord, direction: Direction) -> bool:
    if record.direction is not direction:
        logger.error("request for the wrong step", extra={"request_id": str(record.request_id)})
        return False
    return True


def _event_matches(record: TransferRecord, event: BalanceEvent) -> bool:
    expected = balance_operation_for(record)
    return (expected.operation, expected.user_id, expected.asset_id, expected.amount) == (
        event.operation,
        event.user_id,
        event.asset_id,
        event.amount,
    )


def _finish(
    store: TransferStore,
    record: TransferRecord,
    status: TransferStatus,
    error: str | None = None,
    timeline: TimelineRecorder | None = None,
) -> None:
    _finish_many(store, [(record, status, error)], timeline)


def _finish_many(
    store: TransferStore,
    finishes: Sequence[tuple[TransferRecord, TransferStatus, str | None]],
    timeline: TimelineRecorder | None = None,
) -> None:
    """Move each record to its terminal status from any in-flight one: one store call for the batch.

    Each is still a compare-and-set of its own record. The status as read is
    tried first, and the store says which status each one moved from, so the
    timeline records the exact from -> to even when the record moved on
    (requesting -> pending) between the read and the change.
    """
    if not finishes:
        return
    finished_at_ms = _now_ms()
    finished = [dataclasses.replace(record, status=status, error_message=error, updated_at_ms=finished_at_ms)
                for record, status, error in finishes]
    # The users' webhook events, written before the change so that a crash after it loses none
    # (webhooks.services); raises before anything changed if the database does not answer.
    with_events = webhook_events.record_finishing(finished)
    moved = store.compare_and_set_many(
        [
            StatusChange(record.request_id, _read_status_first(record, IN_FLIGHT), status, error)
            for record, status, error in finishes
        ],
        now_ms=finished_at_ms,
    )
    if moved and with_events:
        faults.crash_point(faults.FINISH_BEFORE_WEBHOOK_CONFIRM)  # test hook: the sweep confirms the events
    _confirm_webhook_events(
        [record for record in finished
         if record.request_id in with_events and moved.get(record.request_id) is not None]
    )
    done: set[int] = set()
    for record, status, error in finishes:
        with log_context(request_id=record.request_id, user_id=record.user_id):
            moved_from = moved.get(record.request_id)
            if moved_from is not None and record.request_id not in done:
                done.add(record.request_id)
                logger.info("transfer %s", status.value, extra={"error_message": error})
                if timeline is not None:
                    timeline.status_changed(record.request_id, moved_from, status, error)
            else:
                logger.info("transfer already finished; status left as it was")


def _confirm_webhook_events(records: Sequence[TransferRecord]) -> None:
    try:
        webhook_events.confirm_finished(records)
    except Exception:  # the statuses are stored: the webhooks sweep confirms the events from them
        logger.exception("webhook events not confirmed; the sweep will", extra={"count": len(records)})


def _read_status_first(record: TransferRecord, expected: Collection[TransferStatus]) -> tuple[TransferStatus, ...]:
    return tuple(sorted(expected, key=lambda candidate: (candidate != record.status, candidate.value)))


@contextlib.contextmanager
def _recording(ports: Ports, timeline: TimelineRecorder | None = None) -> Iterator[TimelineRecorder]:
    """The batch's timeline recorder: appended once when the batch ends (or the caller's, if given)."""
    if timeline is not None:
        yield timeline
        return
    recorder = TimelineRecorder(ports.store)
    try:
        yield recorder
    finally:
        recorder.flush()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
