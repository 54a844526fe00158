"""API exceptions with their own error code (transfers.api.errors renders them).

Kept apart from errors.py: authentication and throttling import these while
rest_framework.views, which errors.py needs, is still loading.
"""

from __future__ import annotations

from rest_framework import exceptions, status


class ServiceUnavailable(exceptions.APIException):
    """Something every request needs (the shared cache) is down: refuse, store nothing."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "temporarily unavailable, try again shortly"
    error_code = "unavailable"
