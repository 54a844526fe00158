"""OpenAPI description of the API (drf-spectacular): /api/schema/ and /api/docs/.

The representations are built by functions in serializers.py; the serializers
here only describe them, so the schema can say exactly what is answered.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from transfers.amounts import MAX_AMOUNT_CHARS
from transfers.api.authentication import HEADER
from transfers.api.serializers import AMOUNT_SCHEMA, CLIENT_TRANSFER_ID_SCHEMA, AccountRefSerializer
from transfers.domain import Direction, PublicStatus
from transfers.models import ASSET_CODE_PATTERN, Asset

logger = logging.getLogger(__name__)

DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
ID_PATTERN = r"^[0-9]{1,19}$"
MAX_ID = (1 << 63) - 1


# --- What the service accepts, as patterns ------------------------------------------


def _below(number: str, *, leading_zero: bool) -> list[str]:
    """Regex alternatives for the digit strings as long as `number` and smaller than it."""
    alternatives = []
    for i, digit in enumerate(number):
        low, high = (0 if i or leading_zero else 1), int(digit) - 1
        if high >= low:
            rest = len(number) - i - 1
            alternatives.append(number[:i] + f"[{low}-{high}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    return alternatives


def cursor_pattern() -> str:
    """Exactly the cursors a store takes: 1-19 ASCII digits, at most 2**63 - 1 (a position, not a secret)."""
    widest = [*_below(str(MAX_ID), leading_zero=True), str(MAX_ID)]
    return f"^(?:[0-9]{{1,18}}|{'|'.join(widest)})$"


def amount_pattern(decimals: int, maximum_minor: int) -> str:
    """The amounts parse_amount takes for this asset: positive, at most `decimals` places (trailing
    zeros aside), leading zeros allowed, at most the maximum. The schema pairs it with
    `maxLength: MAX_AMOUNT_CHARS`; together they say exactly what is taken.

    Exact when the maximum is whole units (every seeded asset); otherwise its last fraction of a unit
    is left out (a few amounts the service takes, none it refuses).
    """
    whole = maximum_minor // 10**decimals
    fraction = rf"(?:\.[0-9]{{1,{decimals}}}0*)?" if decimals else r"(?:\.0+)?"
    cases = []
    if whole >= 1:
        smaller = [f"[1-9][0-9]{{0,{len(str(whole)) - 2}}}"] if whole >= 10 else []
        smaller += _below(str(whole), leading_zero=False)
        if smaller:
            cases.append(f"0*(?:{'|'.join(smaller)}){fraction}")  # 1 <= whole units < the maximum's
        cases.append(rf"0*{whole}(?:\.0+)?")  # the maximum itself
    if decimals:
        cases.append(rf"0+\.[0-9]{{0,{decimals - 1}}}[1-9]0*")  # under one unit, not zero
    return f"^(?:{'|'.join(cases)})$"


def schema_assets() -> list[Asset] | None:
    """The assets as the schema is generated, or None when the database does not answer.

    The schema is public and must be served even then: it says less (codes by pattern only).
    """
    try:
        return list(Asset.objects.order_by("code"))
    except (DatabaseError, RuntimeError) as error:  # RuntimeError: no database access at all (a test run)
        logger.warning("schema without the asset list: %r", error)
        return None


ASSET_DESCRIPTION = (
    "Asset code: 1-16 capitals or digits. The assets are data (support adds and disables them): the `enum` "
    "lists the ones this server has when the schema is generated (fetch it again to see new ones); a code "
    "it does not list is `400 unknown_asset`."
)


def asset_code_schema(assets: list[Asset] | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "pattern": ASSET_CODE_PATTERN, "description": ASSET_DESCRIPTION}
    if assets:
        schema["enum"] = [asset.code for asset in assets]
    return schema


CREATE_RULES = (
    "One side is `funding` and the other `spot` (`same_account` otherwise), both sides hold the same asset "
    "(`asset_mismatch`), the asset is enabled (`asset_disabled`), and the amount is positive with at most the "
    "asset's decimals and at most its largest single transfer (`invalid_amount`). Each `oneOf` alternative is "
    "one direction with one enabled asset, its amounts by pattern. Whether the wallet holds the amount is "
    "decided by settlement, not here: the transfer then ends `failed` (\"insufficient balance\")."
)


def create_transfer_request_schema(assets: list[Asset] | None) -> dict[str, Any]:
    """The create's body: one alternative per direction and enabled asset (per direction when the
    assets are not known)."""
    enabled = [asset for asset in assets or [] if asset.transfers_enabled]
    sides = [(direction, asset) for direction in Direction for asset in enabled] or [
        (direction, None) for direction in Direction
    ]
    return {  # no top-level "type": each alternative is an object (and drf-spectacular drops bare objects)
        "description": CREATE_RULES,
        "oneOf": [_create_alternative(direction, asset) for direction, asset in sides],
    }


def _create_alternative(direction: Direction, asset: Asset | None) -> dict[str, Any]:
    if asset is None:
        asset_schema = asset_code_schema(None)
        amount = {**AMOUNT_SCHEMA, "maxLength": MAX_AMOUNT_CHARS}
    else:
        asset_schema = {"type": "string", "enum": [asset.code]}
        amount = {
            **AMOUNT_SCHEMA,
            "pattern": amount_pattern(asset.decimals, asset.maximum_transfer_minor),
            "maxLength": MAX_AMOUNT_CHARS,
            "description": f"{AMOUNT_SCHEMA['description']} {asset.code}: {asset.decimals} decimals.",
        }

    def account(account_type: str) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"account_type": {"type": "string", "enum": [account_type]}, "asset": asset_schema},
            "required": ["account_type", "asset"],
            "additionalProperties": False,
        }

    return {
        "title": f"{direction.value}" + (f" {asset.code}" if asset else ""),
        "type": "object",
        "properties": {
            "from_account": account(direction.source.value),
            "to_account": account(direction.destination.value),
            "amount": amount,
            "client_transfer_id": CLIENT_TRANSFER_ID_SCHEMA,
        },
        "required": ["from_account", "to_account", "amount"],
        "additionalProperties": False,
    }


class CreateTransferRequestScheme(OpenApiSerializerExtension):
    """The create's body as the service takes it, from the Asset table as the schema is generated."""

    target_class = "transfers.api.serializers.CreateTransferSerializer"

    def map_serializer(self, auto_schema, direction) -> dict[str, Any]:
        return create_transfer_request_schema(schema_assets())


class AssetCodeScheme(OpenApiSerializerFieldExtension):
    """An asset code: the pattern, and in requests the known codes (answers keep to the pattern:
    an asset added after the schema was fetched must not fail a client's check of an answer)."""

    target_class = "transfers.api.serializers.AssetCodeField"

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        if direction == "response":
            return {"type": "string", "pattern": ASSET_CODE_PATTERN}
        return asset_code_schema(schema_assets())


class CursorScheme(OpenApiSerializerFieldExtension):
    target_class = "transfers.api.serializers.CursorField"

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        return {"type": "string", "pattern": cursor_pattern(), "maxLength": 19}


class LinkedAutoSchema(AutoSchema):
    """An operation whose answers carry OpenAPI links (`links`: status code -> links), so a client or a
    stateful test can follow a created thing to where it is read; `extend_schema` has no place for them."""

    links: dict[int, dict[str, dict[str, Any]]] = {}

    def _get_response_for_code(self, serializer, status_code, media_types=None, direction="response"):
        response = super()._get_response_for_code(serializer, status_code, media_types, direction)
        if int(status_code) in self.links:
            response["links"] = self.links[int(status_code)]
        return response


class CreateTransferAutoSchema(LinkedAutoSchema):
    """The create: its 202 links to the transfer it made and to the history. Its body is required
    (drf-spectacular reads that from a top-level `required`, which the `oneOf` has not)."""

    links = {
        202: {
            "GetTransfer": {
                "operationId": "get_internal_transfer",
                "parameters": {"request_id": "$response.body#/request_id"},
                "description": "The transfer just made: poll it until `success` or `failed`.",
            },
            "ListTransfersOfTheAsset": {
                "operationId": "list_internal_transfers",
                "parameters": {"asset": "$response.body#/from_account/asset", "status": "$response.body#/status"},
                "description": "The history, newest first, where this transfer is listed.",
            },
        }
    }

    def _get_request_body(self, direction="request"):
        request_body = super()._get_request_body(direction)
        if request_body is not None:
            request_body["required"] = True
        return request_body


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Tells the schema how ApiKeyAuthentication reads the key: the `X-API-Key` header."""

    target_class = "transfers.api.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": HEADER,
            "description": "`itk_<prefix>_<secret>` from `manage.py create_api_key`; the user comes from the key. "
            "Requests may also be signed (`X-API-Timestamp`, `X-API-Signature`; see the README), which the "
            "server can require.",
        }


class TransferSerializer(serializers.Serializer):
    request_id = serializers.RegexField(ID_PATTERN, help_text="Snowflake id, as a decimal string.")
    client_transfer_id = serializers.CharField(allow_null=True, help_text=CLIENT_TRANSFER_ID_SCHEMA["description"])
    from_account = AccountRefSerializer()
    to_account = AccountRefSerializer()
    amount = serializers.RegexField(AMOUNT_SCHEMA["pattern"], help_text="Decimal string in whole units.")
    status = serializers.ChoiceField(
        choices=[s.value for s in PublicStatus],
        help_text="`pending` until it is settled, then `success` or `failed` (final).",
    )
    error_message = serializers.CharField(allow_null=True, help_text="Why a `failed` transfer failed; else null.")
    created_at = serializers.IntegerField(min_value=0, max_value=2**63 - 1, help_text="Milliseconds since the epoch.")
    updated_at = serializers.IntegerField(min_value=0, max_value=2**63 - 1, help_text="Milliseconds since the epoch.")


class TransferPageSerializer(serializers.Serializer):
    items = TransferSerializer(many=True, help_text="Newest first.")
    next_cursor = serializers.RegexField(
        ID_PATTERN, allow_null=True, help_text="Pass as `cursor` for the next page; null on the last page."
    )


class WalletBalanceSerializer(serializers.Serializer):
    available = serializers.RegexField(DECIMAL_PATTERN)
    frozen = serializers.RegexField(DECIMAL_PATTERN)


class AssetBalanceSerializer(serializers.Serializer):
    asset = serializers.CharField()
    funding = WalletBalanceSerializer(help_text="`frozen`: reserved by funding to spot transfers in flight.")
    spot = WalletBalanceSerializer()


class BalancesSerializer(serializers.Serializer):
    balances = AssetBalanceSerializer(many=True, help_text="One row per asset, every asset listed.")


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable; see the README for the list.")
    message = serializers.CharField(help_text="For people; may change.")


class ErrorSerializer(serializers.Serializer):
    """Every 4xx answer has this shape, and nothing was stored or published."""

    error = ErrorDetailSerializer()


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


def _by_status(responses: dict[int, OpenApiResponse]) -> dict[int, OpenApiResponse]:
    return dict(sorted(responses.items()))


UNAUTHORIZED = _error(
    "`unauthorized`: no, unknown or revoked `X-API-Key` (header `WWW-Authenticate: X-API-Key`); for a signed "
    "request `signature_required`, `invalid_signature`, `timestamp_outside_window` or `signature_replayed`."
)
FORBIDDEN = _error("`forbidden`: the key may not do this (a read-only key creating a transfer).")
RATE_LIMITED = _error("`rate_limited`: too many requests for this key; retry later.")
UNAVAILABLE = _error("`unavailable`: a shared dependency (the cache, the transfer store) is down; retry shortly "
                     "(with the same client_transfer_id: a create that was stored is answered again, not repeated).")
COMMON_ERRORS = {401: UNAUTHORIZED, 403: FORBIDDEN, 429: RATE_LIMITED, 503: UNAVAILABLE}

# Any request with a body (the parser's refusals, before the view).
BODY_ERRORS = {
    413: _error("`payload_too_large`: the body is larger than `MAX_REQUEST_BYTES` (16 KiB)."),
    415: _error("`unsupported_media_type`: the body must be `application/json`."),
}
CREATE_ERRORS = _by_status({
    **COMMON_ERRORS,
    **BODY_ERRORS,
    400: _error(
        "`invalid_json` (not JSON, NaN/Infinity, duplicate keys, nested too deep), `invalid_request` (shape, "
        "types, unknown fields), `invalid_account_type`, `asset_mismatch`, `same_account`, `unknown_asset`, "
        "`asset_disabled`, `invalid_amount`, `invalid_client_transfer_id`."
    ),
    409: _error("`conflict`: this `client_transfer_id` was used for a different transfer."),
})
DETAIL_ERRORS = _by_status({**COMMON_ERRORS, 404: _error("`not_found`: no such transfer, or another user's.")})
LIST_ERRORS = _by_status({
    **COMMON_ERRORS,
    400: _error(
        "`invalid_request` (unknown parameter, bad `limit`), `unknown_asset`, `invalid_status`, `invalid_cursor`."
    ),
})

REQUEST_ID = OpenApiParameter(
    "request_id",
    str,
    OpenApiParameter.PATH,
    pattern=ID_PATTERN,
    description="`request_id` of the transfer; anything else is `404 not_found`.",
)
IDEMPOTENT_REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    str,
    OpenApiParameter.HEADER,
    response=[202],
    enum=["true"],
    description="`true` when this `client_transfer_id` was sent before with the same body: the transfer is the "
    "earlier one, and nothing new was stored or published.",
)


def forbid_additional_properties(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: every object is exact, in both directions.

    Requests with unknown fields are refused (StrictSerializer), and answers
    carry exactly the listed fields, so the schema says so.
    """
    for component in result.get("components", {}).get("schemas", {}).values():
        if component.get("type") == "object" and "properties" in component:
            component.setdefault("additionalProperties", False)
    return result
