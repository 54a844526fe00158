"""The SQLite cache file holds the database cache's table and nothing else (transfer_site/routers.py)."""

from django.core.cache.backends.db import BaseDatabaseCache

from transfer_site.routers import CacheDatabaseRouter
from transfers.models import Transfer


def test_the_cache_table_is_read_and_written_in_the_cache_database():
    cache_entry = BaseDatabaseCache("django_cache", {}).cache_model_class
    router = CacheDatabaseRouter()
    assert router.db_for_read(cache_entry) == router.db_for_write(cache_entry) == "cache"
    assert router.db_for_read(Transfer) is None and router.db_for_write(Transfer) is None  # default


def test_only_the_cache_table_is_created_there():
    router = CacheDatabaseRouter()
    assert router.allow_migrate("cache", "django_cache")
    assert not router.allow_migrate("default", "django_cache")
    assert not router.allow_migrate("cache", "transfers", "transfer")
    assert router.allow_migrate("default", "transfers", "transfer")
