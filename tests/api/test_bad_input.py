"""Bad input: every refusal is a 4xx in the one error format, and changes nothing.

Each test asserts the status, the error code, that no transfer was stored
and that nothing was published (the `nothing_stored_or_published` fixture).
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.exceptions import RequestDataTooBig
from django.test import RequestFactory

from transfers.api.errors import api_exception_handler, json_bad_request
from transfers.api.parsers import MAX_JSON_DEPTH, BoundedJSONParser, PayloadTooLarge
from transfers.models import Asset

pytestmark = pytest.mark.django_db

URL = "/api/v1/user/internal_transfer"
LIST_URL = "/api/v1/user/internal_transfers"
LIMIT = 16 * 1024  # DATA_UPLOAD_MAX_MEMORY_SIZE (MAX_REQUEST_BYTES) in the settings


def valid(**changes) -> dict:
    data = {
        "from_account": {"account_type": "funding", "asset": "USDT"},
        "to_account": {"account_type": "spot", "asset": "USDT"},
        "amount": "12.5",
    }
    data.update(changes)
    return data


def send(client, raw: str | bytes, content_type: str = "application/json"):
    return client.generic("POST", URL, raw, content_type=content_type)


def send_json(client, data: object):
    return send(client, json.dumps(data))


def assert_error(response, status_code: int, code: str) -> dict:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    payload = response.json()
    assert set(payload) == {"error"}, payload
    assert set(payload["error"]) == {"code", "message"}, payload
    assert payload["error"]["code"] == code, payload
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    return payload["error"]


@pytest.fixture(autouse=True)
def _limit(settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT


# --- not JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "{bad",
        '{"amount": "1",}',  # trailing comma
        "{'amount': '1'}",  # single quotes
        '{"amount": "1"',  # unterminated
        '{"amount": "1"}}',  # trailing garbage
        '{"amount": 01}',  # leading zero
        '{"amount": .5}',
        '{"amount": "1" /* comment */}',
        "nul",
        "\ufeff" + json.dumps(valid()),  # byte order mark
    ],
    ids=["garbage", "trailing_comma", "single_quotes", "unterminated", "trailing_garbage", "leading_zero",
         "bare_fraction", "comment", "truncated_literal", "bom"],
)
def test_malformed_json(api_client, nothing_stored_or_published, raw):
    assert_error(send(api_client, raw), 400, "invalid_json")
    nothing_stored_or_published()


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_are_not_json(api_client, nothing_stored_or_published, token):
    # Python's json reads them; RFC 8259 has no such values.
    raw = json.dumps(valid()).replace('"12.5"', token)
    error = assert_error(send(api_client, raw), 400, "invalid_json")
    assert token in error["message"]
    nothing_stored_or_published()


def test_invalid_utf8_is_not_json(api_client, nothing_stored_or_published):
    raw = json.dumps(valid()).encode().replace(b"12.5", b"\xff\xfe")
    assert_error(send(api_client, raw), 400, "invalid_json")
    nothing_stored_or_published()


def test_utf16_body_is_not_json(api_client, nothing_stored_or_published):
    # JSON on the wire is UTF-8 (RFC 8259); a charset parameter changes nothing.
    raw = json.dumps(valid()).encode("utf-16")
    assert_error(send(api_client, raw, "application/json; charset=utf-16"), 400, "invalid_json")
    nothing_stored_or_published()


def test_duplicate_keys_are_refused(api_client, nothing_stored_or_published):
    # Which "amount" counts would depend on the reader: refuse both.
    raw = json.dumps(valid()).replace('"amount": "12.5"', '"amount": "1", "amount": "1000"')
    error = assert_error(send(api_client, raw), 400, "invalid_json")
    assert "duplicate key 'amount'" in error["message"]
    nothing_stored_or_published()


def test_integer_literal_too_long_for_python(api_client, nothing_stored_or_published):
    raw = json.dumps(valid()).replace('"12.5"', "9" * 5000)
    assert_error(send(api_client, raw), 400, "invalid_json")
    nothing_stored_or_published()


# --- not an object ----------------------------------------------------------


@pytest.mark.parametrize("payload", [[valid()], [], "a string", "", None, 12, 0.5, True, False])
def test_body_that_is_not_an_object(api_client, nothing_stored_or_published, payload):
    error = assert_error(send_json(api_client, payload), 400, "invalid_request")
    assert error["message"] == "the body must be a JSON object"
    nothing_stored_or_published()


def test_empty_object(api_client, nothing_stored_or_published):
    error = assert_error(send_json(api_client, {}), 400, "invalid_request")
    for field in ("from_account", "to_account", "amount"):
        assert f"{field}: This field is required." in error["message"]
    nothing_stored_or_published()


# --- wrong types, field by field ---------------------------------------------

WRONG_TYPES = [12, 1.5, True, None, [], ["x"], {}, {"x": 1}]
WRONG_TYPE_IDS = ["int", "float", "bool", "null", "empty_list", "list", "empty_object", "object"]
NOT_NULL = [
    pytest.param(value, id=name) for value, name in zip(WRONG_TYPES, WRONG_TYPE_IDS, strict=True) if value is not None
]


@pytest.mark.parametrize("side", ["from_account", "to_account"])
@pytest.mark.parametrize("value", [*WRONG_TYPES[:5], "funding"], ids=[*WRONG_TYPE_IDS[:5], "string"])
def test_account_of_the_wrong_type(api_client, nothing_stored_or_published, side, value):
    error = assert_error(send_json(api_client, valid(**{side: value})), 400, "invalid_request")
    assert error["message"].startswith(f"{side}: ")
    nothing_stored_or_published()


@pytest.mark.parametrize("side", ["from_account", "to_account"])
@pytest.mark.parametrize("field", ["account_type", "asset"])
@pytest.mark.parametrize("value", WRONG_TYPES, ids=WRONG_TYPE_IDS)
def test_account_field_of_the_wrong_type(api_client, nothing_stored_or_published, side, field, value):
    # A number is not turned into text: {"asset": 12} is not asset "12".
    data = valid()
    data[side] = {**data[side], field: value}
    error = assert_error(send_json(api_client, data), 400, "invalid_request")
    assert error["message"].startswith(f"{side}.{field}: ")
    nothing_stored_or_published()


@pytest.mark.parametrize("value", NOT_NULL)
def test_amount_of_the_wrong_type(api_client, nothing_stored_or_published, value):
    error = assert_error(send_json(api_client, valid(amount=value)), 400, "invalid_amount")
    assert "decimal string" in error["message"]
    nothing_stored_or_published()


def test_null_amount(api_client, nothing_stored_or_published):
    error = assert_error(send_json(api_client, valid(amount=None)), 400, "invalid_request")
    assert error["message"].startswith("amount: ")
    nothing_stored_or_published()


@pytest.mark.parametrize("value", NOT_NULL)
def test_client_transfer_id_of_the_wrong_type(api_client, nothing_stored_or_published, value):
    assert_error(send_json(api_client, valid(client_transfer_id=value)), 400, "invalid_client_transfer_id")
    nothing_stored_or_published()


# --- amounts: size, exponents, digits, signs, whitespace ---------------------


@pytest.mark.parametrize(
    ("amount", "asset", "code", "message_part"),
    [
        # huge
        ("9" * 64, "USDT", "invalid_amount", "above the maximum"),
        ("9" * 65, "USDT", "invalid_amount", "too long"),
        ("9" * 5000, "USDT", "invalid_amount", "too long"),
        ("1000000000.000001", "USDT", "invalid_amount", "above the maximum"),
        ("18446744073709551616", "BTC", "invalid_amount", "above the maximum"),  # 2**64
        # tiny
        ("0.0000001", "USDT", "invalid_amount", "more than 6 decimal places"),
        ("0.000000001", "BTC", "invalid_amount", "more than 8 decimal places"),
        ("0." + "0" * 60 + "1", "BTC", "invalid_amount", "more than 8 decimal places"),
        ("0", "USDT", "invalid_amount", "greater than zero"),
        ("0.00000000", "BTC", "invalid_amount", "greater than zero"),
        # exponents
        ("1e3", "USDT", "invalid_amount", "plain decimal"),
        ("1E3", "USDT", "invalid_amount", "plain decimal"),
        ("1e-3", "USDT", "invalid_amount", "plain decimal"),
        ("12.5e0", "USDT", "invalid_amount", "plain decimal"),
        # not digits
        ("NaN", "USDT", "invalid_amount", "plain decimal"),
        ("Infinity", "USDT", "invalid_amount", "plain decimal"),
        ("inf", "USDT", "invalid_amount", "plain decimal"),
        ("0x10", "USDT", "invalid_amount", "plain decimal"),
        ("1_000", "USDT", "invalid_amount", "plain decimal"),
        ("1,5", "USDT", "invalid_amount", "plain decimal"),
        ("1.", "USDT", "invalid_amount", "plain decimal"),
        (".5", "USDT", "invalid_amount", "plain decimal"),
        ("1.2.3", "USDT", "invalid_amount", "plain decimal"),
        ("", "USDT", "invalid_amount", "plain decimal"),
        # unicode digits
        ("\uff11\uff12", "USDT", "invalid_amount", "plain decimal"),  # fullwidth
        ("\u0661\u0662", "USDT", "invalid_amount", "plain decimal"),  # Arabic-Indic
        ("\u0967\u0968", "USDT", "invalid_amount", "plain decimal"),  # Devanagari
        ("\U0001d7cf\U0001d7d0", "USDT", "invalid_amount", "plain decimal"),  # mathematical bold
        ("1\u0662", "USDT", "invalid_amount", "plain decimal"),  # mixed
        ("\u00b2", "USDT", "invalid_amount", "plain decimal"),  # superscript two
        # signs
        ("+1", "USDT", "invalid_amount", "plain decimal"),
        ("-1", "USDT", "invalid_amount", "plain decimal"),
        ("+0.5", "USDT", "invalid_amount", "plain decimal"),
        ("-0", "USDT", "invalid_amount", "plain decimal"),
        ("\u22121", "USDT", "invalid_amount", "plain decimal"),  # minus sign
        # whitespace
        (" 12", "USDT", "invalid_amount", "plain decimal"),
        ("12 ", "USDT", "invalid_amount", "plain decimal"),
        ("1 2", "USDT", "invalid_amount", "plain decimal"),
        ("\t12", "USDT", "invalid_amount", "plain decimal"),
        ("12\n", "USDT", "invalid_amount", "plain decimal"),
        ("\u00a012", "USDT", "invalid_amount", "plain decimal"),  # no-break space
        ("12\u200b", "USDT", "invalid_amount", "plain decimal"),  # zero-width space
        ("12\x00", "USDT", "invalid_amount", "plain decimal"),
    ],
)
def test_invalid_amount(api_client, nothing_stored_or_published, amount, asset, code, message_part):
    error = assert_error(send_json(api_client, valid(amount=amount, **_asset(asset))), 400, code)
    assert message_part in error["message"]
    nothing_stored_or_published()


@pytest.mark.parametrize(
    "literal",
    ["12.5", "1e308", "1e-308", "1e999999", "-1e999999", "5e-324", "1" + "0" * 400, "-12", "0"],
    ids=["float", "huge_float", "tiny_float", "overflow", "negative_overflow", "denormal", "big_integer",
         "negative", "zero"],
)
def test_amount_as_a_json_number(api_client, nothing_stored_or_published, literal):
    # Whatever the number, it is a number, not the decimal string the contract asks for.
    raw = json.dumps(valid()).replace('"12.5"', literal)
    error = assert_error(send(api_client, raw), 400, "invalid_amount")
    assert "decimal string" in error["message"]
    nothing_stored_or_published()


def test_smallest_and_largest_amounts_are_accepted(api_client, relay):
    assert send_json(api_client, valid(amount="0.000001")).status_code == 202
    assert send_json(api_client, valid(amount="1000000000")).status_code == 202
    assert send_json(api_client, valid(amount="0" * 50 + "1.500000000")).json()["amount"] == "1.5"
    assert len(relay()) == 3


# --- accounts and assets -----------------------------------------------------


@pytest.mark.parametrize(
    ("from_type", "to_type", "code"),
    [
        (" funding", "spot", "invalid_account_type"),  # not trimmed
        ("funding", "spot\n", "invalid_account_type"),
        ("Funding", "spot", "invalid_account_type"),
        ("\uff46unding", "spot", "invalid_account_type"),  # fullwidth f
        ("", "spot", "invalid_request"),
        ("funding\x00", "spot", "invalid_request"),
        ("x" * 17, "spot", "invalid_account_type"),
    ],
)
def test_invalid_account_type(api_client, nothing_stored_or_published, from_type, to_type, code):
    data = valid(
        from_account={"account_type": from_type, "asset": "USDT"},
        to_account={"account_type": to_type, "asset": "USDT"},
    )
    assert_error(send_json(api_client, data), 400, code)
    nothing_stored_or_published()


@pytest.mark.parametrize(
    ("asset", "code"),
    [
        ("XYZ", "unknown_asset"),
        ("usdt", "unknown_asset"),
        ("USDT ", "unknown_asset"),  # not trimmed
        (" USDT", "unknown_asset"),
        ("\uff35SDT", "unknown_asset"),  # fullwidth U
        ("", "invalid_request"),
        ("U" * 17, "invalid_request"),
        ("USDT\x00", "invalid_request"),
        ("\ud800", "invalid_request"),  # lone surrogate: not a string a database can hold
    ],
    ids=["unknown", "lowercase", "trailing_space", "leading_space", "fullwidth", "empty", "too_long", "nul",
         "lone_surrogate"],
)
def test_unknown_or_malformed_asset(api_client, nothing_stored_or_published, asset, code):
    raw = json.dumps(valid(**_asset(asset)))  # ensure_ascii: a lone surrogate travels as \ud800
    assert_error(send(api_client, raw), 400, code)
    nothing_stored_or_published()


def test_disabled_asset(api_client, nothing_stored_or_published):
    Asset.objects.filter(code="ETH").update(transfers_enabled=False)
    error = assert_error(send_json(api_client, valid(amount="1", **_asset("ETH"))), 400, "asset_disabled")
    assert error["message"] == "transfers of ETH are disabled"
    nothing_stored_or_published()


# --- unknown fields -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (valid(memo="hi"), "memo"),
        (valid(user_id=1), "user_id"),
        (valid(status="success"), "status"),
        (valid(request_id="1"), "request_id"),
        (valid(Amount="1"), "Amount"),
        (valid(**{"": 1}), None),
        (valid(from_account={"account_type": "funding", "asset": "USDT", "user_id": 5}), "from_account.user_id"),
        (valid(to_account={"account_type": "spot", "asset": "USDT", "asset_id": 1}), "to_account.asset_id"),
    ],
    ids=["memo", "user_id", "status", "request_id", "case", "empty_name", "nested_from", "nested_to"],
)
def test_unknown_fields(api_client, nothing_stored_or_published, data, field):
    error = assert_error(send_json(api_client, data), 400, "invalid_request")
    assert (f"{field}: unknown field" if field else "unknown field") in error["message"]
    nothing_stored_or_published()


# --- size and depth -----------------------------------------------------------


def test_body_over_the_limit_is_413(api_client, nothing_stored_or_published):
    raw = json.dumps(valid(client_transfer_id="x" * LIMIT))
    error = assert_error(send(api_client, raw), 413, "payload_too_large")
    assert error["message"] == f"the request body is larger than {LIMIT} bytes"
    nothing_stored_or_published()


def test_body_one_byte_over_the_limit_is_413(api_client, nothing_stored_or_published):
    raw = json.dumps(valid())
    raw += " " * (LIMIT + 1 - len(raw))  # whitespace is valid JSON: only the size is wrong
    assert_error(send(api_client, raw), 413, "payload_too_large")
    nothing_stored_or_published()


def test_body_of_exactly_the_limit_is_read(api_client, relay):
    raw = json.dumps(valid())
    raw += " " * (LIMIT - len(raw))
    assert send(api_client, raw).status_code == 202
    assert len(relay()) == 1


def test_huge_body_is_413_not_read(api_client, nothing_stored_or_published):
    assert_error(send(api_client, b"[" * (10 * 1024 * 1024)), 413, "payload_too_large")
    nothing_stored_or_published()


def test_oversized_body_of_the_wrong_type_is_415(api_client, nothing_stored_or_published):
    assert_error(send(api_client, "x" * (LIMIT + 1), "text/plain"), 415, "unsupported_media_type")
    nothing_stored_or_published()


def test_oversized_form_outside_the_api_is_a_json_413(client, nothing_stored_or_published):
    # Django itself refuses it (here: the CSRF middleware reads request.POST),
    # through handler400: JSON, not its HTML page.
    response = client.post("/admin/login/", "a=" + "x" * LIMIT, content_type="application/x-www-form-urlencoded")
    assert_error(response, 413, "payload_too_large")
    nothing_stored_or_published()


def test_request_data_too_big_anywhere_in_the_api_is_413() -> None:
    # E.g. an authenticator that reads request.body (signatures) before the parser.
    response = api_exception_handler(RequestDataTooBig("too big"), {})
    assert response.status_code == 413
    assert response.data["error"]["code"] == "payload_too_large"
    response = json_bad_request(RequestFactory().get("/"), RequestDataTooBig("too big"))
    assert response.status_code == 413
    assert json.loads(response.content)["error"]["code"] == "payload_too_large"


def test_parser_reads_no_more_than_the_limit_from_any_stream() -> None:
    stream = io.BytesIO(b" " * (LIMIT + 1) + b"{}")
    with pytest.raises(PayloadTooLarge):
        BoundedJSONParser().parse(stream)
    assert stream.tell() == LIMIT + 1


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 8000])
def test_deeply_nested_body(api_client, nothing_stored_or_published, depth):
    raw = "[" * depth + "]" * depth
    error = assert_error(send(api_client, raw), 400, "invalid_json")
    assert error["message"] == f"the body is nested more than {MAX_JSON_DEPTH} levels deep"
    nothing_stored_or_published()


@pytest.mark.parametrize("field", ["amount", "client_transfer_id", "from_account", "memo"])
def test_deeply_nested_field(api_client, nothing_stored_or_published, field):
    raw = json.dumps(valid(**{field: None})).replace("null", '{"a": ' * 900 + "1" + "}" * 900)
    assert_error(send(api_client, raw), 400, "invalid_json")
    nothing_stored_or_published()


def test_nesting_up_to_the_limit_is_parsed(api_client, nothing_stored_or_published):
    # The body (1) and amount's own 31 levels are within the limit: the amount is what is wrong.
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    raw = json.dumps(valid()).replace('"12.5"', nested)
    assert_error(send(api_client, raw), 400, "invalid_amount")
    nothing_stored_or_published()


# --- content type -------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "application/jsonx", "text/json",
     "application/octet-stream"],
)
def test_wrong_content_type(api_client, nothing_stored_or_published, content_type):
    assert_error(send(api_client, json.dumps(valid()), content_type), 415, "unsupported_media_type")
    nothing_stored_or_published()


def test_multipart_body(api_client, nothing_stored_or_published):
    response = api_client.post(URL, {"amount": "1"}, format="multipart")
    assert_error(response, 415, "unsupported_media_type")
    nothing_stored_or_published()


def test_body_without_content_type(api_client, nothing_stored_or_published):
    response = api_client.generic("POST", URL, json.dumps(valid()), content_type="")
    assert_error(response, 415, "unsupported_media_type")
    nothing_stored_or_published()


def test_charset_parameter_is_accepted_but_the_body_is_utf8(api_client, relay):
    response = send(api_client, json.dumps(valid()), "application/json; charset=latin-1")
    assert response.status_code == 202, response.content
    assert len(relay()) == 1


# --- queries and paths --------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"limit": "\uff11\uff12"}, "invalid_request"),
        ({"limit": "\u0661\u0662"}, "invalid_request"),
        ({"limit": " 12"}, "invalid_request"),
        ({"limit": "+12"}, "invalid_request"),
        ({"limit": "-1"}, "invalid_request"),
        ({"limit": "12.0"}, "invalid_request"),
        ({"limit": "1e1"}, "invalid_request"),
        ({"limit": "9" * 5000}, "invalid_request"),
        ({"limit": ""}, "invalid_request"),
        ({"status": "SUCCESS"}, "invalid_status"),
        ({"status": " success"}, "invalid_status"),
        ({"asset": "USDT "}, "unknown_asset"),
        ({"asset": "\x00"}, "invalid_request"),
        ({"cursor": "\uff11"}, "invalid_cursor"),
        ({"cursor": "1" * 33}, "invalid_request"),
        ({"Limit": "1"}, "invalid_request"),
    ],
)
def test_list_with_bad_query(api_client, query, code):
    assert_error(api_client.get(LIST_URL, query), 400, code)


@pytest.mark.parametrize("request_id", ["\uff11\uff12", "\u0661\u0662", "-1", "+1", "1e3", "1" * 20, "%20", "abc"])
def test_detail_of_a_malformed_id_is_not_found(api_client, request_id):
    assert_error(api_client.get(f"{URL}/{request_id}"), 404, "not_found")


def _asset(code: str) -> dict:
    return {
        "from_account": {"account_type": "funding", "asset": code},
        "to_account": {"account_type": "spot", "asset": code},
    }
