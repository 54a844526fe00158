"""Webhooks in the admin: read-only records, and "Redeliver" for support staff (perm redeliver_webhookdelivery).

Per transfer: deliveries searched by its request id (the transfer's page links there);
per endpoint: the endpoint's page links to its deliveries.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from transfers.selectors import utc_text
from webhooks import services
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records of what was sent: nobody edits them here."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def _ms(ms: int | None) -> str:
    return "-" if ms is None else utc_text(ms)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ["id", "user_id", "url", "created", "deleted", "deliveries_link"]
    search_fields = ["=user_id", "url"]
    fields = ["id", "user_id", "url", "created", "deleted", "deliveries_link"]  # never the secret
    readonly_fields = fields

    @admin.display(description="created (UTC)")
    def created(self, obj: WebhookEndpoint) -> str:
        return _ms(obj.created_at_ms)

    @admin.display(description="deleted (UTC)")
    def deleted(self, obj: WebhookEndpoint) -> str:
        return _ms(obj.deleted_at_ms)

    @admin.display(description="deliveries")
    def deliveries_link(self, obj: WebhookEndpoint) -> str:
        url = reverse("admin:webhooks_webhookdelivery_changelist") + f"?endpoint__id__exact={obj.pk}"
        return format_html('<a href="{}">deliveries</a>', url)


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["at", "outcome", "status_code", "latency_ms", "error", "response_excerpt"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    verbose_name_plural = "attempts (newest first)"

    @admin.display(description="at (UTC)")
    def at(self, obj: WebhookAttempt) -> str:
        return _ms(obj.at_ms)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    # What support looks for first (did it arrive?) before what it was and where it went.
    list_display = ["event_id", "status", "attempts", "last_status_code", "event_type", "transfer", "endpoint_url",
                    "next_attempt", "delivered"]
    list_filter = ["status", "event__type"]
    list_select_related = ["event", "endpoint"]
    # A transfer's deliveries: its request id; a user's: their user id.
    search_fields = ["=event__request_id", "=event__user_id", "endpoint__url"]
    search_help_text = "A request id, a user id, or part of a callback URL."
    fields = ["event_id", "event_type", "transfer", "endpoint_url", "status", "attempts", "last_status_code",
              "last_error", "next_attempt", "give_up_at", "delivered"]
    readonly_fields = fields
    inlines = [AttemptInline]
    actions = ["redeliver"]

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup == "endpoint__id__exact" or super().lookup_allowed(lookup, value, request)

    @admin.display(description="type")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    @admin.display(description="transfer")
    def transfer(self, obj: WebhookDelivery) -> str:
        # The store page: the transfer and its timeline whichever store keeps it.
        url = reverse("transfer_store_records") + f"?request_id={obj.event.request_id}"
        return format_html('<a href="{}">{}</a>', url, obj.event.request_id)

    @admin.display(description="endpoint")
    def endpoint_url(self, obj: WebhookDelivery) -> str:
        url = reverse("admin:webhooks_webhookendpoint_change", args=[obj.endpoint_id])
        shown = obj.endpoint.url if len(obj.endpoint.url) <= 40 else obj.endpoint.url[:39] + "…"
        return format_html('<a href="{}" title="{}">{}</a>', url, obj.endpoint.url, shown)

    @admin.display(description="next attempt (UTC)")
    def next_attempt(self, obj: WebhookDelivery) -> str:
        return _ms(obj.next_attempt_at_ms) if obj.status == "pending" else "-"

    @admin.display(description="retried until (UTC)")
    def give_up_at(self, obj: WebhookDelivery) -> str:
        return _ms(obj.give_up_at_ms)

    @admin.display(description="delivered (UTC)")
    def delivered(self, obj: WebhookDelivery) -> str:
        return _ms(obj.delivered_at_ms)

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.redeliver_webhookdelivery")

    @admin.action(description="Redeliver the selected deliveries", permissions=["redeliver"])
    def redeliver(self, request: HttpRequest, queryset) -> None:
        count = services.redeliver(queryset.values_list("pk", flat=True), actor=f"admin:{request.user.get_username()}")
        self.message_user(request, f"Queued {count} {'delivery' if count == 1 else 'deliveries'} again.",
                          messages.SUCCESS)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "request_id", "user_id", "created", "confirmed"]
    list_filter = ["type", "confirmed"]
    search_fields = ["=request_id", "=user_id"]
    fields = ["id", "type", "request_id", "user_id", "created", "confirmed", "data"]
    readonly_fields = fields

    @admin.display(description="happened (UTC)")
    def created(self, obj: WebhookEvent) -> str:
        return _ms(obj.created_at_ms)
