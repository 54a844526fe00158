"""Request shapes and the public representation of a transfer and balances."""

from __future__ import annotations

import copy

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from transfers.amounts import format_amount
from transfers.domain import AccountType, PublicStatus, TransferRecord
from transfers.selectors import AssetBalance

# The contract as OpenAPI says it (/api/schema/); the service enforces each rule.
AMOUNT_SCHEMA = {
    "type": "string",
    "pattern": r"^[0-9]+(\.[0-9]+)?$",
    "maxLength": 64,
    "description": "A positive decimal string in whole units, at most the asset's decimals; never a JSON number.",
    "example": "12.5",
}
CLIENT_TRANSFER_ID_SCHEMA = {
    "type": "string",
    "nullable": True,
    "pattern": "^[A-Za-z0-9_-]{1,64}$",
    "minLength": 1,
    "maxLength": 64,
    "description": "Your idempotency key: the same id with the same body returns the same transfer.",
    "example": "my-first-transfer",
}


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know: a typo must not pass silently."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # DRF deep-copies every declared field for every instance, building each anew from its
        # arguments: about a third of the serializer's CPU on the transfer request (0.27 -> 0.16 ms
        # measured alone). Nothing changes these fields per instance, so a shallow copy each is
        # enough: bind() then sets the copy's name and parent, and the declared field stays unbound.
        # A field with a `child` (ListField, DictField, many=True) binds that child too, which a
        # shallow copy would share between instances: such a field is deep-copied as DRF does.
        fields = {}
        for name, declared in self._declared_fields.items():
            if hasattr(declared, "child"):
                fields[name] = copy.deepcopy(declared)
                continue
            field = copy.copy(declared)
            field.__dict__.pop("fields", None)  # a nested serializer builds its own bound fields
            fields[name] = field
        return fields

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A JSON string taken as sent: no numbers turned into text, no trimming."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("trim_whitespace", False)  # " funding" is not "funding"
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") would fail in the database driver
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "enum": [t.value for t in AccountType]})
class AccountTypeField(StrictCharField):
    pass  # checked by the service: invalid_account_type


class RawJSONField(serializers.JSONField):
    """Any JSON value, passed on as parsed: the service says what is wrong with it.

    (JSONField would re-encode it first, and call 1e999, which parses as
    infinity, "not valid JSON" instead of "not a decimal string".)
    """

    def to_internal_value(self, data):
        return data


@extend_schema_field(AMOUNT_SCHEMA)
class AmountField(RawJSONField):
    pass  # checked by the service: invalid_amount


@extend_schema_field(CLIENT_TRANSFER_ID_SCHEMA)
class ClientTransferIdField(RawJSONField):
    pass  # checked by the service: invalid_client_transfer_id


class AssetCodeField(StrictCharField):
    """An asset code; its schema (transfers/api/schema.py) lists the known ones. Checked by the service:
    unknown_asset."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("max_length", 16)
        super().__init__(**kwargs)


class AccountRefSerializer(StrictSerializer):
    """One side of a transfer: a wallet and the asset in it."""

    account_type = AccountTypeField()
    asset = AssetCodeField(help_text="Asset code, for example USDT.")


class CreateTransferSerializer(StrictSerializer):
    """A transfer to make. Unknown fields, at any level, are refused."""

    from_account = AccountRefSerializer()
    to_account = AccountRefSerializer()
    # Kept as raw JSON: the service checks them and says precisely what is
    # wrong with anything else (invalid_amount, invalid_client_transfer_id).
    amount = AmountField()
    client_transfer_id = ClientTransferIdField(required=False, allow_null=True)


@extend_schema_field({"type": "string", "enum": [s.value for s in PublicStatus]})
class TransferStatusField(StrictCharField):
    pass  # checked by the selector: invalid_status


class DigitsIntegerField(serializers.IntegerField):
    """An integer written in ASCII digits: int() would also take fullwidth digits, " 12" and "+12"."""

    def to_internal_value(self, data):
        if isinstance(data, str) and not (data.isascii() and data.isdigit()):
            self.fail("invalid")
        return super().to_internal_value(data)


class CursorField(StrictCharField):
    pass  # its schema: the positions a store takes (transfers/api/schema.py); checked there: invalid_cursor


class TransferListQuerySerializer(StrictSerializer):
    asset = AssetCodeField(required=False, help_text="Only transfers of this asset.")
    status = TransferStatusField(
        required=False, help_text="Only transfers in this status; `pending` is every one not finished yet."
    )
    limit = DigitsIntegerField(required=False, default=50, min_value=1, max_value=100, help_text="Page size.")
    cursor = CursorField(
        max_length=32, required=False, help_text="`next_cursor` of the previous page; omit for the newest."
    )


def transfer_representation(record: TransferRecord, decimals: int) -> dict:
    """A transfer as users see it (the API's answers, webhook events): statuses are PublicStatus."""
    return {
        "request_id": str(record.request_id),
        "client_transfer_id": record.client_transfer_id,
        "from_account": {"account_type": record.from_account.value, "asset": record.asset_code},
        "to_account": {"account_type": record.to_account.value, "asset": record.asset_code},
        "amount": format_amount(record.amount, decimals),
        "status": PublicStatus.of(record.status).value,
        "error_message": record.error_message,
        "created_at": record.created_at_ms,
        "updated_at": record.updated_at_ms,
    }


def balance_representation(balance: AssetBalance) -> dict:
    decimals = balance.asset.decimals
    return {
        "asset": balance.asset.code,
        "funding": {
            "available": format_amount(balance.funding_available, decimals),
            "frozen": format_amount(balance.funding_frozen, decimals),
        },
        "spot": {
            "available": format_amount(balance.spot_available, decimals),
            "frozen": format_amount(balance.spot_frozen, decimals),
        },
    }
