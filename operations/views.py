"""GET /metrics: Prometheus text format (operations.metrics)."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from operations.metrics import render


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    # The classic text format (0.0.4), which every Prometheus version reads.
    return HttpResponse(render(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
