"""Where the database cache's table lives when the database is SQLite.

SQLite takes one write lock per database file. The API's rate-limit counters
and replay records (the database cache) are written on every call, so in the
file that holds the transfers they queue behind -- and ahead of -- the
transfer writes, and SQLite's busy handler makes a waiting writer sleep for
whole milliseconds. In a file of their own (`CACHE_DATABASE`, settings "API
security") they only ever wait for each other. Nothing else goes there; the
cache's table goes nowhere else.
"""

from __future__ import annotations

CACHE_DATABASE = "cache"
_CACHE_APP_LABEL = "django_cache"  # the label Django's database cache gives its table


class CacheDatabaseRouter:
    def db_for_read(self, model, **hints) -> str | None:
        return CACHE_DATABASE if model._meta.app_label == _CACHE_APP_LABEL else None

    def db_for_write(self, model, **hints) -> str | None:
        return CACHE_DATABASE if model._meta.app_label == _CACHE_APP_LABEL else None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints) -> bool:
        return (app_label == _CACHE_APP_LABEL) == (db == CACHE_DATABASE)
