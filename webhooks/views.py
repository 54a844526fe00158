"""HTTP in and out of the webhook endpoints API; the work is in webhooks.services and webhooks.selectors."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from transfers.api import schema
from transfers.api.views import UserApiView
from transfers.errors import TransferRejected
from webhooks import selectors, services
from webhooks.serializers import (
    EndpointListSerializer,
    RegisteredEndpointSerializer,
    RegisterEndpointSerializer,
    endpoint_representation,
)

ENDPOINT_ID = OpenApiParameter(
    "endpoint_id", str, OpenApiParameter.PATH, pattern=r"^[0-9]{1,19}$",
    description="`id` of the endpoint; anything else is `404 not_found`.",
)
REGISTER_ERRORS = {
    **schema.COMMON_ERRORS,
    **schema.BODY_ERRORS,
    400: OpenApiResponse(schema.ErrorSerializer, description=(
        "`invalid_json`, `invalid_request` (shape, unknown fields), `invalid_webhook_url` (not an absolute "
        "http(s) URL, credentials or a fragment in it, https required, or a host that does not resolve or "
        "resolves to a loopback, private, link-local or metadata address).")),
    409: OpenApiResponse(schema.ErrorSerializer, description=(
        "`conflict`: this URL is registered already; `too_many_webhooks`: the user has the most endpoints "
        "allowed.")),
}


class EndpointsAutoSchema(schema.LinkedAutoSchema):
    links = {
        201: {
            "DeleteEndpoint": {
                "operationId": "delete_webhook",
                "parameters": {"endpoint_id": "$response.body#/id"},
                "description": "Stop sending to the endpoint just registered.",
            }
        }
    }


class WebhookEndpointsView(UserApiView):
    @extend_schema(
        operation_id="register_webhook", summary="Register a callback URL for your transfers' final status",
        tags=["webhooks"], request=RegisterEndpointSerializer,
        responses={201: RegisteredEndpointSerializer, **dict(sorted(REGISTER_ERRORS.items()))},
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise TransferRejected("invalid_request", "the body must be a JSON object")
        serializer = RegisterEndpointSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint, secret = services.register_endpoint(request.user.user_id, serializer.validated_data["url"])
        return Response({**endpoint_representation(endpoint), "secret": secret}, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="list_webhooks", summary="Your callback URLs", tags=["webhooks"],
        responses={200: EndpointListSerializer, **schema.COMMON_ERRORS},
    )
    def get(self, request: Request) -> Response:
        endpoints = selectors.endpoints_of_user(request.user.user_id)
        return Response({"items": [endpoint_representation(endpoint) for endpoint in endpoints]})

    schema = EndpointsAutoSchema()  # after the methods: in this class the name shadows the module


class WebhookEndpointView(UserApiView):
    @extend_schema(
        operation_id="delete_webhook", summary="Stop sending to one of your callback URLs", tags=["webhooks"],
        parameters=[ENDPOINT_ID],
        responses={
            204: OpenApiResponse(description="Deleted: nothing more is sent to it, retries included."),
            **dict(sorted({**schema.COMMON_ERRORS, 404: OpenApiResponse(
                schema.ErrorSerializer, description="`not_found`: no such endpoint, or another user's.")}.items())),
        },
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        if not endpoint_id.isascii() or not endpoint_id.isdigit() or len(endpoint_id) > 18:
            raise TransferRejected("not_found", "no such webhook endpoint", http_status=404)
        services.delete_endpoint(request.user.user_id, int(endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
