"""The admin for support staff and admins, through Django's test client."""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group
from django.urls import reverse

from settlement.deposits import deposit_to_funding
from transfers.models import ApiKey, Asset, Transfer
from transfers.services import create_api_key, hash_api_key_secret
from ubscore.models import SpotBalance

pytestmark = pytest.mark.django_db

TRANSFERS = reverse("admin:transfers_transfer_changelist")
ASSETS = reverse("admin:transfers_asset_changelist")
API_KEYS = reverse("admin:transfers_apikey_changelist")
ISSUE_KEY = reverse("admin:transfers_apikey_add")
BALANCES = "/admin/balances/"


def transfer_page(request_id: int) -> str:
    return reverse("admin:transfers_transfer_change", args=[request_id])


def rows(html: str) -> list[str]:
    return re.findall(r'<tr[^>]*>\s*<td class="action-checkbox">.*?</tr>', html, re.S)


# --- Roles --------------------------------------------------------------------------


def test_the_migrations_create_the_two_roles(groups):
    support = set(Group.objects.get(name="support").permissions.values_list("codename", flat=True))
    admin = set(Group.objects.get(name="admin").permissions.values_list("codename", flat=True))
    assert support == {"view_transfer", "redrive_transfer", "view_balances", "view_asset", "view_apikey",
                       "view_spotbalance", "view_appliedoperation", "view_reconcilerun", "view_webhookendpoint",
                       "view_webhookevent", "view_webhookdelivery", "view_webhookattempt", "redeliver_webhookdelivery"}
    assert admin == {"view_asset", "add_asset", "change_asset", "view_apikey", "add_apikey", "change_apikey"}
    # No role may change or delete a transfer or a balance: such permissions go to nobody.
    assert not {"change_transfer", "delete_transfer", "add_transfer", "change_spotbalance"} & (support | admin)


# --- Transfers list ---------------------------------------------------------------------


@pytest.mark.usefixtures("orm_transfer_store")
def test_support_finds_a_transfer_by_request_id_client_id_or_user_id(support_client, make_transfer, user_id):
    wanted = make_transfer(amount="12.5", client_transfer_id="order-77")
    other = make_transfer(amount="3", user=user_id + 1)

    for term in (str(wanted.request_id), "order-77", str(user_id)):
        html = support_client.get(TRANSFERS, {"q": term}).content.decode()
        assert str(wanted.request_id) in html, term
        assert str(other.request_id) not in html, term
    # Amounts in the asset's decimals, never minor units.
    html = support_client.get(TRANSFERS, {"q": str(wanted.request_id)}).content.decode()
    assert "12.5 USDT" in html and "12500000" not in html
    # A search term that is not a number only matches client ids, and breaks nothing.
    assert support_client.get(TRANSFERS, {"q": "x' OR 1=1"}).status_code == 200


@pytest.mark.usefixtures("orm_transfer_store")
def test_filters_by_status_direction_asset_and_creation_date(support_client, make_transfer):
    usdt_in = make_transfer("funding", "spot", "USDT", "1")
    btc_out = make_transfer("spot", "funding", "BTC", "0.5")
    old = make_transfer("funding", "spot", "ETH", "2")
    Transfer.objects.filter(pk=old.request_id).update(created_at_ms=time.time_ns() // 1_000_000 - 40 * 86_400_000)

    def listed(**query) -> set[int]:
        html = support_client.get(TRANSFERS, query).content.decode()
        return {t.request_id for t in (usdt_in, btc_out, old) if f">{t.request_id}<" in html}

    assert listed() == {usdt_in.request_id, btc_out.request_id, old.request_id}
    assert listed(direction="spot_to_funding") == {btc_out.request_id}
    assert listed(asset__id__exact=Asset.objects.get(code="BTC").id) == {btc_out.request_id}
    assert listed(status="pending") == {usdt_in.request_id, btc_out.request_id, old.request_id}
    assert listed(status="success") == set()
    assert listed(created="24h") == {usdt_in.request_id, btc_out.request_id}
    assert listed(created="today") >= {usdt_in.request_id, btc_out.request_id}
    assert listed(created="older") == {old.request_id}


@pytest.mark.usefixtures("orm_transfer_store")
def test_a_transfers_page_shows_its_timeline_and_nothing_is_editable(support_client, make_transfer):
    record = make_transfer("funding", "spot", "USDT", "12.5")

    response = support_client.get(transfer_page(record.request_id))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="timeline"' in html
    assert "Accepted and stored (requesting)" in html
    assert "Published TransferRequested to Kafka" in html
    assert "Status requesting → pending" in html
    assert "12.5 USDT" in html
    form = html.split('id="transfer_form"')[1].split("</form>")[0]
    assert all('type="hidden"' in tag for tag in re.findall(r"<(?:input|select|textarea)[^>]*>", form))
    assert 'name="_save"' not in html  # view-only: no save button


@pytest.mark.parametrize("role", ["support", "admin", "superuser"])
@pytest.mark.usefixtures("orm_transfer_store")
def test_nobody_can_change_add_or_delete_a_transfer(request, role, make_transfer, client, django_user_model):
    if role == "superuser":
        user = django_user_model.objects.create_superuser("root", password="pw")
    else:
        user = request.getfixturevalue("support_user" if role == "support" else "admin_user_role")
    client.force_login(user)
    record = make_transfer()
    before = Transfer.objects.get(pk=record.request_id)

    response = client.post(transfer_page(record.request_id), {"status": "success", "amount": "1"})
    assert response.status_code == 403
    assert client.get(reverse("admin:transfers_transfer_add")).status_code == 403
    assert client.post(reverse("admin:transfers_transfer_delete", args=[record.request_id]),
                       {"post": "yes"}).status_code == 403
    after = Transfer.objects.get(pk=record.request_id)
    assert (after.status, after.amount, after.updated_at_ms) == (before.status, before.amount, before.updated_at_ms)


# --- Re-drive ------------------------------------------------------------------------------


@pytest.mark.usefixtures("orm_transfer_store")
def test_support_redrives_a_stuck_transfer_and_the_admin_log_says_who(support_client, support_user, make_transfer,
                                                                      bus, user_id):
    deposit_to_funding(user_id, 1, 100_000_000, reference=user_id)
    record = make_transfer("funding", "spot", "USDT", "10")
    bus.published.clear()

    response = support_client.post(TRANSFERS, {"action": "redrive", "_selected_action": [record.request_id]},
                                   follow=True)

    assert response.status_code == 200
    assert "Re-drove 1 transfer(s)" in response.content.decode()
    # The recovery task's steps: reserved in the ledger, TransferIn sent.
    assert [(p.message.ref_id, p.message.operation) for p in bus.published] == [(record.request_id, "TransferIn")]
    entry = LogEntry.objects.get(object_id=str(record.request_id))
    assert (entry.user, entry.action_flag) == (support_user, CHANGE)
    assert "Re-drive requested" in entry.get_change_message()
    html = support_client.get(transfer_page(record.request_id)).content.decode()
    assert "Re-driven from pending" in html and "admin:sam-support" in html
    assert "Funds reserved in the funding ledger (ledger status CREATED)" in html
    # Status and balances are still only the saga's to change.
    assert Transfer.objects.get(pk=record.request_id).status == "pending"


@pytest.mark.usefixtures("orm_transfer_store")
def test_a_finished_transfer_is_left_alone_by_a_redrive(support_client, make_transfer, bus):
    record = make_transfer()
    Transfer.objects.filter(pk=record.request_id).update(status="success")
    bus.published.clear()

    response = support_client.post(TRANSFERS, {"action": "redrive", "_selected_action": [record.request_id]},
                                   follow=True)

    assert "Re-drove 0 transfer(s); 1 already finished or moved on, left alone" in response.content.decode()
    assert bus.published == []
    assert "Re-drive</button>" not in support_client.get(transfer_page(record.request_id)).content.decode()


@pytest.mark.usefixtures("orm_transfer_store")
def test_the_redrive_button_posts_the_action(support_client, make_transfer):
    record = make_transfer()
    html = support_client.get(transfer_page(record.request_id)).content.decode()
    assert 'id="redrive-form"' in html and f'name="_selected_action" value="{record.request_id}"' in html


@pytest.mark.usefixtures("orm_transfer_store")
def test_the_admin_role_cannot_redrive(admin_client_role, make_transfer, bus):
    record = make_transfer()
    bus.published.clear()
    # Without "view transfer" the list itself is closed to this role.
    assert admin_client_role.get(TRANSFERS).status_code == 403
    admin_client_role.post(TRANSFERS, {"action": "redrive", "_selected_action": [record.request_id]})
    assert bus.published == []
    assert not LogEntry.objects.filter(object_id=str(record.request_id)).exists()


@pytest.mark.usefixtures("orm_transfer_store")
def test_a_viewer_without_the_redrive_permission_has_no_such_action(client, django_user_model, make_transfer, bus):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_transfer"))
    client.force_login(viewer)
    record = make_transfer()
    bus.published.clear()

    html = client.get(TRANSFERS).content.decode()
    assert 'value="redrive"' not in html
    client.post(TRANSFERS, {"action": "redrive", "_selected_action": [record.request_id]})
    assert bus.published == []
    assert 'id="redrive-form"' not in client.get(transfer_page(record.request_id)).content.decode()


# --- Balances -------------------------------------------------------------------------------


def test_support_sees_a_users_balances_and_the_reconciliation(support_client, user_id):
    deposit_to_funding(user_id, 1, 87_500_000, reference=user_id + 5)
    SpotBalance.objects.create(user_id=user_id, asset_id=2, available=125_000_000, frozen=1)

    html = re.sub(r">\s+<", "><", support_client.get(BALANCES, {"user_id": str(user_id)}).content.decode())

    balances = html.split('id="balances"')[1].split("</table>")[0]
    assert "<td>USDT</td><td>87.5</td><td>0</td><td>0</td><td>0</td>" in balances
    assert "<td>BTC</td><td>0</td><td>0</td><td>1.25</td><td>0.00000001</td>" in balances
    reconcile = html.split('id="reconcile"')[1].split("</table>")[0]
    assert "<td>USDT</td>" in reconcile and "<td>BTC</td>" in reconcile
    # Spot was written straight into UBSCore here, not through the ledger: reconciliation must say so.
    assert "DIFFERS" in reconcile
    assert "<input" not in balances  # read-only
    assert "positive whole number" in support_client.get(BALANCES, {"user_id": "abc"}).content.decode()


def test_the_balances_page_needs_its_permission(admin_client_role, client):
    assert admin_client_role.get(BALANCES).status_code == 403
    client.logout()
    assert client.get(BALANCES).status_code == 302  # to the login page


def test_the_admin_index_links_the_support_pages(support_client):
    html = support_client.get(reverse("admin:index")).content.decode()
    assert BALANCES in html and "/admin/transfers/store/" in html


# --- Assets -----------------------------------------------------------------------------------


def test_support_can_view_but_not_change_assets(support_client):
    usdt = Asset.objects.get(code="USDT")
    page = reverse("admin:transfers_asset_change", args=[usdt.pk])
    assert support_client.get(ASSETS).status_code == 200
    assert "1000000000 USDT" in support_client.get(ASSETS).content.decode()  # the maximum in whole units
    assert support_client.post(page, {"maximum_transfer_minor": "1", "transfers_enabled": ""}).status_code == 403
    support_client.post(ASSETS, {"action": "disable_transfers", "_selected_action": [usdt.pk]})
    assert support_client.get(reverse("admin:transfers_asset_add")).status_code == 403
    usdt.refresh_from_db()
    assert usdt.transfers_enabled and usdt.maximum_transfer_minor == 1_000_000_000 * 10**6


def test_the_admin_role_disables_and_enables_transfers_of_an_asset(admin_client_role, admin_user_role):
    btc = Asset.objects.get(code="BTC")

    response = admin_client_role.post(ASSETS, {"action": "disable_transfers", "_selected_action": [btc.pk]},
                                      follow=True)

    assert "Transfers disabled for 1 asset(s)" in response.content.decode()
    btc.refresh_from_db()
    assert btc.transfers_enabled is False
    assert LogEntry.objects.filter(user=admin_user_role, object_id=str(btc.pk), action_flag=CHANGE).exists()
    admin_client_role.post(ASSETS, {"action": "enable_transfers", "_selected_action": [btc.pk]})
    btc.refresh_from_db()
    assert btc.transfers_enabled is True


def test_the_admin_role_changes_the_maximum_but_never_the_decimals_or_id(admin_client_role):
    eth = Asset.objects.get(code="ETH")
    page = reverse("admin:transfers_asset_change", args=[eth.pk])

    response = admin_client_role.post(page, {"maximum_transfer_minor": "500", "transfers_enabled": "on",
                                             "decimals": "2", "id": "99", "code": "XXX"})

    assert response.status_code == 302, response.content.decode()[:2000]
    eth.refresh_from_db()
    assert (eth.id, eth.code, eth.decimals, eth.maximum_transfer_minor) == (3, "ETH", 8, 500)
    assert admin_client_role.post(reverse("admin:transfers_asset_delete", args=[eth.pk]),
                                  {"post": "yes"}).status_code == 403


# --- API keys ----------------------------------------------------------------------------------


def test_the_admin_role_issues_a_key_shown_once(admin_client_role, admin_user_role):
    response = admin_client_role.post(ISSUE_KEY, {"user_id": "4242", "label": "desk"}, follow=True)

    html = response.content.decode()
    (key,) = re.findall(r'<code class="issued-api-key">([^<]+)</code>', html)
    assert re.findall(r'<code class="issued-signing-secret">([^<]+)</code>', html)
    _, prefix, secret = key.split("_", 2)
    stored = ApiKey.objects.get(prefix=prefix)
    assert (stored.user_id, stored.label, stored.revoked_at) == (4242, "desk", None)
    assert stored.secret_hash == hash_api_key_secret(secret)  # the key works; only its hash is kept
    assert LogEntry.objects.filter(user=admin_user_role, object_id=str(stored.pk)).exists()
    # Shown once: the next page no longer has it.
    assert key not in admin_client_role.get(API_KEYS).content.decode()
    assert secret not in admin_client_role.get(reverse("admin:transfers_apikey_change", args=[stored.pk])) \
        .content.decode()


def test_issuing_a_key_validates_the_user_id(admin_client_role):
    response = admin_client_role.post(ISSUE_KEY, {"user_id": "-1"})
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    assert not ApiKey.objects.filter(user_id=-1).exists()


def test_the_admin_role_revokes_keys_and_sees_when_they_were_last_used(admin_client_role, admin_user_role):
    key = create_api_key(777).key
    stored = ApiKey.objects.get(prefix=key.split("_")[1])

    response = admin_client_role.post(API_KEYS, {"action": "revoke", "_selected_action": [stored.pk]}, follow=True)

    assert "Revoked 1 API key(s)" in response.content.decode()
    stored.refresh_from_db()
    assert stored.revoked_at is not None
    assert LogEntry.objects.filter(user=admin_user_role, object_id=str(stored.pk), action_flag=CHANGE).exists()
    html = admin_client_role.get(API_KEYS).content.decode()
    assert "Last used at" in html or "last used at" in html.lower()
    assert "revoked" in html


def test_revoking_is_final_and_the_secret_hash_is_never_editable(admin_client_role):
    key = create_api_key(778).key
    stored = ApiKey.objects.get(prefix=key.split("_")[1])
    page = reverse("admin:transfers_apikey_change", args=[stored.pk])
    admin_client_role.post(API_KEYS, {"action": "revoke", "_selected_action": [stored.pk]})
    stored.refresh_from_db()
    revoked_at = stored.revoked_at

    admin_client_role.post(page, {"label": "renamed", "revoked_at_0": "", "revoked_at_1": "", "secret_hash": "0" * 64,
                                  "user_id": "1"})

    stored.refresh_from_db()
    assert (stored.label, stored.revoked_at, stored.user_id) == ("renamed", revoked_at, 778)
    assert stored.secret_hash != "0" * 64


def test_support_can_view_keys_but_not_issue_or_revoke(support_client):
    key = create_api_key(779).key
    stored = ApiKey.objects.get(prefix=key.split("_")[1])
    assert support_client.get(API_KEYS).status_code == 200
    assert support_client.get(ISSUE_KEY).status_code == 403
    assert support_client.post(ISSUE_KEY, {"user_id": "5"}).status_code == 403
    support_client.post(API_KEYS, {"action": "revoke", "_selected_action": [stored.pk]})
    stored.refresh_from_db()
    assert stored.revoked_at is None
    assert support_client.post(reverse("admin:transfers_apikey_change", args=[stored.pk]),
                               {"label": "x"}).status_code == 403


# --- The store page (any store, ScyllaDB included) -----------------------------------------------

STORE_PAGE = "/admin/transfers/store/"


def test_the_store_page_shows_a_transfers_timeline_and_redrives_it(support_client, support_user, make_transfer,
                                                                    bus):
    record = make_transfer("spot", "funding", "BTC", "0.25")
    bus.published.clear()

    html = support_client.get(STORE_PAGE, {"request_id": str(record.request_id)}).content.decode()
    assert 'id="timeline"' in html and "Accepted and stored (requesting)" in html
    assert "TransferOut sent to UBSCore" in html and 'name="redrive"' in html

    response = support_client.post(STORE_PAGE, {"redrive": str(record.request_id)}, follow=True)

    assert f"Re-drove transfer {record.request_id}." in response.content.decode()
    assert [(p.message.ref_id, p.message.operation) for p in bus.published] == [(record.request_id, "TransferOut")]
    assert LogEntry.objects.get(object_id=str(record.request_id)).user == support_user
    assert "admin:sam-support" in response.content.decode()


def test_the_store_page_redrives_the_selected_transfers_of_a_list(support_client, make_transfer, user_id, bus):
    stuck = [make_transfer("spot", "funding", "USDT", amount) for amount in ("1", "2", "3")]
    bus.published.clear()
    listed = STORE_PAGE + f"?user_id={user_id}"
    html = support_client.get(listed).content.decode()
    assert 'id="action-toggle"' in html and html.count('class="action-select"') == 3
    assert 'data-actions-icnt="3"' in html and "admin/js/actions" in html

    chosen = [str(stuck[0].request_id), str(stuck[2].request_id)]
    response = support_client.post(listed, {"_selected_action": chosen, "index": "redrive_selected"})

    assert (response.status_code, response["Location"]) == (302, listed)  # back to the same list
    assert "Re-drove 2 of 2 transfers." in support_client.get(listed).content.decode()
    assert sorted(str(p.message.ref_id) for p in bus.published) == sorted(chosen)


def test_the_store_page_redrive_needs_the_permission(client, django_user_model, make_transfer, bus):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer2", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_transfer"))
    client.force_login(viewer)
    record = make_transfer()
    bus.published.clear()
    assert 'name="redrive"' not in client.get(STORE_PAGE, {"request_id": str(record.request_id)}).content.decode()
    assert client.post(STORE_PAGE, {"redrive": str(record.request_id)}).status_code == 403
    assert client.post(STORE_PAGE, {"_selected_action": [str(record.request_id)]}).status_code == 403
    assert 'id="action-toggle"' not in client.get(STORE_PAGE, {"user_id": str(record.user_id)}).content.decode()
    assert bus.published == []


def test_with_the_scylla_store_the_transfers_links_lead_to_the_store_page(support_client, settings):
    settings.TRANSFER_STORE = "scylla"  # the redirect reads no record: no server needed
    response = support_client.get(TRANSFERS, {"q": "386764767001313280"})
    assert (response.status_code, response["Location"]) == (302, STORE_PAGE + "?request_id=386764767001313280")
    response = support_client.get(transfer_page(386764767001313280))
    assert (response.status_code, response["Location"]) == (302, STORE_PAGE + "?request_id=386764767001313280")
    assert support_client.get(TRANSFERS, {"q": "a-client-id"})["Location"] == STORE_PAGE


def test_the_store_page_links_each_transfer_to_its_timeline(support_client, make_transfer, user_id):
    record = make_transfer()
    html = support_client.get(STORE_PAGE, {"user_id": str(user_id)}).content.decode()
    assert f'href="?request_id={record.request_id}"' in html and f'href="?user_id={user_id}"' in html
