"""Django's `createcachetable`, on every database its table is routed to.

On SQLite the database cache lives in a file of its own (`cache`,
transfer_site/routers.py), so the usual `manage.py createcachetable`, which
only looks at `default`, would skip it. Without `--database` this runs the
stock command for each configured relational database; the router decides where the
table goes, as it does for Django's own runs.
"""

from __future__ import annotations

from django.core.management.commands.createcachetable import Command as DjangoCreateCacheTable
from django.db import DEFAULT_DB_ALIAS, connections


class Command(DjangoCreateCacheTable):
    help = "Creates the database cache's table in each database it is routed to (default: every database)."

    def handle(self, *tablenames: str, **options) -> None:
        if options["database"] != DEFAULT_DB_ALIAS:  # an explicit --database: just that one
            super().handle(*tablenames, **options)
            return
        for alias in connections:
            if connections.settings[alias]["ENGINE"] == "django_cassandra_engine":
                continue  # ScyllaDB keeps transfer records only; it has no cache table
            super().handle(*tablenames, **{**options, "database": alias})
