"""Startup checks of the security settings (no Django imports: settings.py uses them).

The development defaults below make `make run` work on one machine; with
DJANGO_ENV=production the settings refuse to load while any of them (or
DEBUG) is still in place.
"""

from __future__ import annotations

import re

ENVIRONMENTS = ("development", "production")
# Known to everyone, hence refused in production.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"  # noqa: S105
DEV_API_SIGNING_PEPPER = "dev-only-insecure-api-signing-pepper-change-me"

# DRF's rate syntax ("10/second", "600/min"): DRF reads only the period's first letter.
_RATE = re.compile(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", re.ASCII)


def _weak(value: str, minimum_length: int) -> bool:
    # Django's own rule for SECRET_KEY (security.W009), with our minimum length.
    return len(value) < minimum_length or len(set(value)) < 5 or value.startswith("django-insecure-")


def production_problems(
    *, debug: bool, secret_key: str, signing_pepper: str, metrics_token: str,
    webhook_allow_private: bool = False, webhook_require_https: bool = True,
) -> list[str]:
    """What makes these settings unfit for production; empty when they are fit."""
    problems = []
    if debug:
        problems.append("DJANGO_DEBUG must be off")
    if secret_key == DEV_SECRET_KEY or _weak(secret_key, 50):
        problems.append("DJANGO_SECRET_KEY must be a random value of at least 50 characters")
    if signing_pepper == DEV_API_SIGNING_PEPPER or _weak(signing_pepper, 32) or signing_pepper == secret_key:
        problems.append(
            "API_SIGNING_PEPPER must be a random value of at least 32 characters, distinct from DJANGO_SECRET_KEY"
        )
    if _weak(metrics_token, 32) or metrics_token in (secret_key, signing_pepper):
        problems.append("METRICS_TOKEN (the bearer token Prometheus sends to /metrics) must be a random value "
                        "of at least 32 characters, distinct from the other secrets")
    if webhook_allow_private:
        problems.append("WEBHOOK_ALLOW_PRIVATE must be off: callback URLs could reach internal addresses")
    if not webhook_require_https:
        problems.append("WEBHOOK_REQUIRE_HTTPS must be on: deliveries carry users' transfers")
    return problems


def is_valid_rate(rate: str) -> bool:
    """A throttle rate DRF understands; checked at startup, not at the first request."""
    return _RATE.fullmatch(rate) is not None
