"""A bare authenticated endpoint for the benchmark (bench/, docs/benchmarks.md).

`POST /api/v1/bench/bare` runs what every API call runs -- the server, the
middleware, DRF's request handling, API-key authentication, permission and
rate limit, the JSON parser and renderer -- and nothing of the service: it
parses the body and answers 202. Its throughput is the framework's limit,
against which the benchmark measures the transfer endpoint. Routed only when
BENCH_ENDPOINTS is on (off by default), and absent from the OpenAPI schema.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class BareView(APIView):
    @extend_schema(exclude=True)
    def post(self, request: Request) -> Response:
        body = request.data  # parsed like a transfer request's
        return Response({"ok": True, "fields": len(body) if isinstance(body, dict) else 0},
                        status=status.HTTP_202_ACCEPTED)
