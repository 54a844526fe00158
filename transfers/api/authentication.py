"""X-API-Key authentication and request signing. The user comes only from the key, never the request."""

from __future__ import annotations

import dataclasses
import hmac
import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, router
from django.utils import timezone
from rest_framework import authentication, exceptions

from transfer_site import compiled_sql
from transfers import signing
from transfers.api.exceptions import ServiceUnavailable
from transfers.models import ApiKey
from transfers.services import API_KEY_PREFIX, hash_api_key_secret, signing_secret_of

logger = logging.getLogger(__name__)

HEADER = "X-API-Key"
TIMESTAMP_HEADER = "X-API-Timestamp"
SIGNATURE_HEADER = "X-API-Signature"
# Writing last_used_at on every call would make every read a write.
_LAST_USED_RESOLUTION_SECONDS = 60


@dataclasses.dataclass(frozen=True)
class ApiUser:
    """The caller behind an API key."""

    user_id: int
    api_key_id: int
    is_authenticated: bool = True


class SignatureRejected(exceptions.AuthenticationFailed):
    """401 with its own code: signature_required, invalid_signature, timestamp_outside_window, signature_replayed."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        raw_key = request.headers.get(HEADER)
        if not raw_key:
            return None
        parts = raw_key.split("_", 2)  # the secret itself may contain "_"
        if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
            raise exceptions.AuthenticationFailed("invalid API key")
        _, prefix, secret = parts
        api_key = _active_key(prefix)
        if api_key is None or not hmac.compare_digest(api_key.secret_hash, hash_api_key_secret(secret)):
            raise exceptions.AuthenticationFailed("invalid API key")
        verify_signature(request, api_key)
        now = timezone.now()
        if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > _LAST_USED_RESOLUTION_SECONDS:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return ApiUser(user_id=api_key.user_id, api_key_id=api_key.pk), api_key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when the key is missing.
        return HEADER


# What a request needs of its key: identity, permission, the secret to check, when it was last used.
_KEY_FIELDS = ("id", "prefix", "secret_hash", "user_id", "permission", "last_used_at")


def _active_key(prefix: str) -> ApiKey | None:
    """The unrevoked key with this prefix: read on every request, so its SQL is compiled once."""
    using = router.db_for_read(ApiKey) or DEFAULT_DB_ALIAS

    def build():
        return ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).values_list(*_KEY_FIELDS)

    found = compiled_sql.rows(using, "active api key", build, [prefix])
    return ApiKey.from_db(using, _KEY_FIELDS, found[0]) if found else None


def verify_signature(request, api_key: ApiKey) -> None:
    """Checks X-API-Timestamp / X-API-Signature when present (always when API_SIGNATURES_REQUIRED).

    Order: shape, receive window, HMAC, then the replay record, which is only
    written for a valid signature so forged ones cannot fill the cache.
    """
    timestamp = request.headers.get(TIMESTAMP_HEADER)
    signature = request.headers.get(SIGNATURE_HEADER)
    if timestamp is None and signature is None:
        if settings.API_SIGNATURES_REQUIRED:
            raise SignatureRejected(
                "signature_required", f"requests must be signed: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"
            )
        return
    if timestamp is None or signature is None:
        raise SignatureRejected("invalid_signature", f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} go together")
    timestamp_ms = signing.parse_timestamp_ms(timestamp)
    if timestamp_ms is None:
        raise SignatureRejected("invalid_signature", f"{TIMESTAMP_HEADER} must be milliseconds since the epoch")
    window_ms = settings.API_SIGNATURE_WINDOW_MS
    now_ms = time.time_ns() // 1_000_000
    if not signing.within_window(timestamp_ms, now_ms, window_ms):
        raise SignatureRejected(
            "timestamp_outside_window",
            f"{TIMESTAMP_HEADER} must be within {window_ms} ms of the server time ({now_ms})",
        )
    # The body as received; reading it here leaves it readable for the parser.
    body = request.body
    if not signing.signature_matches(
        signing_secret_of(api_key.prefix, api_key.secret_hash),
        signature,
        timestamp,
        request.method,
        request.get_full_path(),
        body,
    ):
        logger.info("request signature mismatch", extra={"api_key_prefix": api_key.prefix})
        raise SignatureRejected(
            "invalid_signature", f"{SIGNATURE_HEADER} does not match timestamp + method + path + body"
        )
    _refuse_replay(api_key, signature.lower(), window_ms)


def _refuse_replay(api_key: ApiKey, signature: str, window_ms: int) -> None:
    # The same signature stays acceptable until its timestamp leaves the
    # window: at most 2 windows from now (a timestamp may be ahead of us).
    timeout_seconds = math.ceil(2 * window_ms / 1000) + 1
    try:
        first_time = cache.add(f"signature:{api_key.prefix}:{signature}", 1, timeout=timeout_seconds)
    except Exception as error:  # without the record a replay would pass: refuse instead
        logger.exception("replay cache unavailable")
        raise ServiceUnavailable() from error
    if not first_time:
        logger.warning("replayed request signature refused", extra={"api_key_prefix": api_key.prefix})
        raise SignatureRejected("signature_replayed", "this signature was already used: sign each request anew")
