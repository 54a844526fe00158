"""Request signing, the pure part: what is signed, and with which secret.

signature = hex(HMAC-SHA256(signing_secret, timestamp + METHOD + path?query + body))

The API key is stored only as a hash, so the server cannot sign with the key
itself. The signing secret is instead derived from what it does store and a
pepper that only the servers hold (settings.API_SIGNING_PEPPER): a copy of the
database alone yields no signing secret, and nothing secret is stored in
plain text. The server re-derives it on every signed request.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEX_LENGTH = 64
TIMESTAMP_MAX_DIGITS = 15  # milliseconds since the epoch fit in 13 digits until the year 2286


def derive_signing_secret(pepper: str, key_prefix: str, secret_hash: str) -> str:
    """The key's signing secret: 64 hex characters, used as the HMAC key in its ASCII form."""
    # prefix and hash have fixed lengths, so their concatenation is unambiguous.
    return hmac.new(pepper.encode(), f"{key_prefix}{secret_hash}".encode(), hashlib.sha256).hexdigest()


def string_to_sign(timestamp: str, method: str, path: str, body: bytes) -> bytes:
    """timestamp + METHOD + path (with ?query when there is one) + the body bytes, as sent."""
    return f"{timestamp}{method.upper()}{path}".encode() + body


def sign(signing_secret: str, timestamp: str, method: str, path: str, body: bytes = b"") -> str:
    """The X-API-Signature header a client sends: lowercase hex."""
    message = string_to_sign(timestamp, method, path, body)
    return hmac.new(signing_secret.encode(), message, hashlib.sha256).hexdigest()


def signature_matches(signing_secret: str, signature: str, timestamp: str, method: str, path: str, body: bytes) -> bool:
    """Constant-time comparison; upper- or lowercase hex."""
    if not is_signature_shaped(signature):
        return False
    expected = sign(signing_secret, timestamp, method, path, body)
    return hmac.compare_digest(expected, signature.lower())


def parse_timestamp_ms(value: str) -> int | None:
    """Milliseconds since the epoch as plain ASCII digits, else None."""
    if not value.isascii() or not value.isdigit() or len(value) > TIMESTAMP_MAX_DIGITS:
        return None
    return int(value)


def within_window(timestamp_ms: int, now_ms: int, window_ms: int) -> bool:
    """A timestamp up to window_ms old or ahead (client clocks drift both ways)."""
    return abs(now_ms - timestamp_ms) <= window_ms


def is_signature_shaped(value: str) -> bool:
    return len(value) == SIGNATURE_HEX_LENGTH and all(c in "0123456789abcdefABCDEF" for c in value)
