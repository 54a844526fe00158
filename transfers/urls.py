from django.conf import settings
from django.urls import path

from transfers import health
from transfers.api import views

urlpatterns = [
    path("api/v1/user/internal_transfer", views.InternalTransferCreateView.as_view(), name="transfer-create"),
    path(
        "api/v1/user/internal_transfer/<str:request_id>",
        views.InternalTransferDetailView.as_view(),
        name="transfer-detail",
    ),
    path("api/v1/user/internal_transfers", views.InternalTransferListView.as_view(), name="transfer-list"),
    path("api/v1/user/balances", views.BalancesView.as_view(), name="balances"),
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
]

if settings.BENCH_ENDPOINTS:  # the benchmark's bare endpoint (transfers/api/bench.py); off by default
    from transfers.api.bench import BareView

    urlpatterns.append(path("api/v1/bench/bare", BareView.as_view(), name="bench-bare"))
