"""Upkeep of the filesystem Celery broker (the default, `filesystem://`).

Task events reach Flower over the broker: Flower binds a queue
`celeryev.<uuid>` to the `celeryev` exchange, and with the filesystem
transport that binding is a line in `<control_folder>/celeryev.exchange`,
shared by every process. When Flower stops (Ctrl-C, a crash, a restart) the
line stays, so every worker and web process keeps writing each task event and
worker heartbeat into a queue nobody reads: thousands of files a day in the
queue folder, which every worker lists on every poll. Remote-control queues
(`*.pidbox`, replies) of processes that died are left behind the same way.

`prune_dead_queues` removes such a queue: when its oldest message has waited
longer than `max_age_seconds` (a live reader takes messages within
milliseconds), its bindings are taken out of the exchange files and its
message files deleted. Only event and remote-control queues are touched,
never the task queues. Beat runs it (operations.prune_dead_broker_queues).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# Exchanges whose queues belong to event receivers and remote control, never to tasks.
PRUNABLE_EXCHANGES = ("celeryev", "celery.pidbox", "reply.celery.pidbox")


def _queue_of(filename: str) -> str | None:
    # kombu names message files "<ms>_<uuid>.<queue>.msg"
    head, dot, rest = filename.partition(".")
    if not dot or not rest.endswith(".msg") or "_" not in head:
        return None
    return rest[: -len(".msg")]


def prune_dead_queues(data_folder: str | Path, control_folder: str | Path, max_age_seconds: float,
                      now: float | None = None) -> dict[str, int]:
    """Drop event/remote-control queues whose oldest message is older than max_age_seconds.

    Returns {queue: message files deleted} for the queues dropped.
    """
    from kombu.transport.filesystem import LOCK_EX, LOCK_SH, lock, unlock
    from kombu.utils.json import dumps, loads

    data_folder, control_folder = Path(data_folder), Path(control_folder)
    now = time.time() if now is None else now
    bound: set[str] = set()
    for exchange in PRUNABLE_EXCHANGES:
        path = control_folder / f"{exchange}.exchange"
        if path.exists():
            with path.open("rb") as handle:
                lock(handle, LOCK_SH)
                try:
                    bound |= {entry[2] for entry in loads(handle.read().decode() or "[]")}
                finally:
                    unlock(handle)
    oldest: dict[str, float] = {}
    files: dict[str, list[Path]] = {}
    for entry in os.scandir(data_folder) if data_folder.exists() else ():
        queue = _queue_of(entry.name)
        if queue is None or queue not in bound:
            continue
        try:
            modified = entry.stat().st_mtime
        except FileNotFoundError:  # taken by its reader meanwhile
            continue
        oldest[queue] = min(modified, oldest.get(queue, modified))
        files.setdefault(queue, []).append(Path(entry.path))
    dead = {queue for queue, modified in oldest.items() if now - modified > max_age_seconds}
    if not dead:
        return {}
    for exchange in PRUNABLE_EXCHANGES:
        path = control_folder / f"{exchange}.exchange"
        if not path.exists():
            continue
        with path.open("rb+", buffering=0) as handle:
            lock(handle, LOCK_EX)  # the lock kombu takes to bind and unbind
            try:
                table = loads(handle.read().decode() or "[]")
                kept = [entry for entry in table if entry[2] not in dead]
                if len(kept) != len(table):
                    handle.seek(0)
                    handle.write(dumps(kept).encode())
                    handle.truncate()
            finally:
                unlock(handle)
    removed: dict[str, int] = {}
    for queue in sorted(dead):
        count = 0
        for path in files[queue]:
            try:
                path.unlink()
                count += 1
            except FileNotFoundError:
                pass
        removed[queue] = count
        logger.warning("removed a Celery queue nobody reads any more", extra={"queue": queue, "messages": count})
    return removed
