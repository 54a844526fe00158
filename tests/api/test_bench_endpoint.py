"""The benchmark's bare endpoint (transfers/api/bench.py): off by default, authenticated like the API."""

from __future__ import annotations

import pytest
from rest_framework.test import APIRequestFactory

from transfers.api.bench import BareView
from transfers.models import Transfer

pytestmark = pytest.mark.django_db

BARE_URL = "/api/v1/bench/bare"


def test_the_bare_endpoint_is_not_routed_unless_bench_endpoints_is_on(api_client, settings):
    assert settings.BENCH_ENDPOINTS is False
    assert api_client.post(BARE_URL, {"n": 1}, format="json").status_code == 404


def test_the_bare_endpoint_answers_202_and_changes_nothing(api_key, bus):
    request = APIRequestFactory().post(BARE_URL, {"n": 1, "m": 2}, format="json", HTTP_X_API_KEY=api_key)
    response = BareView.as_view()(request)
    assert response.status_code == 202
    assert response.data == {"ok": True, "fields": 2}
    assert Transfer.objects.count() == 0
    assert bus.published == []


def test_the_bare_endpoint_needs_a_key():
    request = APIRequestFactory().post(BARE_URL, {"n": 1}, format="json")
    assert BareView.as_view()(request).status_code == 401


def test_the_bare_endpoint_is_not_in_the_openapi_schema(anonymous_client):
    schema = anonymous_client.get("/api/schema/?format=json").json()
    assert not any("bench" in path for path in schema["paths"])
