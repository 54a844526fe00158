"""HTTP in and out only; the work is in transfers.services and transfers.selectors."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from transfer_site.logging import request_id_var, user_id_var
from transfers.api import schema
from transfers.api.serializers import (
    CreateTransferSerializer,
    TransferListQuerySerializer,
    balance_representation,
    transfer_representation,
)
from transfers.assets import decimals_of
from transfers.errors import TransferRejected
from transfers.selectors import balances_of_user, get_transfer_of_user, list_transfers_of_user
from transfers.services import TransferRequest, create_transfer


class UserApiView(APIView):
    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        user_id_var.set(str(request.user.user_id))


class InternalTransferCreateView(UserApiView):
    @extend_schema(
        operation_id="create_internal_transfer",
        summary="Move an asset between the funding wallet and the spot account",
        tags=["transfers"],
        request=CreateTransferSerializer,
        responses={
            202: OpenApiResponse(
                schema.TransferSerializer,
                description="Accepted and stored: `pending` (settled within moments, without this request "
                "waiting for it). Poll the transfer for `success` or `failed`.",
            ),
            **schema.CREATE_ERRORS,
        },
        parameters=[schema.IDEMPOTENT_REPLAYED],
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise TransferRejected("invalid_request", "the body must be a JSON object")
        serializer = CreateTransferSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        accepted = create_transfer(
            request.user.user_id,
            TransferRequest(
                from_account_type=data["from_account"]["account_type"],
                from_asset=data["from_account"]["asset"],
                to_account_type=data["to_account"]["account_type"],
                to_asset=data["to_account"]["asset"],
                amount=data["amount"],
                client_transfer_id=data.get("client_transfer_id"),
            ),
        )
        request_id_var.set(str(accepted.record.request_id))
        decimals = decimals_of(accepted.record.asset_id)
        response = Response(transfer_representation(accepted.record, decimals), status=status.HTTP_202_ACCEPTED)
        if accepted.replayed:
            response["Idempotent-Replayed"] = "true"
        return response

    schema = schema.CreateTransferAutoSchema()  # after post(): in this class the name shadows the module


class InternalTransferDetailView(UserApiView):
    @extend_schema(
        operation_id="get_internal_transfer",
        summary="One of your transfers",
        tags=["transfers"],
        parameters=[schema.REQUEST_ID],
        responses={200: schema.TransferSerializer, **schema.DETAIL_ERRORS},
    )
    def get(self, request: Request, request_id: str) -> Response:
        if not request_id.isascii() or not request_id.isdigit() or len(request_id) > 19:
            raise TransferRejected("not_found", "no such transfer", http_status=404)
        request_id_var.set(request_id)
        record = get_transfer_of_user(request.user.user_id, int(request_id))
        return Response(transfer_representation(record, decimals_of(record.asset_id)))


class InternalTransferListView(UserApiView):
    @extend_schema(
        operation_id="list_internal_transfers",
        summary="Your transfers, newest first, a page at a time",
        tags=["transfers"],
        parameters=[TransferListQuerySerializer],
        responses={200: schema.TransferPageSerializer, **schema.LIST_ERRORS},
    )
    def get(self, request: Request) -> Response:
        query = TransferListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        params = query.validated_data
        page = list_transfers_of_user(
            request.user.user_id,
            asset_code=params.get("asset"),
            status=params.get("status"),
            limit=params["limit"],
            cursor=params.get("cursor"),
        )
        return Response(
            {
                "items": [transfer_representation(r, decimals_of(r.asset_id)) for r in page.items],
                "next_cursor": page.next_cursor,
            }
        )


class BalancesView(UserApiView):
    @extend_schema(
        operation_id="get_balances",
        summary="Funding and spot balances, per asset",
        tags=["balances"],
        responses={200: schema.BalancesSerializer, **schema.COMMON_ERRORS},
    )
    def get(self, request: Request) -> Response:
        return Response({"balances": [balance_representation(b) for b in balances_of_user(request.user.user_id)]})
