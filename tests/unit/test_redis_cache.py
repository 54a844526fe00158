"""The Redis cache (transfer_site/cache.py), on a real Redis: one client per pool, a one-round-trip incr."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from transfer_site.cache import RedisCache


def redis_url() -> str | None:
    for name in ("CACHE_URL", "CELERY_BROKER_URL"):
        url = os.environ.get(name, "")
        if url.startswith("redis://"):
            return url
    return None


pytestmark = pytest.mark.skipif(redis_url() is None, reason="no Redis: CACHE_URL / CELERY_BROKER_URL is not redis://")


@pytest.fixture
def cache():
    # Keys of this test alone, so a shared Redis keeps nothing of other users.
    backend = RedisCache(redis_url(), {"KEY_PREFIX": f"test-cache-{uuid.uuid4().hex[:8]}"})
    yield backend
    client = backend._cache.get_client()
    for key in client.scan_iter(match=f"{backend.key_prefix}:*"):
        client.delete(key)


def test_one_client_serves_every_call():
    backend = RedisCache(redis_url(), {})
    assert backend._cache.get_client() is backend._cache.get_client(write=True)


def test_incr_counts_and_keeps_the_entry_expiry(cache):
    assert cache.add("counter", 1, timeout=2)
    assert cache.incr("counter") == 2
    assert cache.incr("counter", 5) == 7
    assert cache.get("counter") == 7
    client = cache._cache.get_client()
    ttl = client.pttl(cache.make_key("counter"))
    assert 0 < ttl <= 2000  # still the counter's own window, not gone and not forever


def test_incr_of_a_missing_or_expired_entry_raises_value_error(cache):
    with pytest.raises(ValueError):
        cache.incr("never-set")
    assert cache.add("short", 1, timeout=1)
    time.sleep(1.1)
    with pytest.raises(ValueError):
        cache.incr("short")
    assert cache.get("short") is None  # not created by the failed incr


def test_concurrent_incrs_are_all_counted(cache):
    assert cache.add("shared", 0, timeout=30)

    def count():
        for _ in range(50):
            cache.incr("shared")

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get("shared") == 200
