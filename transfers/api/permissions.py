"""What an authenticated API key may do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.permissions import SAFE_METHODS, BasePermission

from transfers.models import ApiKey

if TYPE_CHECKING:  # rest_framework.views imports this module while it loads
    from rest_framework.request import Request
    from rest_framework.views import APIView


class ApiKeyPermits(BasePermission):
    """Reads need a live API key; anything else (creating transfers, changing webhooks) a key with the
    transfer permission.

    Decided by method, so an endpoint added later that moves money is closed
    to read-only keys without anyone remembering to say so.
    """

    message = "this API key is read-only: it cannot create transfers or change webhooks"

    def has_permission(self, request: Request, view: APIView) -> bool:
        # Without a key DRF answers 401 (no authenticator succeeded), not 403.
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return False
        return request.method in SAFE_METHODS or api_key.can_transfer
