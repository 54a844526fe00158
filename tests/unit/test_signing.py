"""Request signing, the pure part: vectors computed independently with `openssl dgst -sha256 -hmac`."""

from __future__ import annotations

import pytest

from transfers import signing

PEPPER = "example-pepper-0123456789abcdef0123456789"
PREFIX = "0123456789ab"
SECRET_HASH = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
# printf '%s' "$PREFIX$SECRET_HASH" | openssl dgst -sha256 -hmac "$PEPPER"
SIGNING_SECRET = "3c069eaa9476cd9918d8b0623522fb5b06b85790b6467f0c92fc8e09e36ed7e1"
# printf '%s' '1717000000000POST/api/v1/user/internal_transfer{"amount":"1"}' | openssl dgst -sha256 -hmac "$SECRET"
POST_SIGNATURE = "4bfc5efc13fe50d9e5b25e5ec2cd4687ff8a4514fe7f0b8d088a3cd413bd1a4d"
# printf '%s' '1717000000000GET/api/v1/user/internal_transfers?asset=USDT&limit=20' | openssl dgst ...
GET_SIGNATURE = "2e2c064e8bed643a18d8ad72d4ee1fad7998c9594269e2b2033ac488a7fd08f8"
POST_ARGS = ("1717000000000", "POST", "/api/v1/user/internal_transfer", b'{"amount":"1"}')


def test_signing_secret_matches_openssl():
    assert signing.derive_signing_secret(PEPPER, PREFIX, SECRET_HASH) == SIGNING_SECRET


def test_signing_secret_depends_on_the_pepper_and_the_key():
    assert signing.derive_signing_secret(PEPPER + "x", PREFIX, SECRET_HASH) != SIGNING_SECRET
    assert signing.derive_signing_secret(PEPPER, "0123456789ac", SECRET_HASH) != SIGNING_SECRET
    assert signing.derive_signing_secret(PEPPER, PREFIX, SECRET_HASH[:-1] + "9") != SIGNING_SECRET


def test_string_to_sign_is_timestamp_method_path_body():
    assert signing.string_to_sign("17", "post", "/p?a=1", b"{}") == b"17POST/p?a=1{}"


def test_signatures_match_openssl():
    assert signing.sign(SIGNING_SECRET, *POST_ARGS) == POST_SIGNATURE
    path = "/api/v1/user/internal_transfers?asset=USDT&limit=20"
    assert signing.sign(SIGNING_SECRET, "1717000000000", "GET", path) == GET_SIGNATURE


def test_signature_matches_in_either_case():
    assert signing.signature_matches(SIGNING_SECRET, POST_SIGNATURE, *POST_ARGS)
    assert signing.signature_matches(SIGNING_SECRET, POST_SIGNATURE.upper(), *POST_ARGS)


@pytest.mark.parametrize(
    "changed",
    [
        ("1717000000001", "POST", "/api/v1/user/internal_transfer", b'{"amount":"1"}'),
        ("1717000000000", "PUT", "/api/v1/user/internal_transfer", b'{"amount":"1"}'),
        ("1717000000000", "POST", "/api/v1/user/internal_transfer?x=1", b'{"amount":"1"}'),
        ("1717000000000", "POST", "/api/v1/user/internal_transfer", b'{"amount":"2"}'),
        ("1717000000000", "POST", "/api/v1/user/internal_transfer", b'{"amount": "1"}'),
    ],
    ids=["timestamp", "method", "query", "body", "body_whitespace"],
)
def test_any_change_breaks_the_signature(changed):
    assert not signing.signature_matches(SIGNING_SECRET, POST_SIGNATURE, *changed)


@pytest.mark.parametrize(
    "signature",
    ["", "zz", POST_SIGNATURE[:-1], POST_SIGNATURE + "0", "g" * 64, "\u0661" * 64, " " + POST_SIGNATURE[1:]],
)
def test_malformed_signatures_never_match(signature):
    assert not signing.signature_matches(SIGNING_SECRET, signature, *POST_ARGS)


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("1717000000000", 1717000000000), ("9" * 15, 10**15 - 1)])
def test_timestamps_are_plain_ascii_milliseconds(value, expected):
    assert signing.parse_timestamp_ms(value) == expected


@pytest.mark.parametrize("value", ["", "-1", "+1", "1.5", "1e3", " 1", "\uff11\uff12", "\u0661", "9" * 16])
def test_malformed_timestamps(value):
    assert signing.parse_timestamp_ms(value) is None


def test_window_is_inclusive_both_ways():
    assert signing.within_window(1000, 6000, 5000)
    assert signing.within_window(11000, 6000, 5000)
    assert not signing.within_window(999, 6000, 5000)
    assert not signing.within_window(11001, 6000, 5000)
