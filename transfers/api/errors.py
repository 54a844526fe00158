"""One error format for every 4xx: {"error": {"code": "...", "message": "..."}}."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from transfers.api.exceptions import ServiceUnavailable
from transfers.api.parsers import PayloadTooLarge
from transfers.errors import TransferRejected
from transfers.store import get_transfer_store

logger = logging.getLogger(__name__)

_CODES = {
    PayloadTooLarge: "payload_too_large",
    exceptions.NotAuthenticated: "unauthorized",
    exceptions.AuthenticationFailed: "unauthorized",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "invalid_json",
    exceptions.Throttled: "rate_limited",
    exceptions.ValidationError: "invalid_request",
}


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, TransferRejected):
        return Response(error_body(exc.code, exc.message), status=exc.http_status)
    if isinstance(exc, RequestDataTooBig):  # anything that read request.body past DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = PayloadTooLarge()
    elif get_transfer_store().is_unavailable(exc):  # e.g. the CQL node or the database is down
        logger.warning("transfer store unavailable: %r", exc)
        exc = ServiceUnavailable()
    response = exception_handler(exc, context)
    if response is None:
        return None  # a real bug: Django answers 500 and logs it
    # An exception may name its own code (signature failures, unavailable).
    code = getattr(exc, "error_code", None) or next(
        (code for cls, code in _CODES.items() if isinstance(exc, cls)), "bad_request"
    )
    response.data = error_body(code, _message_of(exc))
    if response.status_code == status.HTTP_401_UNAUTHORIZED:
        response["WWW-Authenticate"] = "X-API-Key"
    return response


def _message_of(exc: Exception) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "; ".join(_flatten(exc.detail))
    if isinstance(exc, exceptions.APIException):
        return str(exc.detail)
    return str(exc)


def _flatten(detail: object, path: str = "") -> list[str]:
    if isinstance(detail, dict):
        return [line for key, value in detail.items() for line in _flatten(value, f"{path}{key}.")]
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, path)]
    # "from_account.non_field_errors" says less than "from_account".
    prefix = path.rstrip(".").removesuffix("non_field_errors").rstrip(".")
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def json_not_found(request, exception=None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "no such resource"), status=404)


def json_server_error(request) -> JsonResponse:
    return JsonResponse(error_body("internal_error", "internal error"), status=500)


def json_bad_request(request, exception=None) -> JsonResponse:
    # Django answers an oversized body read outside DRF with a plain 400; it is a 413.
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse(error_body("payload_too_large", str(PayloadTooLarge().detail)), status=413)
    return JsonResponse(error_body("bad_request", "bad request"), status=400)


def json_permission_denied(request, exception=None) -> JsonResponse:
    return JsonResponse(error_body("forbidden", "forbidden"), status=403)
