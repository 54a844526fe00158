"""Hot reads (the SQL ledger's, the store's, the API key's): compiled once per shape by the ORM, run with its values."""

import pytest
from django.db import connection

from settlement.ledger import sql
from settlement.models import LedgerTransfer, PendingStatus
from transfer_site import compiled_sql

pytestmark = pytest.mark.django_db


def due_query(cutoff: int):
    return (
        LedgerTransfer.objects.filter(pending_status=PendingStatus.PENDING, expires_at__isnull=False,
                                      expires_at__lte=cutoff)
        .order_by("expires_at")
        .values_list("id")
    )


def test_the_same_shape_reuses_the_sql_with_new_values():
    shape = ("test due", 1)
    assert compiled_sql.rows("default", shape, lambda: due_query(5), [5, PendingStatus.PENDING]) == []
    text = compiled_sql.compiled("default", shape)

    # A second call with other values is not compiled again (the builder would fail if called).
    assert compiled_sql.rows("default", shape, lambda: pytest.fail("compiled twice"), [7, PendingStatus.PENDING]) == []
    assert compiled_sql.compiled("default", shape) is text


def test_values_in_another_order_than_the_orm_binds_them_are_refused():
    with pytest.raises(AssertionError, match="the ORM bound"):
        compiled_sql.rows("default", ("test due swapped", 1), lambda: due_query(5), [PendingStatus.PENDING, 5])


def test_the_expiry_scan_still_reads_the_partial_index():
    assert sql.SqlFundingLedger()._due_pending_ids(10, {1}, limit=10) == []
    text = compiled_sql.compiled("default", "ledger due reservations")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The test table is nearly empty: a sequential scan would be cheaper, so rule it out and
            # see whether the planner can answer from the index at all.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + text, [10, PendingStatus.PENDING])
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + text, [10, PendingStatus.PENDING])
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "ledger_transfer_expiry_idx" in plan


def test_rows_come_back_converted_as_the_orm_gives_them():
    """A datetime column is text in SQLite: the ORM's converters are applied, not only the driver's values."""
    from django.utils import timezone

    from transfers.models import ApiKey

    used = timezone.now().replace(microsecond=0)
    key = ApiKey.objects.create(prefix="conv0001", secret_hash="0" * 64, user_id=7, last_used_at=used)

    def build():
        return ApiKey.objects.filter(prefix="conv0001").values_list("user_id", "last_used_at", "created_at")

    [row] = compiled_sql.rows("default", "test api key times", build, ["conv0001"])
    assert row == ApiKey.objects.filter(pk=key.pk).values_list("user_id", "last_used_at", "created_at").get()
    assert row[1] == used and row[1].tzinfo is not None
