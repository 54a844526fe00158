"""Snowflake ids: 64-bit, time-ordered, unique across processes.

Layout (high to low): 1 bit zero, 41 bits milliseconds since EPOCH_MS,
10 bits worker id (one per running process, from configuration), 12 bits
sequence within the millisecond.
"""

import threading
import time

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
WORKER_ID_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER_ID = (1 << WORKER_ID_BITS) - 1
_SEQUENCE_MASK = (1 << SEQUENCE_BITS) - 1


class SnowflakeGenerator:
    def __init__(self, worker_id: int) -> None:
        if not 0 <= worker_id <= MAX_WORKER_ID:
            raise ValueError(f"worker id must be within 0..{MAX_WORKER_ID}, got {worker_id}")
        self.worker_id = worker_id
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def next_id(self) -> int:
        with self._lock:
            now_ms = _now_ms()
            if now_ms < self._last_ms:
                # The clock stepped back: keep issuing from the last instant
                # rather than risk repeating an id.
                now_ms = self._last_ms
            if now_ms == self._last_ms:
                self._sequence = (self._sequence + 1) & _SEQUENCE_MASK
                if self._sequence == 0:
                    while now_ms <= self._last_ms:
                        now_ms = _now_ms()
            else:
                self._sequence = 0
            self._last_ms = now_ms
            return ((now_ms - EPOCH_MS) << (WORKER_ID_BITS + SEQUENCE_BITS)) | (
                self.worker_id << SEQUENCE_BITS
            ) | self._sequence


def timestamp_ms_of(snowflake_id: int) -> int:
    return (snowflake_id >> (WORKER_ID_BITS + SEQUENCE_BITS)) + EPOCH_MS


def first_id_at(ms: int) -> int:
    """The smallest id made at or after `ms`: ids from then on are >= it (a primary-key range)."""
    return max(0, ms - EPOCH_MS) << (WORKER_ID_BITS + SEQUENCE_BITS)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_generator: SnowflakeGenerator | None = None
_generator_lock = threading.Lock()


def next_id() -> int:
    """The next id of this process, with the configured worker id."""
    global _generator
    if _generator is None:
        from django.conf import settings

        with _generator_lock:
            if _generator is None:
                _generator = SnowflakeGenerator(settings.SNOWFLAKE_WORKER_ID)
    return _generator.next_id()
