"""Snowflake ids: 64-bit, time-ordered, unique across processes."""

import itertools
import threading
import time

import pytest

from transfers import snowflake
from transfers.snowflake import (
    EPOCH_MS,
    MAX_WORKER_ID,
    SEQUENCE_BITS,
    WORKER_ID_BITS,
    SnowflakeGenerator,
    timestamp_ms_of,
)


def worker_id_of(snowflake_id: int) -> int:
    return (snowflake_id >> SEQUENCE_BITS) & MAX_WORKER_ID


def sequence_of(snowflake_id: int) -> int:
    return snowflake_id & ((1 << SEQUENCE_BITS) - 1)


def test_layout_constants():
    assert WORKER_ID_BITS == 10
    assert SEQUENCE_BITS == 12
    assert MAX_WORKER_ID == 1023


def test_ids_are_strictly_increasing_and_unique_across_100k():
    generator = SnowflakeGenerator(worker_id=7)
    ids = [generator.next_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(a < b for a, b in itertools.pairwise(ids))


def test_ids_are_positive_63_bit_integers():
    generator = SnowflakeGenerator(worker_id=MAX_WORKER_ID)
    for _ in range(1000):
        value = generator.next_id()
        assert 0 < value < 2**63  # fits a signed BIGINT, top bit zero


@pytest.mark.parametrize("worker_id", [0, 1, 5, 512, MAX_WORKER_ID])
def test_worker_id_is_embedded(worker_id):
    generator = SnowflakeGenerator(worker_id)
    assert generator.worker_id == worker_id
    for _ in range(5000):  # crosses several sequence values, likely a millisecond boundary
        assert worker_id_of(generator.next_id()) == worker_id


def test_timestamp_ms_of_returns_the_issue_time():
    generator = SnowflakeGenerator(3)
    before = time.time_ns() // 1_000_000
    value = generator.next_id()
    after = time.time_ns() // 1_000_000
    assert before <= timestamp_ms_of(value) <= after
    assert timestamp_ms_of(value) > EPOCH_MS


def test_timestamp_ms_of_a_hand_built_id():
    hand_built = (12_345 << (WORKER_ID_BITS + SEQUENCE_BITS)) | (9 << SEQUENCE_BITS) | 17
    assert timestamp_ms_of(hand_built) == EPOCH_MS + 12_345
    assert worker_id_of(hand_built) == 9
    assert sequence_of(hand_built) == 17


def test_sequence_restarts_each_millisecond_and_rolls_over_by_waiting(monkeypatch):
    clock = {"ms": EPOCH_MS + 1_000}
    calls = {"n": 0}

    def fake_now_ms():
        calls["n"] += 1
        return clock["ms"]

    monkeypatch.setattr(snowflake, "_now_ms", fake_now_ms)
    generator = SnowflakeGenerator(2)
    ids = [generator.next_id() for _ in range(1 << SEQUENCE_BITS)]
    assert [sequence_of(i) for i in ids] == list(range(1 << SEQUENCE_BITS))
    assert {timestamp_ms_of(i) for i in ids} == {EPOCH_MS + 1_000}

    # The sequence is exhausted: the generator must wait for the next millisecond.
    def advancing_now_ms():
        calls["n"] += 1
        if calls["n"] > 3:
            clock["ms"] = EPOCH_MS + 1_001
        return clock["ms"]

    calls["n"] = 0
    monkeypatch.setattr(snowflake, "_now_ms", advancing_now_ms)
    following = generator.next_id()
    assert following > ids[-1]
    assert timestamp_ms_of(following) == EPOCH_MS + 1_001
    assert sequence_of(following) == 0


def test_clock_stepping_back_never_repeats_or_regresses(monkeypatch):
    clock = {"ms": EPOCH_MS + 50_000}
    monkeypatch.setattr(snowflake, "_now_ms", lambda: clock["ms"])
    generator = SnowflakeGenerator(4)
    first = [generator.next_id() for _ in range(10)]
    clock["ms"] -= 10_000  # NTP step back
    after_step = [generator.next_id() for _ in range(10)]
    ids = first + after_step
    assert len(set(ids)) == len(ids)
    assert all(a < b for a, b in itertools.pairwise(ids))


def test_two_generators_with_different_worker_ids_never_collide(monkeypatch):
    # Same clock reading for both: only the worker id keeps them apart.
    monkeypatch.setattr(snowflake, "_now_ms", lambda: EPOCH_MS + 77)
    a = SnowflakeGenerator(1)
    b = SnowflakeGenerator(2)
    ids_a = {a.next_id() for _ in range(1 << SEQUENCE_BITS)}
    ids_b = {b.next_id() for _ in range(1 << SEQUENCE_BITS)}
    assert len(ids_a) == len(ids_b) == 1 << SEQUENCE_BITS
    assert ids_a.isdisjoint(ids_b)


def test_two_generators_on_the_real_clock_never_collide():
    a = SnowflakeGenerator(10)
    b = SnowflakeGenerator(11)
    ids_a = [a.next_id() for _ in range(20_000)]
    ids_b = [b.next_id() for _ in range(20_000)]
    assert set(ids_a).isdisjoint(ids_b)


def test_one_generator_shared_by_threads_issues_unique_ids():
    generator = SnowflakeGenerator(8)
    results: list[list[int]] = [[] for _ in range(8)]

    def work(slot):
        results[slot].extend(generator.next_id() for _ in range(5_000))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [value for chunk in results for value in chunk]
    assert len(everything) == 40_000
    assert len(set(everything)) == 40_000
    for chunk in results:  # each thread sees its own ids increase
        assert all(a < b for a, b in itertools.pairwise(chunk))


@pytest.mark.parametrize("worker_id", [-1, MAX_WORKER_ID + 1, 4096, 10**9])
def test_invalid_worker_id_is_refused(worker_id):
    with pytest.raises(ValueError, match=r"worker id must be within 0\.\.1023"):
        SnowflakeGenerator(worker_id)


def test_module_next_id_uses_the_configured_worker_id(settings, monkeypatch):
    monkeypatch.setattr(snowflake, "_generator", None)
    settings.SNOWFLAKE_WORKER_ID = 321
    first = snowflake.next_id()
    second = snowflake.next_id()
    assert worker_id_of(first) == worker_id_of(second) == 321
    assert second > first
