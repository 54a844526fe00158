"""POST/GET/DELETE /api/v1/user/webhooks: a user's callback URLs, through the real API views."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from transfers.services import create_api_key
from webhooks.models import WebhookEndpoint

URL = "/api/v1/user/webhooks"


def register(client: APIClient, url: str):
    return client.post(URL, {"url": url}, format="json")


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_register_list_delete(api_client, user_id, receiver, allow_private):
    created = register(api_client, receiver.url)
    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body) == {"id", "url", "secret", "created_at"}
    assert body["url"] == receiver.url and body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    stored = WebhookEndpoint.objects.get(pk=int(body["id"]))
    assert (stored.user_id, stored.secret) == (user_id, body["secret"])

    listed = api_client.get(URL).json()
    assert listed == {"items": [{"id": body["id"], "url": receiver.url, "created_at": body["created_at"]}]}

    assert api_client.delete(f"{URL}/{body['id']}").status_code == 204
    assert api_client.get(URL).json() == {"items": []}
    assert error_code(api_client.delete(f"{URL}/{body['id']}")) == "not_found"
    # Deleted, the URL may be registered again (a new secret).
    again = register(api_client, receiver.url)
    assert again.status_code == 201 and again.json()["secret"] != body["secret"]


def test_another_users_endpoint_is_neither_listed_nor_deleted(api_client, other_client, receiver, allow_private):
    endpoint_id = register(api_client, receiver.url).json()["id"]
    assert other_client.get(URL).json() == {"items": []}
    response = other_client.delete(f"{URL}/{endpoint_id}")
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert WebhookEndpoint.objects.get(pk=int(endpoint_id)).deleted_at_ms is None


def test_a_read_only_key_lists_but_cannot_change(db, user_id, receiver, allow_private):
    writer, reader = APIClient(), APIClient()
    writer.credentials(HTTP_X_API_KEY=create_api_key(user_id).key)
    reader.credentials(HTTP_X_API_KEY=create_api_key(user_id, read_only=True).key)
    endpoint_id = register(writer, receiver.url).json()["id"]
    assert [item["id"] for item in reader.get(URL).json()["items"]] == [endpoint_id]
    for response in (register(reader, receiver.url + "2"), reader.delete(f"{URL}/{endpoint_id}")):
        assert response.status_code == 403 and error_code(response) == "forbidden"
    assert WebhookEndpoint.objects.filter(user_id=user_id, deleted_at_ms__isnull=True).count() == 1


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.0.0.5/hook", "http://169.254.169.254/latest",
     "http://[::1]/hook", "http://0.0.0.0/hook", "https://user:pw@example.com/", "ftp://example.com/", "not a url",
     "https://no-such-host.invalid/hook"],
)
def test_internal_or_malformed_urls_are_refused_and_nothing_is_stored(api_client, url):
    response = register(api_client, url)
    assert response.status_code == 400 and error_code(response) == "invalid_webhook_url", response.content
    assert not WebhookEndpoint.objects.exists()


def test_production_settings_want_https(api_client, settings, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_REQUIRE_HTTPS = True
    response = register(api_client, receiver.url)
    assert response.status_code == 400 and "https://" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [{}, {"url": 5}, {"url": None}, {"url": "http://127.0.0.1/x", "secret": "mine"}, ["http://127.0.0.1/x"]],
    ids=["missing", "number", "null", "unknown field", "not an object"],
)
def test_bad_bodies_are_refused(api_client, allow_private, body):
    response = api_client.post(URL, body, format="json")
    assert response.status_code == 400 and error_code(response) == "invalid_request", response.content
    assert not WebhookEndpoint.objects.exists()


def test_the_same_url_twice_is_a_conflict(api_client, receiver, allow_private):
    assert register(api_client, receiver.url).status_code == 201
    response = register(api_client, receiver.url)
    assert response.status_code == 409 and error_code(response) == "conflict"


def test_at_most_the_configured_number_of_endpoints(api_client, receiver, allow_private, settings):
    settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 2
    assert register(api_client, receiver.url + "&n=1").status_code == 201
    assert register(api_client, receiver.url + "&n=2").status_code == 201
    response = register(api_client, receiver.url + "&n=3")
    assert response.status_code == 409 and error_code(response) == "too_many_webhooks"


@pytest.mark.parametrize("endpoint_id", ["abc", "-1", "1.5", "\uff11", "9" * 30])
def test_odd_ids_are_not_found(api_client, endpoint_id):
    response = api_client.delete(f"{URL}/{endpoint_id}")
    assert response.status_code == 404 and error_code(response) == "not_found"
