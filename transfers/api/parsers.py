"""The one body format the API reads: a UTF-8 JSON document of bounded size and depth."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers, status
from rest_framework.exceptions import ParseError

# Real bodies are two levels deep; the cap keeps every later step (serializers,
# the service, logging) far from Python's recursion limit.
MAX_JSON_DEPTH = 32


class PayloadTooLarge(exceptions.APIException):
    """The body is over DATA_UPLOAD_MAX_MEMORY_SIZE; it was not parsed.

    Here, not in errors.py: DRF imports the parser while rest_framework.views,
    which errors.py needs, is still loading.
    """

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = error_code = "payload_too_large"

    def __init__(self) -> None:
        super().__init__(f"the request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")


class BoundedJSONParser(parsers.JSONParser):
    """JSONParser that reads UTF-8 only, refuses NaN/Infinity and duplicate keys, and caps the depth.

    DRF's own honours any charset the client names, takes the last of two
    equal keys, and lets a RecursionError (about 1000 levels) out as a 500.
    The size: DRF 3.18 hands JSON parsers `request.body`, which raises
    RequestDataTooBig past DATA_UPLOAD_MAX_MEMORY_SIZE (the exception handler
    answers 413); the bounded read here keeps that true for any other stream.
    """

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise PayloadTooLarge()
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
        except RecursionError:
            raise _too_deep() from None
        except ValueError as error:  # includes UnicodeDecodeError and JSONDecodeError
            raise ParseError(f"the body is not valid JSON: {error}") from None
        if _depth_exceeds(data, MAX_JSON_DEPTH):
            raise _too_deep()
        return data


def _refuse_constant(token: str) -> None:
    # NaN, Infinity and -Infinity are not JSON (RFC 8259), though Python reads them.
    raise ValueError(f"{token} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key means two readers may see two different requests: refuse it.
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"duplicate key {key[:64]!r}")
        data[key] = value
    return data


def _too_deep() -> ParseError:
    return ParseError(f"the body is nested more than {MAX_JSON_DEPTH} levels deep")


def _depth_exceeds(data: Any, limit: int) -> bool:
    """True if containers nest more than `limit` levels (iterative: no recursion)."""
    level = [data]
    for _ in range(limit):
        level = [
            child
            for value in level
            if isinstance(value, Mapping | list)
            for child in (value.values() if isinstance(value, Mapping) else value)
        ]
        if not level:
            return False
    return any(isinstance(value, Mapping | list) for value in level)
