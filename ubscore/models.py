from django.db import models
from django.db.models import Q


class SpotBalance(models.Model):
    """A user's spot balance of one asset, in the asset's minor units."""

    user_id = models.BigIntegerField()
    asset_id = models.PositiveIntegerField()
    available = models.BigIntegerField(default=0)
    frozen = models.BigIntegerField(default=0, help_text="Held by open orders.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user_id", "asset_id"], name="one_spot_balance_per_user_asset"),
            models.CheckConstraint(condition=Q(available__gte=0), name="spot_available_not_negative"),
            models.CheckConstraint(condition=Q(frozen__gte=0), name="spot_frozen_not_negative"),
        ]

    def __str__(self) -> str:
        return f"user {self.user_id} asset {self.asset_id}"


class AppliedOperation(models.Model):
    """Every balance operation UBSCore has applied, with the answer it gave.

    Written in the same database transaction as the balance change, so a
    ref_id is applied at most once and a repeat gets the same answer again.
    """

    ref_id = models.BigIntegerField(primary_key=True)
    operation = models.CharField(max_length=16)
    user_id = models.BigIntegerField()
    asset_id = models.PositiveIntegerField()
    amount = models.BigIntegerField()
    status = models.CharField(max_length=16)
    reason = models.CharField(max_length=255, null=True, blank=True)
    applied_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.operation} {self.ref_id}: {self.status}"
