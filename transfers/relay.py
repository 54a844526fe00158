"""The outbox relay: publishes each accepted transfer's first message, then marks it `pending`.

The API stores a transfer (`requesting`) and answers; the transfer store is
the outbox. This relay (`manage.py run_relay`, its own process) finds the
`requesting` transfers, oldest first, publishes their first messages in one
batch (funding -> spot: `TransferRequested` to `internal_transfer.requests`;
spot -> funding: `TransferOut` to `balance.operations`; key = user id), and
once the broker holds them all, moves them `requesting -> pending` with one
compare-and-set per transfer in one store call.

So a request never waits for Kafka, and a broker that is down slows nothing
but the relay: transfers wait `requesting` and go out when it is back.
Relays run in copies: the copies share the users between
them through a Kafka consumer group (transfer_site/shards.py), each
publishing only its own users' transfers, so one user's transfers are
published by one relay at a time, oldest first, and keep their order. A copy
that starts, stops or dies moves users between copies; shards change hands
only between batches.

Publishing is at least once: a relay that dies between the publish and the
compare-and-set sends a message twice when its successor publishes the
transfer again, which every consumer absorbs (ledger ids, UBSCore's `ref_id`,
compare-and-set). With every relay down, the re-drive task publishes what has
waited `STUCK_TRANSFER_SECONDS`.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import close_old_connections

from transfer_site import faults, topics
from transfer_site.bus import BusUnavailable, MessageBus, Outgoing, ShardClaim, StopFlag, get_message_bus
from transfer_site.shards import EVERY_USER, UserShards
from transfers.domain import Direction, EventKind, TransferRecord, TransferStatus
from transfers.store import get_transfer_store
from transfers.store.base import StatusChange, TransferStore
from transfers.timeline import recording

logger = logging.getLogger(__name__)

_NO_TIME_LIMIT_MS = 1 << 62
_FIRST_RETRY_SECONDS = 0.2
_LONGEST_RETRY_SECONDS = 5.0


class TransferRelay:
    """Publishes the store's `requesting` transfers a batch at a time."""

    def __init__(self, store: TransferStore | None = None, bus: MessageBus | None = None,
                 batch_size: int | None = None) -> None:
        self.store = store or get_transfer_store()
        self.bus = bus or get_message_bus()
        self.batch_size = batch_size or settings.RELAY_BATCH_SIZE
        # The transfers of the last batch that failed to publish, each given a
        # PUBLISH_FAILED timeline event once: while the broker stays down every
        # retry reads the same oldest batch, and one event per transfer is enough.
        self._reported_failed: set[int] = set()

    def relay_batch(self, users: UserShards = EVERY_USER) -> int:
        """Publish up to `batch_size` `requesting` transfers of `users` and mark them `pending`; how many.

        Raises BusUnavailable if the broker did not take them: they stay
        `requesting` and the next batch tries them again.
        """
        # Every one, whatever the clocks of the web hosts that stored them said; oldest first.
        records = self.store.list_not_moved_since(
            {TransferStatus.REQUESTING}, _NO_TIME_LIMIT_MS, self.batch_size, users=users)
        if not records:
            return 0
        with recording(self.store) as timeline:
            try:
                self.bus.publish_many([first_message(record) for record in records])
            except BusUnavailable as error:
                for record in records:
                    if record.request_id not in self._reported_failed:
                        timeline.add(record.request_id, EventKind.PUBLISH_FAILED, error=str(error)[:200])
                self._reported_failed = {record.request_id for record in records}
                raise
            self._reported_failed.clear()
            for record in records:
                if record.direction is Direction.FUNDING_TO_SPOT:
                    timeline.add(record.request_id, EventKind.PUBLISHED, message="TransferRequested")
                else:
                    timeline.add(record.request_id, EventKind.TRANSFER_OUT_SENT)
            faults.crash_point(faults.RELAY_AFTER_PUBLISH)  # test hook: the next relay publishes them again
            # A transfer the saga moved on meanwhile (its message was quicker than this) is left as it is.
            moved = self.store.compare_and_set_many(
                [StatusChange(record.request_id, (TransferStatus.REQUESTING,), TransferStatus.PENDING)
                 for record in records]
            )
            for request_id in moved:
                timeline.status_changed(request_id, TransferStatus.REQUESTING, TransferStatus.PENDING)
        logger.debug("relayed", extra={"transfers": len(records), "marked_pending": len(moved)})
        return len(records)

    def run(self, stop: StopFlag) -> None:
        """Relay until `stop`: at once while there is a backlog, every `RELAY_POLL_MS` while transfers come.

        Each poll that finds nothing doubles the pause, up to `RELAY_IDLE_POLL_MS`: an idle relay
        costs next to nothing, and the first transfer after a quiet spell waits at most that long.
        """
        poll_seconds = settings.RELAY_POLL_MS / 1000
        retry_seconds = _FIRST_RETRY_SECONDS
        self.bus.warm_up([topics.TRANSFER_REQUESTS, topics.BALANCE_OPERATIONS])  # what first_message publishes to
        claim = self.bus.claim_shards(topics.RELAY_GROUP)
        try:
            logger.info("relay started", extra={"poll_ms": settings.RELAY_POLL_MS, "batch_size": self.batch_size,
                                                "shards": sorted(claim.current().owned)})
            self._run(stop, claim, poll_seconds, retry_seconds)
        finally:
            claim.close()  # the other copies take this one's users over at once
        logger.info("relay stopped")

    def _run(self, stop: StopFlag, claim: ShardClaim, poll_seconds: float, retry_seconds: float) -> None:
        idle_seconds = max(poll_seconds, settings.RELAY_IDLE_POLL_MS / 1000)
        pause_seconds = poll_seconds
        while not stop.stopped:
            users = claim.current()
            if not users.owned:  # a rebalance in progress, or more copies than shards
                stop.sleep(poll_seconds)
                continue
            try:
                relayed = self.relay_batch(users)
            except Exception as error:
                if isinstance(error, BusUnavailable):
                    logger.warning("publish failed; the transfers stay requesting and are tried again",
                                   extra={"retry_in_s": retry_seconds, "error": str(error)[:200]})
                else:
                    logger.exception("relay batch failed; tried again", extra={"retry_in_s": retry_seconds})
                    close_old_connections()  # a broken database connection is opened anew
                stop.sleep(retry_seconds)
                retry_seconds = min(retry_seconds * 2, _LONGEST_RETRY_SECONDS)
                continue
            retry_seconds = _FIRST_RETRY_SECONDS
            if relayed == 0:
                stop.sleep(pause_seconds)
                pause_seconds = min(pause_seconds * 2, idle_seconds)
                continue
            pause_seconds = poll_seconds  # transfers come: the next empty poll is followed by a short pause
            if relayed < self.batch_size:
                stop.sleep(poll_seconds)


def first_message(record: TransferRecord) -> Outgoing:
    """The message that starts a transfer's settlement."""
    # Imported here: the saga module imports this app's store.
    from settlement.saga import balance_operation_for, transfer_requested_message

    if record.direction is Direction.FUNDING_TO_SPOT:
        return Outgoing(topics.TRANSFER_REQUESTS, record.user_id, transfer_requested_message(record))
    return Outgoing(topics.BALANCE_OPERATIONS, record.user_id, balance_operation_for(record))
