"""The Django admin for support staff and admins.

Money is read-only here: no page, form or action sets a transfer's status or
a balance. The only action on transfers is the re-drive, which runs the
recovery task's own idempotent steps (settlement.saga.redrive_transfers).
Roles: the "support" and "admin" groups (transfers/migrations/0005_staff_groups.py).
"""

from __future__ import annotations

import time

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from settlement.services import redrive_for_staff
from transfers.amounts import format_amount
from transfers.domain import IN_FLIGHT, TransferStatus
from transfers.models import ApiKey, Asset, Transfer
from transfers.selectors import transfer_timeline, utc_text
from transfers.services import create_api_key, revoke_api_keys, set_transfers_enabled

MAX_ID = 2**63 - 1

# The admin index links the support pages that are not model lists.
admin.site.index_template = "admin/transfers/index.html"


# --- Assets ----------------------------------------------------------------------


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ["code", "id", "decimals", "display_maximum", "transfers_enabled"]
    list_editable = ["transfers_enabled"]
    fields = ["id", "code", "decimals", "maximum_transfer_minor", "display_maximum", "transfers_enabled"]
    actions = ["enable_transfers", "disable_transfers"]

    @admin.display(description="maximum per transfer")
    def display_maximum(self, obj: Asset) -> str:
        if obj.maximum_transfer_minor is None or obj.decimals is None:
            return "-"
        return f"{format_amount(obj.maximum_transfer_minor, obj.decimals)} {obj.code}"

    def get_readonly_fields(self, request: HttpRequest, obj: Asset | None = None) -> list[str]:
        # The id is the asset's funding-ledger number and the decimals give
        # every stored amount its meaning: both are fixed once the asset exists.
        return ["display_maximum", *(["id", "code", "decimals"] if obj else [])]

    def has_delete_permission(self, request: HttpRequest, obj: Asset | None = None) -> bool:
        return False  # ledger accounts and transfers refer to it

    @admin.action(description="Enable transfers of the selected assets", permissions=["change"])
    def enable_transfers(self, request: HttpRequest, queryset) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable transfers of the selected assets", permissions=["change"])
    def disable_transfers(self, request: HttpRequest, queryset) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset, enabled: bool) -> None:
        changed = set_transfers_enabled(list(queryset.values_list("pk", flat=True)), enabled)
        word = "enabled" if enabled else "disabled"
        for asset in changed:
            self.log_change(request, asset, f"Transfers {word} (admin action).")
        self.message_user(request, f"Transfers {word} for {len(changed)} asset(s).", messages.SUCCESS)


# --- API keys ----------------------------------------------------------------------


class IssueApiKeyForm(forms.Form):
    user_id = forms.IntegerField(min_value=1, max_value=MAX_ID)
    label = forms.CharField(max_length=100, required=False)
    read_only = forms.BooleanField(required=False, help_text="A read-only key can read but not create transfers.")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user_id", "label", "permission", "state", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["permission", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["=user_id", "prefix", "label"]
    search_help_text = "User id (exact), key prefix or label."
    actions = ["revoke"]

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        return "revoked" if obj.revoked_at else "active"

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        # Only the label is edited here. permission is fixed at issue (a read-only
        # key never gains transfer rights: issue a new key instead); revoking is
        # the action, which is final and logged.
        return [field.name for field in self.model._meta.fields if field.name not in ("id", "label")]

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # revoked keys stay, for the record

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        """Issue a key through the service; the key is shown once, in a message."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = IssueApiKeyForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            issued = create_api_key(data["user_id"], data["label"], read_only=data["read_only"])
            api_key = ApiKey.objects.get(prefix=issued.key.split("_")[1])
            self.log_addition(request, api_key, [{"added": {}}])
            messages.warning(
                request,
                format_html(
                    "API key for user {} issued. Copy the key and its signing secret now: they are shown "
                    "this once and cannot be shown again.<br>Key: <code class=\"issued-api-key\">{}</code>"
                    "<br>Signing secret: <code class=\"issued-signing-secret\">{}</code>",
                    api_key.user_id,
                    issued.key,
                    issued.signing_secret,
                ),
            )
            return HttpResponseRedirect(reverse("admin:transfers_apikey_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Issue an API key",
            "opts": self.model._meta,
            "form": form,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/transfers/apikey/issue.html", context)

    @admin.action(description="Revoke the selected API keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset) -> None:
        revoked = revoke_api_keys(list(queryset.values_list("pk", flat=True)))
        for api_key in revoked:
            self.log_change(request, api_key, "Revoked (admin action).")
        self.message_user(request, f"Revoked {len(revoked)} API key(s).", messages.SUCCESS)


# --- Transfers ---------------------------------------------------------------------


class CreatedFilter(admin.SimpleListFilter):
    """created_at_ms is milliseconds, so the date choices are made here (UTC)."""

    title = "created"
    parameter_name = "created"
    WINDOWS_MS = {"1h": 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000}

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("1h", "Past hour"), ("today", "Today (UTC)"), ("24h", "Past 24 hours"), ("7d", "Past 7 days"),
                ("30d", "Past 30 days"), ("older", "Older than 30 days")]

    def queryset(self, request: HttpRequest, queryset):
        now_ms = time.time_ns() // 1_000_000
        value = self.value()
        if value in self.WINDOWS_MS:
            return queryset.filter(created_at_ms__gte=now_ms - self.WINDOWS_MS[value])
        if value == "today":
            return queryset.filter(created_at_ms__gte=now_ms - now_ms % 86_400_000)
        if value == "older":
            return queryset.filter(created_at_ms__lt=now_ms - self.WINDOWS_MS["30d"])
        return queryset


@admin.register(Transfer)
class TransferAdmin(admin.ModelAdmin):
    list_display = ["request_id", "user_id", "client_transfer_id", "direction", "asset", "display_amount",
                    "status", "error_message", "created", "updated"]
    list_filter = ["status", "direction", "asset", CreatedFilter]
    search_fields = ["=request_id", "=user_id", "=client_transfer_id"]
    search_help_text = "Request id, user id or client transfer id (exact)."
    list_select_related = ["asset"]
    ordering = ["-request_id"]
    fields = ["request_id", "user_id", "client_transfer_id", "direction", "asset", "display_amount", "minor_units",
              "status", "error_message", "created", "updated"]
    readonly_fields = fields
    actions = ["redrive"]
    change_form_template = "admin/transfers/transfer/change_form.html"

    @admin.display(description="amount", ordering="amount")
    def display_amount(self, obj: Transfer) -> str:
        return f"{format_amount(obj.amount, obj.asset.decimals)} {obj.asset.code}"

    @admin.display(description="amount (minor units)")
    def minor_units(self, obj: Transfer) -> int:
        return obj.amount

    @admin.display(description="created (UTC)", ordering="created_at_ms")
    def created(self, obj: Transfer) -> str:
        return utc_text(obj.created_at_ms)

    @admin.display(description="updated (UTC)", ordering="updated_at_ms")
    def updated(self, obj: Transfer) -> str:
        return utc_text(obj.updated_at_ms)

    def get_search_results(self, request: HttpRequest, queryset, search_term: str):
        # An id that is not a number cannot match the integer columns; only the client id can.
        term = search_term.strip()
        if term and not (term.isascii() and term.isdigit() and int(term) <= MAX_ID):
            return queryset.filter(client_transfer_id=term), False
        return super().get_search_results(request, queryset, search_term)

    # Records change only through the store's compare-and-set, never here.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Transfer | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Transfer | None = None) -> bool:
        return False

    def has_redrive_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("transfers.redrive_transfer")

    @admin.action(description="Re-drive the selected transfers (the recovery task's steps)", permissions=["redrive"])
    def redrive(self, request: HttpRequest, queryset) -> None:
        request_ids = list(queryset.values_list("request_id", flat=True))
        try:
            driven = redrive_for_staff(request_ids, request.user)
        except Exception as error:  # a dependency is down: say so; the recovery task tries again
            self.message_user(request, f"Re-drive failed: {type(error).__name__}: {error}", messages.ERROR)
            return
        left = len(request_ids) - driven
        note = f"; {left} already finished or moved on, left alone" if left else ""
        self.message_user(request, f"Re-drove {driven} transfer(s){note}.", messages.SUCCESS)

    # With TRANSFER_STORE=scylla the records are not in this table: the same links (the index's
    # "Transfers", a search, a transfer's page) lead to the store's page, where the same records
    # are found, read and re-driven (transfers/admin_scylla.py).
    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if settings.TRANSFER_STORE != "orm":
            term = request.GET.get("q", "").strip()
            query = f"?request_id={term}" if term.isascii() and term.isdigit() else ""
            return HttpResponseRedirect(reverse("transfer_store_records") + query)
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        if settings.TRANSFER_STORE != "orm":
            query = f"?request_id={object_id}" if object_id.isascii() and object_id.isdigit() else ""
            return HttpResponseRedirect(reverse("transfer_store_records") + query)
        context = dict(extra_context or {})
        if object_id.isascii() and object_id.isdigit() and int(object_id) <= MAX_ID:
            transfer = Transfer.objects.filter(pk=int(object_id)).only("status", "user_id").first()
            context["timeline"] = transfer_timeline(int(object_id))
            context["can_redrive"] = bool(
                transfer and TransferStatus(transfer.status) in IN_FLIGHT and self.has_redrive_permission(request)
            )
            if transfer and request.user.has_perm("transfers.view_balances"):
                context["balances_url"] = reverse("admin_user_balances") + f"?user_id={transfer.user_id}"
        return super().change_view(request, object_id, form_url, extra_context=context)
