"""The operations overview in the admin (/admin/operations/overview/), for the person on duty."""

from __future__ import annotations

import time

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils.safestring import mark_safe

from operations.charts import COLOURS, per_minute_chart
from operations.selectors import operations_overview
from transfers.domain import TransferStatus

REFRESH_SECONDS = 30


def overview_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("transfers.view_transfer"):
        raise PermissionDenied
    overview = operations_overview()
    in_flight = overview.in_flight
    context = {
        **admin.site.each_context(request),
        "title": "Operations overview",
        "overview": overview,
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(overview.generated_at_ms / 1000)),
        # Built from numbers and fixed names only (operations.charts escapes the rest).
        "chart": mark_safe(per_minute_chart(overview.minutes, overview.series,  # noqa: S308
                                            f"Transfers per minute, last {overview.window_minutes} minutes"))
        if overview.series else "",
        "legend": [(name, COLOURS[name], sum(values)) for name, values in overview.series.items()],
        "in_flight_rows": [
            (status.value, in_flight.in_flight.get(status, 0), in_flight.stuck.get(status, 0))
            for status in (TransferStatus.REQUESTING, TransferStatus.PENDING)
        ] if in_flight else [],
        "stuck_total": sum(in_flight.stuck.values()) if in_flight else None,
        "lag_rows": sorted((overview.consumer_lag or {}).items()),
        "refresh_seconds": REFRESH_SECONDS,
    }
    return render(request, "admin/operations/overview.html", context)


urlpatterns = [
    path("", admin.site.admin_view(overview_view), name="operations_overview"),
]
