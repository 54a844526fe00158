"""Crash points: a test hook that kills the process at a named place.

`crash_point("name")` does nothing unless this process was started with the
environment variable CRASH_AT equal to that name. Then it logs one line
("crash point reached", CRITICAL) and ends the process at once with
`os._exit(CRASH_EXIT_CODE)`: no exception handlers, no `finally`, no atexit,
no Kafka offset commit, no Celery acknowledgement -- as close to SIGKILL or a
power cut as a process can do to itself, at exactly that line.

Test hook only: the end-to-end crash tests (tests/e2e/test_crash_points.py)
start one process with CRASH_AT set, see it die there, restart it without
CRASH_AT and check that the transfer still ends exactly once. Never set
CRASH_AT in a deployment. The variable is read once, when this module is
imported; without it a crash point costs one comparison.

The names, where they are, and why each place is safe:
docs/architecture.md, "Failure and recovery".
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

CRASH_EXIT_CODE = 86

# Every crash point in the code, for the tests and the docs to name.
WEB_AFTER_STORE = "web.after_store"  # record stored (requesting), no answer sent
RELAY_AFTER_PUBLISH = "relay.after_publish"  # first messages published, transfers not marked pending
RESERVE_AFTER_LEDGER = "reserve.after_ledger"  # reserve in the ledger, TransferIn not published
UBSCORE_AFTER_APPLY = "ubscore.after_apply"  # spot balance changed and committed, event not published
SETTLE_BEFORE_LEDGER = "settle.before_ledger"  # balance event taken by the worker, no ledger post/void/credit
SETTLE_AFTER_LEDGER = "settle.after_ledger"  # ledger post/void/credit done, status not updated
CONSUMER_BEFORE_COMMIT = "consumer.before_commit"  # Kafka batch handled, offsets not committed
FINISH_BEFORE_WEBHOOK_CONFIRM = "finish.before_webhook_confirm"  # terminal status stored, its webhook event held
ALL = (
    WEB_AFTER_STORE,
    RELAY_AFTER_PUBLISH,
    RESERVE_AFTER_LEDGER,
    UBSCORE_AFTER_APPLY,
    SETTLE_BEFORE_LEDGER,
    SETTLE_AFTER_LEDGER,
    CONSUMER_BEFORE_COMMIT,
    FINISH_BEFORE_WEBHOOK_CONFIRM,
)

CRASH_AT: str | None = os.environ.get("CRASH_AT") or None


def crash_point(name: str) -> None:
    """End this process here, at once, if CRASH_AT names this point (tests only)."""
    if CRASH_AT is not None and name == CRASH_AT:
        _crash(name)


def _crash(name: str) -> None:
    logger.critical("crash point reached; exiting without cleanup", extra={"crash_point": name})
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: S110 - dying anyway; the line is best effort
            pass
    os._exit(CRASH_EXIT_CODE)
