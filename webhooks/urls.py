from django.urls import path

from webhooks import views

urlpatterns = [
    path("api/v1/user/webhooks", views.WebhookEndpointsView.as_view(), name="webhook-list"),
    path("api/v1/user/webhooks/<str:endpoint_id>", views.WebhookEndpointView.as_view(), name="webhook-detail"),
]
