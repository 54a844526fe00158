from django.contrib import admin

from ubscore.models import AppliedOperation, SpotBalance


class ReadOnlyAdmin(admin.ModelAdmin):
    """Balances change only through operations, never by hand."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SpotBalance)
class SpotBalanceAdmin(ReadOnlyAdmin):
    list_display = ["user_id", "asset_id", "available", "frozen"]
    search_fields = ["=user_id"]
    list_filter = ["asset_id"]


@admin.register(AppliedOperation)
class AppliedOperationAdmin(ReadOnlyAdmin):
    list_display = ["ref_id", "operation", "user_id", "asset_id", "amount", "status", "reason", "applied_at"]
    search_fields = ["=ref_id", "=user_id"]
    list_filter = ["operation", "status"]
