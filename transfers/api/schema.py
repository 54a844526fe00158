"""OpenAPI description of the API (drf-spectacular): /api/schema/ and /api/docs/.

The representations are built by functions in serializers.py; the serializers
here only describe them, so the schema can say exactly what is answered.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from transfers.api.authentication import HEADER
from transfers.api.serializers import AMOUNT_SCHEMA, CLIENT_TRANSFER_ID_SCHEMA, AccountRefSerializer
from transfers.domain import PublicStatus

DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
ID_PATTERN = r"^[0-9]{1,19}$"


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

CREATE_ERRORS = _by_status({
    **COMMON_ERRORS,
    400: _error(
        "`invalid_json` (not JSON, NaN/Infinity, duplicate keys, nested too deep), `invalid_request` (shape, "
        "types, unknown fields), `invalid_account_type`, `asset_mismatch`, `same_account`, `unknown_asset`, "
        "`asset_disabled`, `invalid_amount`, `invalid_client_transfer_id`."
    ),
    409: _error("`conflict`: this `client_transfer_id` was used for a different transfer."),
    413: _error("`payload_too_large`: the body is larger than `MAX_REQUEST_BYTES` (16 KiB)."),
    415: _error("`unsupported_media_type`: the body must be `application/json`."),
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
