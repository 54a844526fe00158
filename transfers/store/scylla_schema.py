"""The CQL schema of the ScyllaDB transfer store: render, apply, test keyspaces.

`schema/internal_transfer.cql` is the one source of the schema. Applying it
(`python manage.py sync_scylla_schema`, or `apply_schema()`) is idempotent:
the keyspace statement is generated from SCYLLA_KEYSPACE and
SCYLLA_REPLICATION, and every table statement is CREATE TABLE IF NOT EXISTS,
qualified with that keyspace. An existing keyspace keeps its replication (the
command warns when it differs); changing it is an ALTER KEYSPACE and a repair,
done by an operator.

For test suites (the store contract suite):

    name = create_test_keyspace()        # "test_transfers_<random>", RF 1, all tables
    with override_settings(SCYLLA_KEYSPACE=name):
        store = ScyllaTransferStore()
    ...
    drop_keyspace(name)                  # only names starting with "test_"

or `with scylla_test_keyspace() as name: ...`, which does all three.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from transfers.store.scylla_connection import get_session, keyspace_name

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema" / "internal_transfer.cql"
TABLES = ("transfer", "transfer_client_id", "transfer_by_user", "transfer_in_flight", "transfer_event",
          "transfer_activity")
TEST_KEYSPACE_PREFIX = "test_"
DDL_TIMEOUT_SECONDS = 60.0

_DC_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}", re.ASCII)
_CREATE_KEYSPACE = re.compile(r"CREATE\s+KEYSPACE\b", re.IGNORECASE)
_USE = re.compile(r"USE\s+\w+$", re.IGNORECASE)
_CREATE_TABLE = re.compile(r"(CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+)(\w+)(\s*\()", re.IGNORECASE)


def parse_replication(spec: str | int | None = None) -> dict[str, str]:
    """NetworkTopologyStrategy options from SCYLLA_REPLICATION.

    "3" means three replicas in every datacenter; "dc1:3,dc2:3" names them.
    """
    if spec is None:
        spec = getattr(settings, "SCYLLA_REPLICATION", "1")
    text = str(spec).strip()
    replication = {"class": "NetworkTopologyStrategy"}
    if text.isascii() and text.isdigit():
        replication["replication_factor"] = str(_replication_factor(text, spec))
        return replication
    for part in text.split(","):
        datacenter, sep, factor = part.strip().partition(":")
        if not sep or not _DC_NAME.fullmatch(datacenter) or datacenter in replication:
            raise ImproperlyConfigured(
                f"SCYLLA_REPLICATION {spec!r}: give a replication factor (\"3\") or datacenters (\"dc1:3,dc2:3\")"
            )
        replication[datacenter] = str(_replication_factor(factor.strip(), spec))
    return replication


def _replication_factor(text: str, spec: object) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 15:
        raise ImproperlyConfigured(f"SCYLLA_REPLICATION {spec!r}: a replication factor is a number from 1 to 15")
    return int(text)


def _cql_map(options: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{key}': '{value}'" for key, value in options.items()) + "}"


def keyspace_statement(keyspace: str, replication: dict[str, str], *, tablets_clause: bool = True) -> str:
    statement = (
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace_name(keyspace)} "
        f"WITH replication = {_cql_map(replication)} AND durable_writes = true"
    )
    if tablets_clause:
        # Lightweight transactions need vnodes on ScyllaDB before LWT-on-tablets.
        statement += " AND tablets = {'enabled': false}"
    return statement


def table_statements(keyspace: str, schema_text: str | None = None) -> list[str]:
    """The file's CREATE TABLE statements, qualified with the keyspace."""
    keyspace = keyspace_name(keyspace)
    text = schema_text if schema_text is not None else SCHEMA_PATH.read_text(encoding="utf-8")
    tables = []
    for statement in _split_statements(text):
        if _CREATE_KEYSPACE.match(statement) or _USE.match(statement):
            continue  # replaced by keyspace_statement(); tables are qualified instead
        match = _CREATE_TABLE.match(statement)
        if match is None:
            raise ValueError(f"unsupported statement in {SCHEMA_PATH.name}: {statement[:60]!r}")
        tables.append(_CREATE_TABLE.sub(rf"\g<1>{keyspace}.\g<2>\g<3>", statement, count=1))
    return tables


def schema_statements(keyspace: str | None = None, replication: str | int | None = None) -> list[str]:
    """Every statement apply_schema() runs, keyspace first."""
    name = keyspace_name(keyspace)
    return [keyspace_statement(name, parse_replication(replication)), *table_statements(name)]


def _split_statements(text: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in text.splitlines()]
    statements = " ".join(" ".join(lines).split())  # one line, single spaces
    return [statement.strip() for statement in statements.split(";") if statement.strip()]


def apply_schema(session: Any = None, keyspace: str | None = None, replication: str | int | None = None) -> list[str]:
    """Create the keyspace (if missing) and every table (if missing). Returns the statements run."""
    session = session if session is not None else get_session()
    name = keyspace_name(keyspace)
    options = parse_replication(replication)
    create_keyspace = keyspace_statement(name, options)
    try:
        session.execute(create_keyspace, timeout=DDL_TIMEOUT_SECONDS)
    except Exception as error:
        if "tablets" not in str(error).lower():
            raise
        # A server without tablets (or that refuses the option): plain vnodes.
        create_keyspace = keyspace_statement(name, options, tablets_clause=False)
        session.execute(create_keyspace, timeout=DDL_TIMEOUT_SECONDS)
    executed = [create_keyspace]
    for statement in table_statements(name):
        session.execute(statement, timeout=DDL_TIMEOUT_SECONDS)
        executed.append(statement)
    return executed


def keyspace_warnings(session: Any, keyspace: str, replication: str | int | None = None) -> list[str]:
    """What an existing keyspace has that differs from what the settings ask for."""
    name = keyspace_name(keyspace)
    wanted = parse_replication(replication)
    warnings = []
    row = _first(session.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", [name]))
    if row is not None:
        current = dict(_get(row, "replication") or {})
        current["class"] = current.get("class", "").rsplit(".", 1)[-1]
        if not _same_replication(current, wanted):
            warnings.append(
                f"keyspace {name} has replication {current}, the settings ask for {wanted}; "
                "change it with ALTER KEYSPACE and a repair"
            )
    try:
        tablets = _first(
            session.execute("SELECT initial_tablets FROM system_schema.scylla_keyspaces WHERE keyspace_name = %s",
                            [name])
        )
    except Exception:  # not ScyllaDB, or a version without tablets
        tablets = None
    if tablets is not None and _get(tablets, "initial_tablets") is not None:
        warnings.append(
            f"keyspace {name} uses tablets: lightweight transactions need a ScyllaDB version that supports "
            "LWT on tablets; otherwise recreate it (tablets = {'enabled': false})"
        )
    return warnings


def _same_replication(current: dict[str, str], wanted: dict[str, str]) -> bool:
    if current.get("class") != wanted["class"]:
        return False
    factors = {key: value for key, value in current.items() if key != "class"}
    if "replication_factor" in wanted:
        # The server expands "replication_factor" into one entry per datacenter.
        return bool(factors) and all(value == wanted["replication_factor"] for value in factors.values())
    return factors == {key: value for key, value in wanted.items() if key != "class"}


def _first(result: Any) -> Any:
    return next(iter(result), None)


def _get(row: Any, key: str) -> Any:
    return row[key] if isinstance(row, dict) else getattr(row, key)


# --- Test keyspaces ------------------------------------------------------------


def create_test_keyspace(name: str | None = None, session: Any = None) -> str:
    """Create a keyspace with every table (replication factor 1); returns its name.

    The name must start with "test_" (default: "test_transfers_<random>").
    """
    name = keyspace_name(name or f"{TEST_KEYSPACE_PREFIX}transfers_{secrets.token_hex(4)}")
    if not name.startswith(TEST_KEYSPACE_PREFIX):
        raise ValueError(f"a test keyspace name starts with {TEST_KEYSPACE_PREFIX!r}: {name!r}")
    apply_schema(session, keyspace=name, replication=1)
    return name


def drop_keyspace(name: str, session: Any = None, *, allow_any_name: bool = False) -> None:
    """Drop a keyspace and everything in it; refuses names without "test_" unless allow_any_name."""
    name = keyspace_name(name)
    if not allow_any_name and not name.startswith(TEST_KEYSPACE_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a test keyspace (pass allow_any_name=True)")
    session = session if session is not None else get_session()
    session.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=DDL_TIMEOUT_SECONDS)


def truncate_tables(keyspace: str | None = None, session: Any = None) -> None:
    """Empty every table of the store's keyspace (tests only: refuses names without "test_")."""
    name = keyspace_name(keyspace)
    if not name.startswith(TEST_KEYSPACE_PREFIX):
        raise ValueError(f"refusing to truncate {name!r}: not a test keyspace")
    session = session if session is not None else get_session()
    for table in TABLES:
        session.execute(f"TRUNCATE {name}.{table}", timeout=DDL_TIMEOUT_SECONDS)


@contextlib.contextmanager
def scylla_test_keyspace(name: str | None = None) -> Iterator[str]:
    """A fresh test keyspace, set as SCYLLA_KEYSPACE while the block runs, dropped afterwards."""
    from django.test import override_settings

    name = create_test_keyspace(name)
    try:
        with override_settings(SCYLLA_KEYSPACE=name):
            yield name
    finally:
        drop_keyspace(name)
