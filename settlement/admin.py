from django.contrib import admin

from settlement.models import ReconcileRun


@admin.register(ReconcileRun)
class ReconcileRunAdmin(admin.ModelAdmin):
    """What each reconcile found (the overview shows the latest); written by the task only."""

    list_display = ["checked_at", "clean", "assets"]
    list_filter = ["clean"]
    date_hierarchy = "checked_at"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
