from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

# What an asset code is (the API's schema says it too): capitals and digits, as the seeded USDT, BTC, ETH.
ASSET_CODE_PATTERN = r"^[A-Z0-9]{1,16}$"


class Asset(models.Model):
    """An asset users can move; `id` is also its funding-ledger number."""

    id = models.PositiveIntegerField(primary_key=True)
    code = models.CharField(
        max_length=16, unique=True,
        validators=[RegexValidator(ASSET_CODE_PATTERN, "1-16 capital letters or digits, for example USDT.")],
    )
    decimals = models.PositiveSmallIntegerField()
    maximum_transfer_minor = models.BigIntegerField(
        help_text="Largest single transfer, in minor units (10**decimals per whole unit)."
    )
    transfers_enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.code


class ApiKeyPermission(models.TextChoices):
    READ = "read", "read only"
    TRANSFER = "transfer", "read and transfer"


class ApiKey(models.Model):
    """A user's API credential. Only a hash of the secret is stored."""

    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    user_id = models.BigIntegerField(db_index=True)
    label = models.CharField(max_length=100, blank=True)
    # Fixed at issue: to change it, issue a new key and revoke this one.
    permission = models.CharField(
        max_length=16, choices=ApiKeyPermission.choices, default=ApiKeyPermission.TRANSFER
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix} (user {self.user_id})"

    @property
    def can_transfer(self) -> bool:
        return self.permission == ApiKeyPermission.TRANSFER


class Transfer(models.Model):
    """A transfer record kept by the ORM store adapter (transfers.store.orm)."""

    request_id = models.BigIntegerField(primary_key=True)
    user_id = models.BigIntegerField()
    client_transfer_id = models.CharField(max_length=64, null=True, blank=True)
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT)
    direction = models.CharField(max_length=16)
    amount = models.BigIntegerField(help_text="Minor units of the asset.")
    status = models.CharField(max_length=16)
    error_message = models.CharField(max_length=255, null=True, blank=True)
    created_at_ms = models.BigIntegerField()
    updated_at_ms = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "client_transfer_id"],
                condition=Q(client_transfer_id__isnull=False),
                name="unique_client_transfer_id_per_user",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="transfer_amount_positive"),
        ]
        indexes = [
            models.Index(fields=["user_id", "-request_id"], name="transfer_user_history"),
            models.Index(fields=["status", "updated_at_ms"], name="transfer_status_age"),
        ]
        # Support staff's rights beyond viewing (groups: transfers/migrations/0005_staff_groups.py).
        permissions = [
            ("redrive_transfer", "Can re-drive a stuck transfer"),
            ("view_balances", "Can view a user's funding and spot balances"),
        ]

    def __str__(self) -> str:
        return str(self.request_id)


class TransferEvent(models.Model):
    """One entry of a transfer's timeline, kept by the ORM store adapter. Append-only.

    No foreign key to Transfer: appending must stay one cheap bulk insert per
    saga batch, and the log is written beside the record, never instead of it.
    """

    id = models.BigAutoField(primary_key=True)
    request_id = models.BigIntegerField()
    at_ms = models.BigIntegerField()
    kind = models.CharField(max_length=32)
    detail = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=200, blank=True)
    process = models.CharField(max_length=64, blank=True)

    class Meta:
        indexes = [models.Index(fields=["request_id", "at_ms", "id"], name="transfer_event_timeline")]

    def __str__(self) -> str:
        return f"{self.request_id} {self.kind}"
