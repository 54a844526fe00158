"""Callback URLs users register, the events of their transfers, and every attempt to deliver one.

Kept by the Django ORM (the default database) whichever store keeps the transfers.
"""

from django.db import models
from django.db.models import Q


class WebhookEndpoint(models.Model):
    """A user's callback URL. Deleting one through the API only marks it deleted: its deliveries stay."""

    user_id = models.BigIntegerField()
    url = models.CharField(max_length=2048)
    # Signs every delivery (HMAC-SHA256). Kept as is because the server must sign with it;
    # shown to the user once, when the endpoint is registered, and never in the admin.
    secret = models.CharField(max_length=64)
    created_at_ms = models.BigIntegerField()
    deleted_at_ms = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "url"], condition=Q(deleted_at_ms__isnull=True), name="webhook_url_once_per_user"
            ),
        ]
        indexes = [models.Index(fields=["user_id", "deleted_at_ms"], name="webhook_endpoint_user")]

    def __str__(self) -> str:
        return f"{self.url} (user {self.user_id})"

    @property
    def is_active(self) -> bool:
        return self.deleted_at_ms is None


class EventType(models.TextChoices):
    TRANSFER_SUCCEEDED = "transfer.succeeded"
    TRANSFER_FAILED = "transfer.failed"


class WebhookEvent(models.Model):
    """What happened to a transfer, as sent: one per finished transfer, id `evt_<request_id>`.

    Written before the transfer's status changes (`confirmed` false) and
    confirmed once the change is stored, so that a crash in between leaves a
    record the sweep finishes from the store (webhooks.services).
    """

    id = models.CharField(primary_key=True, max_length=40)
    request_id = models.BigIntegerField(unique=True)
    user_id = models.BigIntegerField()
    type = models.CharField(max_length=32, choices=EventType.choices)
    created_at_ms = models.BigIntegerField(help_text="When it happened: the transfer's status change, ms.")
    data = models.JSONField(help_text="The transfer's public representation (as GET answers it).")
    confirmed = models.BooleanField(default=False)
    recorded_at_ms = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["confirmed", "recorded_at_ms"], name="webhook_event_unconfirmed")]

    def __str__(self) -> str:
        return f"{self.id} {self.type}"


class DeliveryStatus(models.TextChoices):
    HELD = "held", "held (transfer status not yet stored)"
    PENDING = "pending"
    DELIVERED = "delivered"
    GAVE_UP = "gave_up", "gave up (retried for the whole retry window)"
    CANCELLED = "cancelled", "cancelled (endpoint deleted)"


class WebhookDelivery(models.Model):
    """One event to one endpoint, retried until the endpoint answers 2xx or the retry window ends."""

    event = models.ForeignKey(WebhookEvent, on_delete=models.PROTECT, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.HELD)
    attempts = models.PositiveIntegerField(default=0)
    # Due time of the next attempt; also moved ahead when a task is queued, so the
    # dispatcher sends it again only if that task never ran.
    next_attempt_at_ms = models.BigIntegerField()
    # Held by the task making an attempt; a crashed task's lease runs out.
    lease_until_ms = models.BigIntegerField(default=0)
    give_up_at_ms = models.BigIntegerField()
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=255, blank=True)
    delivered_at_ms = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once")]
        indexes = [models.Index(fields=["status", "next_attempt_at_ms"], name="webhook_delivery_due")]
        permissions = [("redeliver_webhookdelivery", "Can redeliver a webhook event")]

    def __str__(self) -> str:
        return f"{self.event_id} to endpoint {self.endpoint_id}"


class AttemptOutcome(models.TextChoices):
    DELIVERED = "delivered"  # 2xx
    HTTP_ERROR = "http_error"  # any other status, redirects included (never followed)
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    REFUSED = "refused"  # the URL resolved to an address deliveries may not go to


class WebhookAttempt(models.Model):
    """One POST of a delivery, as it went."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    at_ms = models.BigIntegerField()
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    error = models.CharField(max_length=255, blank=True)
    response_excerpt = models.CharField(max_length=256, blank=True, help_text="The first bytes of the answer only.")

    class Meta:
        ordering = ["-at_ms"]

    def __str__(self) -> str:
        return f"{self.outcome} at {self.at_ms}"


class AttemptCount(models.Model):
    """Attempts so far by outcome, for /metrics: a counter that never needs a scan of the attempts."""

    outcome = models.CharField(primary_key=True, max_length=16, choices=AttemptOutcome.choices)
    count = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.outcome}: {self.count}"

