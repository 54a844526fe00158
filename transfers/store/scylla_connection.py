"""The ScyllaDB session of the transfer store, through django-cassandra-engine.

ScyllaDB is a secondary database beside the relational one: settings declare
it in DATABASES with ENGINE "django_cassandra_engine" (see docs/scylla.md), and
the store takes the driver session of that connection. Nothing here connects
at import time, and django-cassandra-engine registers the connection with
`lazy_connect`, so the first query is what connects; a process that never uses
the store never opens a connection.

When DATABASES has no django_cassandra_engine entry but SCYLLA_HOSTS is set,
the same django-cassandra-engine connection class is made from the SCYLLA_*
settings instead.

Sessions are not fork-safe: use the store only after a process has forked
(gunicorn workers, Celery prefork children), never in the parent before.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

ENGINE = "django_cassandra_engine"
# The DATABASES alias the settings use for ScyllaDB.
DATABASE_ALIAS = "scylla"
# The alias registered when DATABASES has no ScyllaDB entry.
FALLBACK_ALIAS = "scylla_transfer_store"

# Native-protocol consistency codes (cassandra.ConsistencyLevel), kept here so
# that resolving a setting needs no driver import.
CONSISTENCY_LEVELS = {
    "ANY": 0,
    "ONE": 1,
    "TWO": 2,
    "THREE": 3,
    "QUORUM": 4,
    "ALL": 5,
    "LOCAL_QUORUM": 6,
    "EACH_QUORUM": 7,
    "SERIAL": 8,
    "LOCAL_SERIAL": 9,
    "LOCAL_ONE": 10,
}
# Levels a store decision may use: weaker ones could read a stale record.
DECIDING_LEVELS = frozenset({"QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL"})
SERIAL_LEVELS = frozenset({"SERIAL", "LOCAL_SERIAL"})
DEFAULT_CONSISTENCY = "QUORUM"
DEFAULT_SERIAL_CONSISTENCY = "SERIAL"

_KEYSPACE_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}", re.ASCII)

_connections_lock = threading.Lock()
_connections: dict[str, Any] = {}  # alias -> django_cassandra_engine CassandraConnection
# One thread at a time through the driver's lazy connect (get_session).
_session_lock = threading.Lock()


def keyspace_name(name: str | None = None) -> str:
    """A valid, lower-case keyspace name (default: settings.SCYLLA_KEYSPACE)."""
    value = name if name is not None else getattr(settings, "SCYLLA_KEYSPACE", "internal_transfer")
    if not isinstance(value, str) or not _KEYSPACE_PATTERN.fullmatch(value):
        raise ImproperlyConfigured(
            f"SCYLLA_KEYSPACE {value!r} is not a keyspace name: a letter, then letters, digits or _ (48 at most)"
        )
    return value.lower()


def consistency_level(name: str | None = None) -> int:
    """The consistency of reads and plain writes (setting SCYLLA_CONSISTENCY)."""
    value = (name or getattr(settings, "SCYLLA_CONSISTENCY", "") or DEFAULT_CONSISTENCY).upper()
    if value not in DECIDING_LEVELS:
        raise ImproperlyConfigured(
            f"SCYLLA_CONSISTENCY must be one of {sorted(DECIDING_LEVELS)}, got {value!r}"
        )
    return CONSISTENCY_LEVELS[value]


def serial_consistency_level(name: str | None = None) -> int:
    """The serial consistency of lightweight transactions (setting SCYLLA_SERIAL_CONSISTENCY)."""
    value = (name or getattr(settings, "SCYLLA_SERIAL_CONSISTENCY", "") or DEFAULT_SERIAL_CONSISTENCY).upper()
    if value not in SERIAL_LEVELS:
        raise ImproperlyConfigured(
            f"SCYLLA_SERIAL_CONSISTENCY must be SERIAL or LOCAL_SERIAL, got {value!r}"
        )
    return CONSISTENCY_LEVELS[value]


def scylla_hosts() -> list[str]:
    hosts = getattr(settings, "SCYLLA_HOSTS", "") or ""
    return [host.strip() for host in hosts.split(",") if host.strip()]


def database_settings() -> dict[str, Any]:
    """A DATABASES entry for ScyllaDB built from the SCYLLA_* settings."""
    hosts = scylla_hosts()
    if not hosts:
        raise ImproperlyConfigured(
            "TRANSFER_STORE=scylla needs SCYLLA_HOSTS (comma-separated contact points), "
            "or a DATABASES entry with ENGINE 'django_cassandra_engine'"
        )
    return {
        "ENGINE": ENGINE,
        "NAME": keyspace_name(),
        "HOST": ",".join(hosts),
        "USER": getattr(settings, "SCYLLA_USER", ""),
        "PASSWORD": getattr(settings, "SCYLLA_PASSWORD", ""),
        "OPTIONS": {
            "connection": {
                "lazy_connect": True,
                "retry_connect": True,
                "port": int(getattr(settings, "SCYLLA_PORT", 9042)),
            },
        },
    }


def database_alias() -> str | None:
    """The DATABASES alias served by django-cassandra-engine, if any ("scylla" first)."""
    databases = settings.DATABASES
    if databases.get(DATABASE_ALIAS, {}).get("ENGINE") == ENGINE:
        return DATABASE_ALIAS
    for alias, entry in databases.items():
        if entry.get("ENGINE") == ENGINE:
            return alias
    return None


def get_session() -> Any:
    """The driver session (cassandra.cluster.Session); connects on first use.

    The connection is django-cassandra-engine's CassandraConnection, made
    from the DATABASES entry (or the SCYLLA_* settings) and registered under
    its alias, one per process. It is deliberately not taken through
    `django.db.connections[alias]`: Django's test cases forbid that wrapper
    in every test that does not declare the alias, and declaring it makes
    Django try to create a test database through django-cassandra-engine's
    own schema sync. Transfer-store tests use their own keyspaces instead
    (scylla_schema.create_test_keyspace).
    """
    alias = database_alias()
    # cqlengine's lazy connect marks the connection connected before its session exists, so a
    # second thread asking meanwhile got None: a fresh gunicorn worker's first concurrent
    # requests answered 500 (seen with two web copies). The store keeps the session once it has it.
    with _session_lock:
        session = _connection(alias or FALLBACK_ALIAS).session
    if session is None:
        raise ImproperlyConfigured(f"the ScyllaDB connection {alias or FALLBACK_ALIAS!r} has no session")
    return session


def database_entry(alias: str | None) -> dict[str, Any]:
    """A copy of the DATABASES entry (or one from SCYLLA_*), with the driver defaults added.

    A copy: django-cassandra-engine pops options (lazy_connect) from the dict
    it is given.
    """
    if alias is None or alias == FALLBACK_ALIAS:
        database = database_settings()
    else:
        entry = settings.DATABASES[alias]
        options = dict(entry.get("OPTIONS") or {})
        options["connection"] = dict(options.get("connection") or {})
        database = {"USER": "", "PASSWORD": "", **entry, "OPTIONS": options}
        if not database.get("HOST"):
            raise ImproperlyConfigured(f"DATABASES[{alias!r}] needs HOST: ScyllaDB contact points, comma-separated")
    add_connection_defaults(database)
    return database


def add_connection_defaults(database: dict[str, Any]) -> None:
    """Driver options the settings need not spell out: a token-aware, datacenter-aware policy.

    The local datacenter is SCYLLA_LOCAL_DC, or else the datacenter of the
    first contact point reached (list local nodes first in SCYLLA_HOSTS).
    """
    connection = database.setdefault("OPTIONS", {}).setdefault("connection", {})
    if "load_balancing_policy" not in connection and "execution_profiles" not in connection:
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        local_dc = getattr(settings, "SCYLLA_LOCAL_DC", "") or None
        connection["load_balancing_policy"] = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=local_dc))


def _connection(alias: str) -> Any:
    with _connections_lock:
        connection = _connections.get(alias)
        if connection is None:
            try:
                database = database_entry(alias)
                from django_cassandra_engine.connection import CassandraConnection
            except ModuleNotFoundError as error:
                raise ImproperlyConfigured(
                    f"TRANSFER_STORE=scylla needs django-cassandra-engine and scylla-driver ({error})"
                ) from error
            connection = _connections[alias] = CassandraConnection(alias, **database)
        return connection


def close_all() -> None:
    """Shut down this process's driver clusters (their event-loop threads), e.g. before exiting."""
    with _connections_lock:
        for connection in _connections.values():
            cluster = getattr(connection, "cluster", None)  # None: it never connected
            if cluster is not None:
                cluster.shutdown()
        _connections.clear()
