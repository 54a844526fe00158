"""An admin page for transfer records, read through the transfer-store port.

With TRANSFER_STORE=scylla the records are not in the relational database, so
the ModelAdmin in transfers/admin.py shows none. This page asks the store
instead (whichever it is): find a transfer by request id, a user's transfers
(filtered by status and asset, paged with the store's cursor), or the
transfers in flight that have not moved for a while. A transfer found by
request id shows its timeline, and a re-drive button for staff with the
"re-drive transfer" permission (the recovery task's path, never a status
change by hand). Otherwise read-only; staff with the "view transfer" permission.

Wire it in transfer_site/urls.py, before the admin site's own URLs:

    from transfers import admin_scylla
    urlpatterns = [
        path("admin/transfers/store/", include(admin_scylla.urlpatterns)),
        path("admin/", admin.site.urls),
        ...
    ]
"""

from __future__ import annotations

import time

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template import engines
from django.urls import path, reverse

from transfers.amounts import format_amount
from transfers.domain import IN_FLIGHT, TransferStatus
from transfers.models import Asset
from transfers.store import InvalidCursor, get_transfer_store
from transfers.timeline import describe

PAGE_SIZE = 50
MAX_ID = 2**63 - 1

_TEMPLATE = """{% extends "admin/base_site.html" %}
{% load static %}
{% block extrahead %}{{ block.super }}
<script src="{% url 'admin:jsi18n' %}"></script>
<script src="{% static 'admin/js/actions.js' %}" defer></script>
{% endblock %}
{% block content %}
<div id="content-main">
<form method="get" style="margin-bottom: 1em">
  <label>Request id <input name="request_id" value="{{ form.request_id }}" size="22"></label>
  <label>User id <input name="user_id" value="{{ form.user_id }}" size="14"></label>
  <label>Status <select name="status"><option value="">any</option>
    {% for value in statuses %}<option value="{{ value }}"{% if value == form.status %} selected{% endif %}>
    {{ value }}</option>{% endfor %}</select></label>
  <label>Asset <select name="asset"><option value="">any</option>
    {% for asset in assets %}<option value="{{ asset.id }}"{% if asset.id|stringformat:"s" == form.asset %}
    selected{% endif %}>{{ asset.code }}</option>{% endfor %}</select></label>
  <label>or in flight, not moved for <input name="stuck_minutes" value="{{ form.stuck_minutes }}" size="4"> minutes
  </label>
  <input type="submit" value="Search">
</form>
{% if error %}<p class="errornote">{{ error }}</p>{% endif %}
{% if searched %}
<form method="post" id="changelist-form">{% csrf_token %}
{% if may_redrive and rows %}<div class="actions">
  <button type="submit" class="button" name="index" value="redrive_selected">Re-drive selected</button>
  <span class="action-counter" data-actions-icnt="{{ rows|length }}">0 of {{ rows|length }} selected</span>
</div>{% endif %}
<table id="result_list">
  <thead><tr>{% if may_redrive and rows %}<th class="action-checkbox-column"><input type="checkbox"
  id="action-toggle" aria-label="Select all"></th>{% endif %}<th>request id</th><th>user id</th>
  <th>client transfer id</th><th>direction</th><th>asset</th>
  <th>amount</th><th>status</th><th>error</th><th>created (UTC)</th><th>updated (UTC)</th></tr></thead>
  <tbody>
  {% for row in rows %}<tr>{% if may_redrive %}<td class="action-checkbox"><input type="checkbox"
  class="action-select" name="_selected_action" value="{{ row.record.request_id }}"
  aria-label="Select this transfer"></td>{% endif %}<td>
  <a href="?request_id={{ row.record.request_id }}">{{ row.record.request_id }}</a>
  </td><td><a href="?user_id={{ row.record.user_id }}">{{ row.record.user_id }}</a></td>
  <td>{{ row.record.client_transfer_id|default:"" }}</td><td>{{ row.record.direction.value }}</td>
  <td>{{ row.record.asset_code }}</td><td>{{ row.amount }}</td><td>{{ row.record.status.value }}</td>
  <td>{{ row.record.error_message|default:"" }}</td><td>{{ row.created }}</td><td>{{ row.updated }}</td></tr>
  {% empty %}<tr><td colspan="10">No transfers.</td></tr>{% endfor %}
  </tbody>
</table>
</form>
{% if next_query %}<p><a href="?{{ next_query }}">Next page</a></p>{% endif %}
{% endif %}
{% if timeline is not None %}
<h2>Timeline of {{ form.request_id }}</h2>
<p>{% if balances_url %}<a href="{{ balances_url }}">User's balances</a> · {% endif %}<a
  href="{% url 'admin:webhooks_webhookdelivery_changelist' %}?q={{ form.request_id }}">Webhook deliveries</a></p>
{% if can_redrive %}<form method="post" id="redrive-form">{% csrf_token %}
<input type="hidden" name="redrive" value="{{ form.request_id }}">
<button type="submit" class="button">Re-drive</button></form>{% endif %}
<table id="timeline">
  <thead><tr><th>time (UTC)</th><th>event</th><th>what happened</th><th>by</th><th>process</th></tr></thead>
  <tbody>
  {% for entry in timeline %}<tr class="timeline-event"><td>{{ entry.at }}</td><td>{{ entry.kind }}</td>
  <td>{{ entry.description }}</td><td>{{ entry.actor }}</td><td>{{ entry.process }}</td></tr>
  {% empty %}<tr><td colspan="5">No events recorded for this transfer.</td></tr>{% endfor %}
  </tbody>
</table>
{% endif %}
</div>
{% endblock %}
"""


def _as_id(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
        raise ValueError(text)
    return int(text)


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}"


def transfer_records_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("transfers.view_transfer"):
        raise PermissionDenied
    if request.method == "POST":
        return _redrive(request)
    form = {key: request.GET.get(key, "").strip() for key in
            ("request_id", "user_id", "status", "asset", "cursor", "stuck_minutes", "stuck_seconds")}
    store = get_transfer_store()
    records, error, next_query, searched = [], "", "", False
    try:
        request_id, user_id = _as_id(form["request_id"]), _as_id(form["user_id"])
        status = TransferStatus(form["status"]) if form["status"] else None
        asset_id = _as_id(form["asset"])
        stuck_minutes = _as_id(form["stuck_minutes"])
        # The operations overview links here with its own threshold (STUCK_TRANSFER_SECONDS).
        stuck_seconds = _as_id(form["stuck_seconds"])
        if stuck_seconds is None and stuck_minutes is not None:
            stuck_seconds = stuck_minutes * 60
    except ValueError:
        request_id = user_id = status = asset_id = stuck_seconds = None
        error = "Ids and minutes are whole numbers; status is one of the listed ones."
    timeline, can_redrive, balances_url = None, False, ""
    if request_id is not None:
        searched = True
        record = store.get(request_id)
        records = [record] if record else []
        if record is not None:
            timeline = [
                {"at": _utc(event.at_ms), "kind": event.kind.value, "description": describe(event),
                 "actor": event.actor or "service", "process": event.process}
                for event in store.timeline(request_id)
            ]
            can_redrive = record.status in IN_FLIGHT and request.user.has_perm("transfers.redrive_transfer")
            if request.user.has_perm("transfers.view_balances"):
                balances_url = reverse("admin_user_balances") + f"?user_id={record.user_id}"
    elif user_id is not None:
        searched = True
        try:
            page = store.list_for_user(user_id, asset_id=asset_id, statuses={status} if status else None,
                                       limit=PAGE_SIZE, cursor=form["cursor"] or None)
        except InvalidCursor:
            error = "That page link is not valid any more; start again."
        else:
            records = page.items
            if page.next_cursor:
                query = request.GET.copy()
                query["cursor"] = page.next_cursor
                next_query = query.urlencode()
    elif stuck_seconds is not None:
        searched = True
        before_ms = time.time_ns() // 1_000_000 - stuck_seconds * 1000
        wanted = {status} & IN_FLIGHT if status else IN_FLIGHT
        records = [r for r in store.list_not_moved_since(wanted, before_ms, PAGE_SIZE)
                   if asset_id is None or r.asset_id == asset_id]
    assets = list(Asset.objects.order_by("code"))
    decimals = {asset.id: asset.decimals for asset in assets}
    rows = [
        {
            "record": record,
            "amount": format_amount(record.amount, decimals[record.asset_id])
            if record.asset_id in decimals else f"{record.amount} (minor units)",
            "created": _utc(record.created_at_ms),
            "updated": _utc(record.updated_at_ms),
        }
        for record in records
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Transfer records (from the transfer store)",
        "form": form,
        "statuses": [status.value for status in TransferStatus],
        "assets": assets,
        "rows": rows,
        "error": error,
        "searched": searched,
        "next_query": next_query,
        "timeline": timeline,
        "can_redrive": can_redrive,
        "may_redrive": request.user.has_perm("transfers.redrive_transfer"),
        "balances_url": balances_url,
    }
    template = engines["django"].from_string(_TEMPLATE)
    return HttpResponse(template.render(context, request))


def _redrive(request: HttpRequest) -> HttpResponse:
    """POST redrive=<request id> (a transfer's page) or _selected_action=<id>... (the list's "Re-drive selected"):
    the recovery task's path (settlement.services.redrive_for_staff)."""
    from settlement.services import redrive_for_staff

    if not request.user.has_perm("transfers.redrive_transfer"):
        raise PermissionDenied
    selected = request.POST.getlist("_selected_action")
    try:
        request_ids = [_as_id(text) for text in (selected or [request.POST.get("redrive", "")])]
    except ValueError:
        request_ids = []
    request_ids = [request_id for request_id in request_ids if request_id is not None]
    back = request.get_full_path()  # the list as it was searched, or the transfer's page
    if not request_ids:
        messages.error(request, "Nothing to re-drive: no transfer selected.")
        return HttpResponseRedirect(back)
    driven = redrive_for_staff(request_ids, request.user)
    if not selected:
        back = f"{request.path}?request_id={request_ids[0]}"
    if driven:
        named = f"transfer {request_ids[0]}" if len(request_ids) == 1 else f"{driven} of {len(request_ids)} transfers"
        messages.success(request, f"Re-drove {named}.")
    else:
        messages.warning(request, "The selected transfers are finished or unknown; left alone.")
    return HttpResponseRedirect(back)


urlpatterns = [
    path("", admin.site.admin_view(transfer_records_view), name="transfer_store_records"),
]
