"""Read-only admin page: one user's balances per asset, and reconciliation per asset.

Funding comes from the funding ledger, spot from UBSCore
(transfers.selectors.balances_of_user, as the API's /balances); the
reconciliation of the ledger's spot pool against Σ UBSCore spot comes from
settlement.reconcile (as `manage.py reconcile`). Staff with the
"view balances" permission (the support group), at /admin/balances/.
"""

from __future__ import annotations

import logging

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from settlement.reconcile import reconcile
from transfers.amounts import format_amount
from transfers.models import Asset
from transfers.selectors import balances_of_user

logger = logging.getLogger(__name__)

MAX_ID = 2**63 - 1


def user_balances_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("transfers.view_balances"):
        raise PermissionDenied
    user_id_text = request.GET.get("user_id", "").strip()
    error, balances, user_id = "", None, None
    if user_id_text:
        if user_id_text.isascii() and user_id_text.isdigit() and 0 < int(user_id_text) <= MAX_ID:
            user_id = int(user_id_text)
            balances = [
                {
                    "asset": row.asset.code,
                    "funding_available": format_amount(row.funding_available, row.asset.decimals),
                    "funding_frozen": format_amount(row.funding_frozen, row.asset.decimals),
                    "spot_available": format_amount(row.spot_available, row.asset.decimals),
                    "spot_frozen": format_amount(row.spot_frozen, row.asset.decimals),
                }
                for row in balances_of_user(user_id)
            ]
        else:
            error = "A user id is a positive whole number."
    decimals = {asset.code: asset.decimals for asset in Asset.objects.all()}
    reconcile_rows, reconcile_error = [], ""
    try:
        for result in reconcile():
            places = decimals.get(result.asset_code, 0)
            reconcile_rows.append({
                "asset": result.asset_code,
                **{name: format_amount(getattr(result, name), places) for name in (
                    "spot_pool", "spot_total", "in_flight_to_spot", "in_flight_to_funding", "spot_difference",
                    "ledger_difference", "pending_difference")},
                "clean": result.is_clean,
            })
    except Exception as failure:  # a ledger that cannot list accounts, or one that is down
        logger.warning("reconciliation for the balances page failed", exc_info=True)
        reconcile_error = f"{type(failure).__name__}: {failure}"
    context = {
        **admin.site.each_context(request),
        "title": "User balances",
        "user_id_text": user_id_text,
        "user_id": user_id,
        "balances": balances,
        "error": error,
        "reconcile": reconcile_rows,
        "reconcile_error": reconcile_error,
    }
    return TemplateResponse(request, "admin/transfers/balances.html", context)


urlpatterns = [
    path("", admin.site.admin_view(user_balances_view), name="admin_user_balances"),
]
