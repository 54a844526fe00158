"""GET /metrics: Prometheus text format (operations.metrics)."""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from operations.metrics import render
from transfers.api.errors import error_body


def _has_metrics_token(request: HttpRequest) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode())


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    # With METRICS_TOKEN set (required in production) only its bearer is answered; read before any source.
    if settings.METRICS_TOKEN and not _has_metrics_token(request):
        response = JsonResponse(error_body("unauthorized", "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>."),
                                status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    # The classic text format (0.0.4), which every Prometheus version reads.
    return HttpResponse(render(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
