"""/api/schema/ and /api/docs/: public, valid, accurate, and served without any CDN."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("post", "/api/v1/user/internal_transfer"): {"202", "400", "401", "403", "409", "413", "415", "429", "503"},
    ("get", "/api/v1/user/internal_transfer/{request_id}"): {"200", "401", "403", "404", "429", "503"},
    ("get", "/api/v1/user/internal_transfers"): {"200", "400", "401", "403", "429", "503"},
    ("get", "/api/v1/user/balances"): {"200", "401", "403", "429", "503"},
    ("post", "/api/v1/user/webhooks"): {"201", "400", "401", "403", "409", "429", "503"},
    ("get", "/api/v1/user/webhooks"): {"200", "401", "403", "429", "503"},
    ("delete", "/api/v1/user/webhooks/{endpoint_id}"): {"204", "401", "403", "404", "429", "503"},
}


@pytest.fixture
def openapi(anonymous_client) -> dict:
    response = anonymous_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    return response.json()


def test_schema_is_public_and_valid(anonymous_client):
    response = anonymous_client.get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    # Generation is clean: no view, field or authenticator the generator had to guess about.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=io.StringIO())


def test_schema_with_a_bad_key_is_still_served(db):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_X_API_KEY="garbage")
    assert client.get("/api/schema/").status_code == 200


def test_every_operation_and_its_answers(openapi):
    paths = openapi["paths"]
    found = {(method, path): set(op["responses"]) for path, ops in paths.items() for method, op in ops.items()}
    assert found == OPERATIONS
    for (method, path), _ in OPERATIONS.items():
        operation = paths[path][method]
        assert operation["security"] == [{"ApiKeyAuth": []}]
        for status, answer in operation["responses"].items():
            if status == "204":
                assert "content" not in answer, (method, path)
                continue
            schema = answer["content"]["application/json"]["schema"]
            if not status.startswith("2"):
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
                assert answer["description"], (method, path, status)


def test_api_key_security_scheme(openapi):
    assert openapi["components"]["securitySchemes"] == {
        "ApiKeyAuth": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": openapi["components"]["securitySchemes"]["ApiKeyAuth"]["description"],
        }
    }


def test_error_component(openapi):
    schemas = openapi["components"]["schemas"]
    assert schemas["Error"]["required"] == ["error"]
    assert schemas["Error"]["additionalProperties"] is False
    assert schemas["ErrorDetail"]["required"] == ["code", "message"]
    assert schemas["ErrorDetail"]["additionalProperties"] is False


def test_request_body_says_amounts_and_ids_are_strings(openapi):
    operation = openapi["paths"]["/api/v1/user/internal_transfer"]["post"]
    assert operation["requestBody"]["required"] is True
    assert list(operation["requestBody"]["content"]) == ["application/json"]
    body = openapi["components"]["schemas"]["CreateTransfer"]
    assert body["additionalProperties"] is False
    assert sorted(body["required"]) == ["amount", "from_account", "to_account"]
    amount = body["properties"]["amount"]
    assert amount["type"] == "string"
    assert re.fullmatch(amount["pattern"], "12.5") and not re.fullmatch(amount["pattern"], "1e3")
    client_id = body["properties"]["client_transfer_id"]
    assert client_id["type"] == "string" and client_id["nullable"] is True
    account = openapi["components"]["schemas"]["AccountRef"]
    assert account["additionalProperties"] is False
    assert openapi["components"]["schemas"]["AccountTypeEnum"]["enum"] == ["funding", "spot"]


def test_transfer_representation(openapi):
    transfer = openapi["components"]["schemas"]["Transfer"]
    assert transfer["additionalProperties"] is False
    assert sorted(transfer["required"]) == sorted(transfer["properties"]) == sorted(
        ["request_id", "client_transfer_id", "from_account", "to_account", "amount", "status", "error_message",
         "created_at", "updated_at"]
    )
    assert transfer["properties"]["request_id"]["type"] == "string"
    assert transfer["properties"]["amount"]["type"] == "string"
    created = openapi["paths"]["/api/v1/user/internal_transfer"]["post"]["responses"]["202"]
    assert created["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Transfer"}
    assert "`pending`" in created["description"] and "requesting" not in created["description"]
    status_ref = transfer["properties"]["status"].get("$ref") or transfer["properties"]["status"]["allOf"][0]["$ref"]
    status_name = status_ref.rsplit("/", 1)[-1]
    assert openapi["components"]["schemas"][status_name]["enum"] == ["pending", "success", "failed"]
    assert created["headers"]["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}


def test_list_query_parameters(openapi):
    parameters = {
        p["name"]: p for p in openapi["paths"]["/api/v1/user/internal_transfers"]["get"]["parameters"]
    }
    assert set(parameters) == {"asset", "status", "limit", "cursor"}
    assert all(p["in"] == "query" and not p.get("required") for p in parameters.values())
    assert parameters["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}
    assert parameters["status"]["schema"]["enum"] == ["pending", "success", "failed"]  # never `requesting`


def test_swagger_ui_is_public_and_has_no_cdn(anonymous_client):
    response = anonymous_client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle" in html  # served: tests/e2e
    assert "/api/schema/" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "the docs page loads something from another host"
