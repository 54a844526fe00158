from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from operations import admin as operations_admin
from transfers import admin_balances, admin_scylla

urlpatterns = [
    # Transfer records through the store port, whichever store keeps them.
    path("admin/transfers/store/", include(admin_scylla.urlpatterns)),
    path("admin/balances/", include(admin_balances.urlpatterns)),  # a user's balances, read-only
    path("admin/operations/overview/", include(operations_admin.urlpatterns)),
    path("admin/", admin.site.urls),
    # OpenAPI: public, no key (SPECTACULAR_SETTINGS); docs/api.md.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("operations.urls")),  # /metrics
    path("", include("transfers.urls")),
    path("", include("webhooks.urls")),
]

handler400 = "transfers.api.errors.json_bad_request"
handler403 = "transfers.api.errors.json_permission_denied"
handler404 = "transfers.api.errors.json_not_found"
handler500 = "transfers.api.errors.json_server_error"
