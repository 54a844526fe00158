"""The API's cache backends: Django's database cache and Redis cache, each made cheaper per request.

Every API call writes a rate-limit counter (and a replay record when signed)
through the default cache, so these run once or twice per request.

## Database cache (the embedded default)

Django's database cache, with expired rows removed as they expire instead of piling up.

The embedded default keeps replay records and rate-limit counters in the
`django_cache` table (settings "API security"). Django's backend runs
`SELECT COUNT(*)` over that table on every write to decide whether to cull,
and removes expired rows only once it holds MAX_ENTRIES (100,000) rows. The
rate limiter writes a new row per API key and window (one a second), so under
steady traffic the table fills with expired counters and every request pays a
count over tens of thousands of rows: the benchmark's soak measured a write
going from 0.08 ms on an empty table to 0.65 ms at 60,000 rows (two writes per
request). Here each process deletes the expired rows at most once a second,
before a write; the table then holds about the live entries only.

Nothing a caller can see changes: an expired entry was already invisible to
get() and add(), and Django's cull deletes the expired rows first too.

`incr` is one transaction that keeps the entry's expiry. Django's is a get
and a set: the set counts the table, and gives the entry the default timeout
(300 s), so a rate-limit counter made for a 1-second window stayed for five
minutes and the table held hundreds of rows per API key.

## Redis cache (`CACHE_URL`)

Django's Redis client builds a new redis-py client object (its
response-callback tables and all) for every call, about a tenth of the web
process's CPU per request on the production-like stack; here each connection
pool gets one client, which redis-py shares across threads. Django's `incr`
is EXISTS then INCR: two round trips, and a counter that expires between them
comes back without an expiry. Here it is one script, atomic on the server.
"""

from __future__ import annotations

import base64
import pickle
import threading
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.db import DatabaseCache as DjangoDatabaseCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient as DjangoRedisCacheClient
from django.db import DatabaseError, connections, router, transaction
from django.utils.timezone import now as tz_now

PURGE_INTERVAL_SECONDS = 1.0


class DatabaseCache(DjangoDatabaseCache):
    def __init__(self, table: str, params: dict) -> None:
        super().__init__(table, params)
        self._next_purge = 0.0
        self._purge_lock = threading.Lock()

    def _base_set(self, mode, key, value, timeout=DEFAULT_TIMEOUT):
        self._purge_expired_if_due()
        return super()._base_set(mode, key, value, timeout)

    def incr(self, key, delta=1, version=None):
        key = self.make_and_validate_key(key, version=version)
        db = router.db_for_write(self.cache_model_class)
        connection = connections[db]
        quote = connection.ops.quote_name
        table, value_column, key_column = quote(self._table), quote("value"), quote("cache_key")
        # Alive as get() sees it: expires >= now (stored without microseconds).
        now = connection.ops.adapt_datetimefield_value(tz_now())
        with transaction.atomic(using=db), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {value_column} FROM {table} WHERE {key_column} = %s AND {quote('expires')} >= %s",  # noqa: S608
                [key, now],
            )
            row = cursor.fetchone()
            if row is None:
                raise ValueError(f"Key '{key}' not found")
            value = pickle.loads(base64.b64decode(connection.ops.process_clob(row[0]).encode())) + delta  # noqa: S301 - our own rows
            encoded = base64.b64encode(pickle.dumps(value, self.pickle_protocol)).decode("latin1")
            cursor.execute(f"UPDATE {table} SET {value_column} = %s WHERE {key_column} = %s", [encoded, key])  # noqa: S608
        return value

    def _purge_expired_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_purge or not self._purge_lock.acquire(blocking=False):
            return
        try:
            if now < self._next_purge:
                return
            self._next_purge = now + PURGE_INTERVAL_SECONDS
            db = router.db_for_write(self.cache_model_class)
            connection = connections[db]
            quote = connection.ops.quote_name
            with transaction.atomic(using=db), connection.cursor() as cursor:  # a savepoint inside a transaction
                cursor.execute(
                    f"DELETE FROM {quote(self._table)} WHERE {quote('expires')} < %s",  # noqa: S608
                    [connection.ops.adapt_datetimefield_value(tz_now().replace(microsecond=0))],
                )
        except DatabaseError:  # a busy database: the next write tries again a second later
            pass
        finally:
            self._purge_lock.release()


# INCRBY only an entry that exists, so it keeps its expiry; nil for a missing (or expired) one.
_INCR_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return false
"""


class RedisCacheClient(DjangoRedisCacheClient):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, tuple[object, object]] = {}  # id(pool) -> (redis-py client, incr script)
        self._clients_lock = threading.Lock()

    def get_client(self, key=None, *, write=False):
        return self._client_and_incr(write)[0]

    def incr(self, key, delta):
        value = self._client_and_incr(True)[1](keys=[key], args=[delta])
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return value

    def _client_and_incr(self, write: bool) -> tuple:
        pool = self._get_connection_pool(write)
        entry = self._clients.get(id(pool))
        if entry is None:
            with self._clients_lock:
                client = self._client(connection_pool=pool)
                entry = self._clients.setdefault(id(pool), (client, client.register_script(_INCR_IF_EXISTS)))
        return entry


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = RedisCacheClient
