"""Per-API-key rate limits, counted in the shared cache (every web process sees the same counts)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from django.core.cache import cache
from rest_framework.permissions import SAFE_METHODS
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from transfers.api.exceptions import ServiceUnavailable
from transfers.models import ApiKey

if TYPE_CHECKING:  # rest_framework.views imports this module while it loads
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """"10/second" -> (10, 1); the syntax is checked at startup (transfer_site.security.is_valid_rate)."""
    count, period = rate.split("/")
    return int(count), _PERIOD_SECONDS[period[0]]


class ApiKeyRateThrottle(BaseThrottle):
    """Fixed windows per API key: `transfer` for unsafe methods, `read` for the rest.

    One counter per key and window: constant size, and atomic on Redis; on
    the database cache concurrent requests may be undercounted by a few. A
    burst may straddle two windows. The counter is incremented first and
    created only when missing (the first call of a window): on the database
    cache every write takes the database's write lock, so a call makes one
    write, not an `add` and an `incr`.
    """

    timer = time.time  # as DRF's throttles: tests replace it

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return True  # only reached by views open to anonymous callers
        scope = "read" if request.method in SAFE_METHODS else "transfer"
        limit, period = parse_rate(api_settings.DEFAULT_THROTTLE_RATES[scope])
        now = self.timer()
        window = int(now // period)
        key = f"throttle:{scope}:{api_key.prefix}:{window}"
        try:
            count = _count_call(key, timeout=period + 1)
        except Exception as error:  # a cache we cannot reach must not let requests through
            logger.exception("rate-limit cache unavailable")
            raise ServiceUnavailable() from error
        if count <= limit:
            return True
        self._wait = (window + 1) * period - now
        return False

    def wait(self) -> float | None:
        return self._wait


def _count_call(key: str, timeout: int) -> int:
    """This window's count with this call in it."""
    try:
        return cache.incr(key)
    except ValueError:  # no counter yet: the window's first call (or another made it meanwhile)
        pass
    if cache.add(key, 1, timeout=timeout):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr: a new window
        return 1
