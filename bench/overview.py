"""How fast the operations overview reads with millions of transfers stored.

    python -m bench.overview --transfers 2000000 --per-second 100     # ORM on SQLite, a private file
    DATABASE_URL=postgres://... python -m bench.overview ...          # ORM on PostgreSQL, a private database
    SCYLLA_HOSTS=127.0.0.1 python -m bench.overview --store scylla    # ScyllaDB store, a private keyspace

Seeds a private store: on the ORM, `--transfers` rows, of which the last hour
holds `--per-second` x 3600 (97 % success, 2 % failed for three reasons, 1 %
still pending) and the rest finished days ago. On ScyllaDB only the rows the
overview reads are seeded, the last hour's transfer_activity rows and the
in-flight rows: its queries name the window's partitions, so the number of
older transfers cannot enter them (seeding millions of records through
lightweight transactions would take hours on one machine). Then reads the
overview's store sections `--rounds` times and prints the median and the
slowest of each, in milliseconds. Kafka is left out (MESSAGE_BUS=memory):
its lag read costs the same whatever is stored.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid

HOUR_MS = 3_600_000
REASONS = ("insufficient balance", "asset disabled", "amount above the maximum")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _rows(total: int, last_hour: int, now_ms: int):
    """(request_id, user_id, asset_id, direction, amount, status, error, created_ms, updated_ms), oldest first."""
    from transfers.snowflake import EPOCH_MS, SEQUENCE_BITS, WORKER_ID_BITS

    rng = random.Random(7)  # noqa: S311 (repeatable test data)
    older = total - last_hour
    for index in range(total):
        if index < older:  # spread over the 30 days before the last hour
            created = now_ms - HOUR_MS - 30 * 24 * HOUR_MS + index * (30 * 24 * HOUR_MS // max(1, older))
        else:
            created = now_ms - HOUR_MS + (index - older) * HOUR_MS // max(1, last_hour)
        draw = rng.random()
        status, error = "success", None
        if index >= older and draw < 0.01:
            status = "pending"
        elif draw < 0.03:
            status, error = "failed", REASONS[index % len(REASONS)]
        request_id = ((created - EPOCH_MS) << (WORKER_ID_BITS + SEQUENCE_BITS)) | (index & 0x3FFFFF)
        updated = created if status == "pending" else created + 150
        yield (request_id, 1 + index % 50_000, 1, "funding_to_spot", 1_000_000, status, error, created, updated)


def seed_orm(total: int, last_hour: int, now_ms: int) -> None:
    from django.db import connection, transaction

    from transfers.models import Transfer

    table = connection.ops.quote_name(Transfer._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(Transfer._meta.get_field(name).column) for name in (
        "request_id", "user_id", "asset", "direction", "amount", "status", "error_message", "created_at_ms",
        "updated_at_ms"))
    sql = f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"  # noqa: S608
    batch: list[tuple] = []
    started = time.monotonic()
    for row in _rows(total, last_hour, now_ms):
        batch.append(row)
        if len(batch) == 20_000:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(sql, batch)
            batch.clear()
    if batch:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, batch)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")
    print(f"seeded {total:,} transfers in {time.monotonic() - started:.0f} s", flush=True)


def seed_scylla(store, last_hour: int, now_ms: int) -> None:
    from transfers.domain import Direction, TransferRecord, TransferStatus
    from transfers.store.scylla import activity_params

    started = time.monotonic()
    futures = []
    for row in _rows(last_hour, last_hour, now_ms):
        request_id, user_id, asset_id, _, amount, status, error, created, updated = row
        record = TransferRecord(request_id=request_id, user_id=user_id, asset_id=asset_id, asset_code="USDT",
                                direction=Direction.FUNDING_TO_SPOT, amount=amount, status=TransferStatus(status),
                                client_transfer_id=None, error_message=error, created_at_ms=created,
                                updated_at_ms=updated)
        futures.extend(store._execute_async("upsert_activity", params) for params in activity_params(record))
        if len(futures) >= 256:
            for future in futures:
                future.result()
            futures.clear()
    for future in futures:
        future.result()
    print(f"seeded the last hour's {last_hour:,} transfers' activity rows in {time.monotonic() - started:.0f} s",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["orm", "scylla"], default="orm")
    parser.add_argument("--transfers", type=int, default=2_000_000, help="ORM: rows stored in all")
    parser.add_argument("--per-second", type=int, default=100, help="the last hour's rate")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)

    var_dir = tempfile.mkdtemp(prefix="bench-overview-")
    os.environ.update(VAR_DIR=var_dir, MESSAGE_BUS="memory", TRANSFER_STORE=args.store,
                      DJANGO_SETTINGS_MODULE="transfer_site.settings")
    database_url = os.environ.get("DATABASE_URL", "")
    private_database = None
    if database_url.startswith(("postgres://", "postgresql://")):
        import psycopg

        private_database = f"bench_overview_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{private_database}"')
        os.environ["DATABASE_URL"] = database_url.rsplit("/", 1)[0] + "/" + private_database
    else:
        os.environ.pop("DATABASE_URL", None)  # a private SQLite file in VAR_DIR
    keyspace = None
    if args.store == "scylla":
        keyspace = os.environ["SCYLLA_KEYSPACE"] = f"test_bench_overview_{uuid.uuid4().hex[:8]}"

    import django

    django.setup()
    from django.core.management import call_command

    from operations.selectors import operations_overview
    from transfers.store import get_transfer_store

    try:
        call_command("migrate", verbosity=0)
        now_ms = _now_ms()
        last_hour = args.per_second * 3600
        if args.store == "orm":
            seed_orm(args.transfers, last_hour, now_ms)
        else:
            call_command("sync_scylla_schema", "--replication", "1", verbosity=0)
            seed_scylla(get_transfer_store(), last_hour, now_ms)
        timings: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            overview = operations_overview()
            assert not overview.unavailable, overview.unavailable
            for name, ms in overview.read_ms.items():
                timings.setdefault(name, []).append(ms)
        accepted = sum(overview.series["accepted"])
        stored = f"{args.transfers:,} stored" if args.store == "orm" else "ScyllaDB"
        print(f"overview on {args.store} ({stored}; {accepted:,} accepted in the last hour, "
              f"{sum(overview.in_flight.in_flight.values()):,} in flight), {args.rounds} rounds:")
        for name, values in timings.items():
            print(f"  {name:10} median {statistics.median(values):7.1f} ms   slowest {max(values):7.1f} ms")
    finally:
        from django.db import connections

        connections.close_all()
        if keyspace:
            from transfers.store.scylla_schema import drop_keyspace

            drop_keyspace(keyspace)
        if private_database:
            import psycopg

            with psycopg.connect(database_url, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{private_database}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
