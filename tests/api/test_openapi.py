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
    ("post", "/api/v1/user/webhooks"): {"201", "400", "401", "403", "409", "413", "415", "429", "503"},
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
    assert "same_account" in body["description"] and "asset_mismatch" in body["description"]
    for alternative in body["oneOf"]:
        assert alternative["additionalProperties"] is False
        assert sorted(alternative["required"]) == ["amount", "from_account", "to_account"]
        amount = alternative["properties"]["amount"]
        assert amount["type"] == "string"
        assert re.fullmatch(amount["pattern"], "12.5") and not re.fullmatch(amount["pattern"], "1e3")
        client_id = alternative["properties"]["client_transfer_id"]
        assert client_id["type"] == "string" and client_id["nullable"] is True
    account = openapi["components"]["schemas"]["AccountRef"]  # as answered
    assert account["additionalProperties"] is False
    assert openapi["components"]["schemas"]["AccountTypeEnum"]["enum"] == ["funding", "spot"]


def test_create_body_is_one_direction_and_one_enabled_asset_per_alternative(openapi):
    """What the service accepts: one side funding and the other spot, both the same enabled asset."""
    from transfers.models import Asset

    Asset.objects.filter(code="ETH").update(transfers_enabled=False)
    openapi = anonymous_schema()
    alternatives = openapi["components"]["schemas"]["CreateTransfer"]["oneOf"]

    def sides(alternative: dict) -> tuple[str, str, str]:
        accounts = [alternative["properties"][side]["properties"] for side in ("from_account", "to_account")]
        (source, source_asset), (destination, destination_asset) = (
            (account["account_type"]["enum"], account["asset"]["enum"]) for account in accounts
        )
        assert len(source) == len(destination) == 1 and source_asset == destination_asset
        return source[0], destination[0], source_asset[0]

    enabled = sorted(Asset.objects.filter(transfers_enabled=True).values_list("code", flat=True))
    assert "ETH" not in enabled
    assert sorted(sides(a) for a in alternatives) == sorted(
        [("funding", "spot", code) for code in enabled] + [("spot", "funding", code) for code in enabled]
    )


def test_asset_codes_are_the_known_ones_in_requests_and_a_pattern_in_answers(openapi):
    from transfers.models import ASSET_CODE_PATTERN, Asset

    history = {p["name"]: p for p in openapi["paths"]["/api/v1/user/internal_transfers"]["get"]["parameters"]}
    asset = history["asset"]["schema"]
    assert asset["pattern"] == ASSET_CODE_PATTERN
    assert asset["enum"] == sorted(Asset.objects.values_list("code", flat=True))  # disabled ones too: listable
    answered = openapi["components"]["schemas"]["AccountRef"]["properties"]["asset"]
    # An asset added after a client fetched the schema must not fail its check of an answer: no enum there.
    assert (answered["type"], answered["pattern"], "enum" in answered) == ("string", ASSET_CODE_PATTERN, False)


def test_the_create_links_to_the_transfer_and_the_history(openapi):
    operations = {
        op["operationId"]: op for ops in openapi["paths"].values() for op in ops.values()
    }
    links = openapi["paths"]["/api/v1/user/internal_transfer"]["post"]["responses"]["202"]["links"]
    assert links["GetTransfer"]["operationId"] == "get_internal_transfer"
    assert links["GetTransfer"]["parameters"] == {"request_id": "$response.body#/request_id"}
    assert links["ListTransfersOfTheAsset"]["operationId"] == "list_internal_transfers"
    registered = openapi["paths"]["/api/v1/user/webhooks"]["post"]["responses"]["201"]["links"]
    assert registered["DeleteEndpoint"]["parameters"] == {"endpoint_id": "$response.body#/id"}
    for link in [*links.values(), *registered.values()]:
        parameters = {p["name"] for p in operations[link["operationId"]].get("parameters", [])}
        assert set(link["parameters"]) <= parameters, link


def anonymous_schema() -> dict:
    from rest_framework.test import APIClient

    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


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
