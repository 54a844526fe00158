"""Versioned JSON messages: encoding, decoding, and refusing anything malformed."""

import dataclasses
import json

import pytest

from transfer_site.messages import (
    BalanceEvent,
    BalanceOperation,
    BalanceOperationStatus,
    BalanceOperationType,
    MalformedMessage,
    TransferRequested,
    decode,
)

BIG = 2**63 - 1  # above 2**53: a float would lose it

EXAMPLES = [
    TransferRequested(request_id=BIG, user_id=2**60 + 1, asset_id=1, amount=2**53 + 1, direction="funding_to_spot"),
    BalanceOperation(ref_id=BIG, operation="TransferIn", user_id=42, asset_id=2, amount=2**53 + 1),
    BalanceOperation(ref_id=5, operation="TransferOut", user_id=42, asset_id=3, amount=1),
    BalanceOperation(ref_id=6, operation="Deposit", user_id=42, asset_id=1, amount=10**18),
    BalanceEvent(
        ref_id=BIG, operation="TransferIn", user_id=42, asset_id=1, amount=2**53 + 1, status="applied", reason=None
    ),
    BalanceEvent(
        ref_id=7,
        operation="TransferOut",
        user_id=42,
        asset_id=1,
        amount=3,
        status="rejected",
        reason="insufficient balance",
    ),
]

INT_FIELDS = {
    "TransferRequested": ["request_id", "user_id", "asset_id", "amount"],
    "BalanceOperation": ["ref_id", "user_id", "asset_id", "amount"],
    "BalanceEvent": ["ref_id", "user_id", "asset_id", "amount"],
}


def field_names(message) -> list[str]:
    return [field.name for field in dataclasses.fields(message)]


def body_of(message) -> dict:
    return json.loads(message.to_json())


def encoded(body: dict) -> bytes:
    return json.dumps(body).encode()


def valid_body(type_name: str) -> dict:
    return body_of(next(m for m in EXAMPLES if m.TYPE == type_name))


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: f"{m.TYPE}-{getattr(m, 'operation', '')}")
def test_round_trip(message):
    assert decode(message.to_json()) == message


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: f"{m.TYPE}-{getattr(m, 'operation', '')}")
def test_encoded_form_has_type_version_and_ints_as_strings(message):
    raw = message.to_json()
    assert isinstance(raw, bytes)
    body = json.loads(raw)
    assert body["type"] == message.TYPE
    assert body["version"] == 1
    for name in INT_FIELDS[message.TYPE]:
        assert body[name] == str(getattr(message, name))
        assert isinstance(body[name], str)
    # Nothing else is in the body besides the fields and the envelope.
    assert set(body) == {"type", "version", *field_names(message)}


def test_exact_wire_format_of_a_balance_event():
    event = BalanceEvent(
        ref_id=2**62, operation="TransferIn", user_id=9, asset_id=1, amount=125, status="applied", reason=None
    )
    assert event.to_json() == (
        b'{"type":"BalanceEvent","version":1,"ref_id":"4611686018427387904","operation":"TransferIn",'
        b'"user_id":"9","asset_id":"1","amount":"125","status":"applied","reason":null}'
    )


def test_enum_values_encode_as_their_strings():
    operation = BalanceOperation(
        ref_id=1, operation=BalanceOperationType.TRANSFER_OUT, user_id=1, asset_id=1, amount=1
    )
    assert body_of(operation)["operation"] == "TransferOut"
    event = BalanceEvent(
        ref_id=1,
        operation=BalanceOperationType.DEPOSIT,
        user_id=1,
        asset_id=1,
        amount=1,
        status=BalanceOperationStatus.REJECTED,
        reason="x",
    )
    assert body_of(event)["status"] == "rejected"
    assert decode(event.to_json()) == event


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"{", b'{"type": "BalanceEvent",}', b"\xff\xfe\xfd", b"{'type': 'x'}"]
)
def test_bad_json_is_malformed(raw):
    with pytest.raises(MalformedMessage, match="not JSON"):
        decode(raw)


@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b"null", b"1", b'"BalanceEvent"', b"true", b"1e999"])
def test_json_that_is_not_an_object_is_malformed(raw):
    with pytest.raises(MalformedMessage, match="not a JSON object"):
        decode(raw)


def test_deeply_nested_json_is_malformed_not_a_crash():
    # A poison message must go to the dead-letter topic, not block its partition.
    with pytest.raises(MalformedMessage):
        decode(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("type_value", ["Unknown", "balanceoperation", "", None, 1])
def test_unknown_type_is_malformed(type_value):
    body = valid_body("BalanceOperation")
    body["type"] = type_value
    with pytest.raises(MalformedMessage, match="unknown message type"):
        decode(encoded(body))


def test_missing_type_is_malformed():
    body = valid_body("BalanceOperation")
    del body["type"]
    with pytest.raises(MalformedMessage, match="unknown message type"):
        decode(encoded(body))


@pytest.mark.parametrize("type_value", [[], {}, ["BalanceOperation"]])
def test_unhashable_type_is_malformed_not_a_crash(type_value):
    body = valid_body("BalanceOperation")
    body["type"] = type_value
    with pytest.raises(MalformedMessage):
        decode(encoded(body))


@pytest.mark.parametrize("type_name", sorted(INT_FIELDS))
@pytest.mark.parametrize("version", [0, 2, "1", None, -1, 1.5, [1]])
def test_wrong_version_is_malformed(type_name, version):
    body = valid_body(type_name)
    body["version"] = version
    with pytest.raises(MalformedMessage, match="version"):
        decode(encoded(body))


@pytest.mark.parametrize("type_name", sorted(INT_FIELDS))
def test_boolean_version_is_malformed(type_name):
    # JSON true is not the number 1, even though Python's True == 1.
    body = valid_body(type_name)
    body["version"] = True
    with pytest.raises(MalformedMessage, match="version"):
        decode(encoded(body))


@pytest.mark.parametrize("type_name", sorted(INT_FIELDS))
def test_missing_version_is_malformed(type_name):
    body = valid_body(type_name)
    del body["version"]
    with pytest.raises(MalformedMessage, match="version None is not supported"):
        decode(encoded(body))


@pytest.mark.parametrize(
    ("type_name", "field"),
    [
        (message.TYPE, field)
        for message in {m.TYPE: m for m in EXAMPLES}.values()
        for field in field_names(message)
    ],
)
def test_missing_field_is_malformed(type_name, field):
    body = valid_body(type_name)
    del body[field]
    with pytest.raises(MalformedMessage, match=f"lacks '{field}'"):
        decode(encoded(body))


@pytest.mark.parametrize(("type_name", "field"), [(t, f) for t, fields in INT_FIELDS.items() for f in fields])
def test_int_sent_as_json_number_is_malformed(type_name, field):
    body = valid_body(type_name)
    body[field] = int(body[field])
    with pytest.raises(MalformedMessage, match=rf"{type_name}\.{field} must be an unsigned 64-bit integer string"):
        decode(encoded(body))


@pytest.mark.parametrize(
    "value", ["1.5", "1e3", "abc", "", "-", " 1", "1 ", "0x10", "\u0661\u0662", "1-", None, True, 1.0]
)
def test_int_field_that_is_not_an_integer_string_is_malformed(value):
    body = valid_body("BalanceOperation")
    body["ref_id"] = value
    with pytest.raises(MalformedMessage, match="must be an unsigned 64-bit integer string"):
        decode(encoded(body))


@pytest.mark.parametrize("value", ["--5", "-" * 10 + "1", "9" * 5000])
def test_garbage_integer_strings_are_malformed_not_a_crash(value):
    # Anything decode() lets escape except MalformedMessage makes the consumer
    # retry the batch forever instead of dead-lettering the message.
    body = valid_body("BalanceOperation")
    body["ref_id"] = value
    with pytest.raises(MalformedMessage):
        decode(encoded(body))


@pytest.mark.parametrize("value", [str(2**64), str(10**30), "-1"])
def test_ids_outside_the_unsigned_64_bit_range_are_malformed(value):
    # Ids are u64 everywhere (snowflakes, user ids, ledger references); a value
    # outside it cannot be stored and would block the partition downstream.
    body = valid_body("BalanceOperation")
    body["ref_id"] = value
    with pytest.raises(MalformedMessage):
        decode(encoded(body))


@pytest.mark.parametrize("value", [1, None, ["x"], {"a": 1}, True])
def test_str_field_that_is_not_a_string_is_malformed(value):
    body = valid_body("BalanceOperation")
    body["operation"] = value
    with pytest.raises(MalformedMessage, match=r"BalanceOperation\.operation must be a string"):
        decode(encoded(body))


@pytest.mark.parametrize("value", [1, ["x"], {"a": 1}, False])
def test_optional_str_field_of_the_wrong_type_is_malformed(value):
    body = valid_body("BalanceEvent")
    body["reason"] = value
    with pytest.raises(MalformedMessage, match=r"BalanceEvent\.reason must be a string or null"):
        decode(encoded(body))


@pytest.mark.parametrize("type_name", ["BalanceOperation", "BalanceEvent"])
@pytest.mark.parametrize("operation", ["Withdraw", "transferin", "TRANSFER_IN", ""])
def test_unknown_operation_is_malformed(type_name, operation):
    body = valid_body(type_name)
    body["operation"] = operation
    with pytest.raises(MalformedMessage, match="unknown operation"):
        decode(encoded(body))


@pytest.mark.parametrize("status", ["ok", "APPLIED", "pending", ""])
def test_unknown_event_status_is_malformed(status):
    body = valid_body("BalanceEvent")
    body["status"] = status
    with pytest.raises(MalformedMessage, match="unknown status"):
        decode(encoded(body))


@pytest.mark.parametrize("type_name", ["BalanceOperation", "BalanceEvent"])
@pytest.mark.parametrize("amount", ["0", "-1", "-0", "-" + str(2**62)])
def test_non_positive_amount_is_malformed(type_name, amount):
    body = valid_body(type_name)
    body["amount"] = amount
    with pytest.raises(MalformedMessage, match="amount"):
        decode(encoded(body))


def test_unknown_extra_fields_are_ignored_for_forward_compatibility():
    body = valid_body("BalanceEvent")
    body["trace_id"] = "abc"
    assert decode(encoded(body)) == next(m for m in EXAMPLES if m.TYPE == "BalanceEvent")


def test_malformed_message_is_a_value_error():
    assert issubclass(MalformedMessage, ValueError)
