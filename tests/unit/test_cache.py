"""The database cache (transfer_site/cache.py): expired rows go as they expire, live ones stay."""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.core.cache import cache, caches
from django.db import connection
from django.utils import timezone

from transfer_site.cache import DatabaseCache

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        settings.CACHES["default"]["BACKEND"] != "transfer_site.cache.DatabaseCache",
        reason="the cache is not the database (CACHE_URL is set)",
    ),
]


def rows() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key FROM django_cache")
        return {key for (key,) in cursor.fetchall()}


def test_the_default_cache_is_this_backend():
    assert isinstance(caches["default"], DatabaseCache)


def test_a_write_removes_the_expired_rows_and_keeps_the_live_ones():
    cache.set("live", 1, timeout=60)
    past = connection.ops.adapt_datetimefield_value(timezone.now() - datetime.timedelta(seconds=5))
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO django_cache (cache_key, value, expires) VALUES (%s, %s, %s)",
            [(f":1:old{i}", "gAVLAS4=", past) for i in range(50)],
        )
    caches["default"]._next_purge = 0.0  # due now
    assert cache.add("new", 1, timeout=60)
    assert rows() == {cache.make_key("live"), cache.make_key("new")}
    assert cache.get("live") == 1


def test_purges_are_at_most_once_a_second_per_process():
    caches["default"]._next_purge = 0.0
    cache.set("a", 1, timeout=60)  # purges
    past = connection.ops.adapt_datetimefield_value(timezone.now() - datetime.timedelta(seconds=5))
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO django_cache (cache_key, value, expires) VALUES (%s, %s, %s)",
                       [":1:old", "gAVLAS4=", past])
    cache.set("b", 1, timeout=60)  # within the second: no purge
    assert ":1:old" in rows()
    assert cache.get("old") is None  # expired entries stay invisible meanwhile
    assert cache.add("old", 2, timeout=60) and cache.get("old") == 2


def expires_of(key: str) -> object:
    with connection.cursor() as cursor:
        cursor.execute("SELECT expires FROM django_cache WHERE cache_key = %s", [cache.make_key(key)])
        return cursor.fetchone()[0]


def test_incr_counts_and_keeps_the_entry_expiry():
    assert cache.add("counter", 1, timeout=2)
    expires = expires_of("counter")
    assert cache.incr("counter") == 2
    assert cache.incr("counter", 5) == 7
    assert cache.get("counter") == 7
    assert expires_of("counter") == expires  # not the default timeout (Django's incr would set 300 s)


def test_incr_of_a_missing_or_expired_entry_raises_value_error():
    with pytest.raises(ValueError):
        cache.incr("never-set")
    past = connection.ops.adapt_datetimefield_value(timezone.now() - datetime.timedelta(seconds=5))
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO django_cache (cache_key, value, expires) VALUES (%s, %s, %s)",
                       [cache.make_key("gone"), "gAVLAS4=", past])  # pickled 1, expired
    with pytest.raises(ValueError):
        cache.incr("gone")
