"""The signature of a delivery: `Webhook-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`."""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "Webhook-Timestamp"
SIGNATURE_HEADER = "Webhook-Signature"
VERSION = "v1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for a body sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{VERSION}={mac.hexdigest()}"


def verify(secret: str, timestamp_header: str, signature_header: str, body: bytes, *, now: int,
           tolerance_seconds: int = 300) -> bool:
    """What a receiver does: the signature matches, and the timestamp is recent (a replay is not)."""
    if not timestamp_header.isascii() or not timestamp_header.isdigit():
        return False
    timestamp = int(timestamp_header)
    if abs(now - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header)
