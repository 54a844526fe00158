"""Tables of the SQL funding ledger (settlement.ledger.sql).

They hold TigerBeetle's data model on one relational database:

* 128-bit ids (account, transfer, pending_id, user_data_128) do not fit a
  BIGINT, so they are stored as fixed-width 32-character lowercase hex. Fixed
  width keeps text order equal to numeric order (lock order, range scans).
* Amounts and balances are signed 64-bit (BigIntegerField): the SQL ledger
  accepts values up to 2**63-1 and answers TigerBeetle's OVERFLOWS_* codes
  beyond that.
* Unsigned 64-bit user_data_64 is stored two's-complement in a signed BIGINT
  (values below 2**63, such as user ids, read back unchanged in SQL).
* `timestamp` is the nanosecond at which the ledger applied the event, unique
  per row, as TigerBeetle's.

Rows are written only by the adapter; nothing else may update or delete them.

Beside them, ReconcileRun keeps what the reconcile task found (not ledger data).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

HEX128_LENGTH = 32


class LedgerAccount(models.Model):
    id = models.CharField(primary_key=True, max_length=HEX128_LENGTH)
    ledger = models.BigIntegerField(help_text="u32: accounts only transact within one ledger (asset).")
    code = models.IntegerField(help_text="u16: the kind of account.")
    flags = models.IntegerField(help_text="AccountFlags bits; CLOSED can change after creation.")
    user_data_128 = models.CharField(max_length=HEX128_LENGTH)
    user_data_64 = models.BigIntegerField(help_text="u64 stored two's-complement.")
    user_data_32 = models.BigIntegerField()
    debits_pending = models.BigIntegerField(default=0)
    debits_posted = models.BigIntegerField(default=0)
    credits_pending = models.BigIntegerField(default=0)
    credits_posted = models.BigIntegerField(default=0)
    timestamp = models.BigIntegerField(unique=True, help_text="Nanoseconds; when the account was created.")

    class Meta:
        db_table = "settlement_ledger_account"
        indexes = [
            # Reconciliation lists the accounts of one ledger and code, oldest first.
            models.Index(fields=["ledger", "code", "timestamp"], name="ledger_account_code_idx"),
        ]
        constraints = [
            # The balances can never go negative: a bug must fail loudly, not corrupt.
            models.CheckConstraint(
                condition=Q(debits_pending__gte=0)
                & Q(debits_posted__gte=0)
                & Q(credits_pending__gte=0)
                & Q(credits_posted__gte=0),
                name="ledger_account_balances_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"ledger account {self.id} (ledger {self.ledger}, code {self.code})"


class PendingStatus(models.IntegerChoices):
    """TigerBeetle's TransferPendingStatus, kept on the pending transfer itself."""

    NONE = 0  # not a pending transfer
    PENDING = 1
    POSTED = 2
    VOIDED = 3
    EXPIRED = 4


class LedgerTransfer(models.Model):
    id = models.CharField(primary_key=True, max_length=HEX128_LENGTH)
    # Plain ids rather than ForeignKeys: the adapter reads and writes them as
    # hex and never wants the ORM to follow them; PROTECT-like integrity comes
    # from the ledger never deleting accounts.
    debit_account_id = models.CharField(max_length=HEX128_LENGTH, db_index=True)
    credit_account_id = models.CharField(max_length=HEX128_LENGTH, db_index=True)
    amount = models.BigIntegerField(help_text="Minor units actually moved (posted or reserved).")
    pending_id = models.CharField(max_length=HEX128_LENGTH, help_text="Post/void: the pending transfer's id.")
    user_data_128 = models.CharField(max_length=HEX128_LENGTH)
    user_data_64 = models.BigIntegerField(help_text="u64 stored two's-complement.")
    user_data_32 = models.BigIntegerField()
    timeout = models.BigIntegerField(help_text="u32 seconds; pending transfers only.")
    ledger = models.BigIntegerField()
    code = models.IntegerField()
    flags = models.IntegerField(help_text="TransferFlags bits, as submitted.")
    timestamp = models.BigIntegerField(unique=True, help_text="Nanoseconds; when the transfer was applied.")
    pending_status = models.SmallIntegerField(choices=PendingStatus.choices, default=PendingStatus.NONE)
    expires_at = models.BigIntegerField(
        null=True, blank=True, help_text="Nanoseconds; set on pending transfers with a timeout."
    )

    class Meta:
        db_table = "settlement_ledger_transfer"
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="ledger_transfer_amount_not_negative"),
        ]
        indexes = [
            # The expiry scan only ever looks at reservations still open.
            models.Index(
                fields=["expires_at"],
                condition=Q(pending_status=PendingStatus.PENDING, expires_at__isnull=False),
                name="ledger_transfer_expiry_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"ledger transfer {self.id}: {self.debit_account_id} -> {self.credit_account_id} {self.amount}"


class LedgerFailedTransferId(models.Model):
    """A transfer id that failed with a transient error and can never be used again.

    TigerBeetle keeps these ids ("orphaned") so that a retry of the same id
    answers ID_ALREADY_FAILED instead of succeeding later, when e.g. the
    balance has grown: one id, one outcome.
    """

    id = models.CharField(primary_key=True, max_length=HEX128_LENGTH)
    status = models.IntegerField(help_text="The transient CreateTransferStatus it failed with.")
    timestamp = models.BigIntegerField(help_text="Nanoseconds; when it failed.")

    class Meta:
        db_table = "settlement_ledger_failed_transfer_id"

    def __str__(self) -> str:
        return f"failed ledger transfer id {self.id} (status {self.status})"


class ReconcileRun(models.Model):
    """The outcome of one reconcile task (its last look), for the operations overview.

    `assets` holds each asset's differences in minor units, as strings (they
    can exceed what JSON readers keep exactly). Kept for RECONCILE_KEEP_DAYS.
    """

    checked_at = models.DateTimeField(db_index=True)
    clean = models.BooleanField()
    assets = models.JSONField(default=list)

    class Meta:
        ordering = ["-checked_at"]

    def __str__(self) -> str:
        return f"reconcile at {self.checked_at:%Y-%m-%d %H:%M:%S}: {'clean' if self.clean else 'different'}"
