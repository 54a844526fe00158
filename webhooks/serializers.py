"""Request and answer shapes of the webhook endpoints API."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from transfers.api.serializers import StrictCharField, StrictSerializer
from webhooks.addresses import MAX_URL_LENGTH
from webhooks.models import WebhookEndpoint


class CallbackUrlField(StrictCharField):
    pass  # checked by the service (webhooks.addresses): invalid_webhook_url


class CallbackUrlScheme(OpenApiSerializerFieldExtension):
    """What a callback URL looks like, as far as a pattern can say: the scheme this server takes, printable
    ASCII, no credentials (`@`) or fragment (`#`). Where its host resolves is checked when it is registered."""

    target_class = "webhooks.serializers.CallbackUrlField"

    def map_serializer_field(self, auto_schema, direction) -> dict[str, Any]:
        scheme = "https" if settings.WEBHOOK_REQUIRE_HTTPS else "https?"
        return {
            "type": "string",
            "format": "uri",
            "pattern": f'^{scheme}://[!-"$-?A-~]+$',
            "maxLength": MAX_URL_LENGTH,
            "example": "https://hooks.example.com/transfers",
        }


class RegisterEndpointSerializer(StrictSerializer):
    url = CallbackUrlField(
        max_length=MAX_URL_LENGTH,
        help_text="Where deliveries are POSTed: an absolute https:// URL (http:// outside production) of a "
        "public address; no credentials, no fragment.",
    )


class EndpointSerializer(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.CharField()
    created_at = serializers.IntegerField(help_text="Milliseconds since the epoch.")


class RegisteredEndpointSerializer(EndpointSerializer):
    secret = serializers.CharField(
        help_text="Signs every delivery (Webhook-Signature). Shown this once: keep it; to change it, register "
        "a new endpoint and delete this one."
    )


class EndpointListSerializer(serializers.Serializer):
    items = EndpointSerializer(many=True)


def endpoint_representation(endpoint: WebhookEndpoint) -> dict:
    return {"id": str(endpoint.pk), "url": endpoint.url, "created_at": endpoint.created_at_ms}
