"""The public REST API: create, read, list transfers; balances; one error format."""

from __future__ import annotations

import json
import time

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.api.conftest import stored_transfer, stored_transfer_count
from transfer_site import topics
from transfer_site.bus import BusUnavailable, InMemoryMessageBus, Outgoing
from transfer_site.messages import BalanceOperation, TransferRequested
from transfers.domain import TransferStatus
from transfers.models import ApiKey, Asset
from transfers.store import get_transfer_store

pytestmark = pytest.mark.django_db

CREATE_URL = "/api/v1/user/internal_transfer"
LIST_URL = "/api/v1/user/internal_transfers"
BALANCES_URL = "/api/v1/user/balances"
USDT_ID, BTC_ID, ETH_ID = 1, 2, 3

TRANSFER_KEYS = {
    "request_id",
    "client_transfer_id",
    "from_account",
    "to_account",
    "amount",
    "status",
    "error_message",
    "created_at",
    "updated_at",
}


def body(
    from_type="funding", to_type="spot", asset="USDT", amount="12.5", client_transfer_id=None, to_asset=None, **extra
) -> dict:
    data = {
        "from_account": {"account_type": from_type, "asset": asset},
        "to_account": {"account_type": to_type, "asset": to_asset or asset},
        "amount": amount,
    }
    if client_transfer_id is not None:
        data["client_transfer_id"] = client_transfer_id
    data.update(extra)
    return data


def post(client, data):
    return client.post(CREATE_URL, data, format="json")


def detail_url(request_id) -> str:
    return f"{CREATE_URL}/{request_id}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def assert_error(response, status_code: int, code: str, message: str | None = None) -> dict:
    assert response.status_code == status_code, response.content
    assert response["Content-Type"].startswith("application/json")
    payload = response.json()
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"code", "message"}
    assert payload["error"]["code"] == code
    assert isinstance(payload["error"]["message"], str)
    assert payload["error"]["message"]
    if message is not None:
        assert payload["error"]["message"] == message
    return payload["error"]


# --- POST: the happy paths -----------------------------------------------------


def test_create_funding_to_spot(api_client, user_id, bus, relay):
    before = now_ms()
    response = post(api_client, body())
    after = now_ms()

    assert response.status_code == 202, response.content
    data = response.json()
    assert set(data) == TRANSFER_KEYS
    assert isinstance(data["request_id"], str)
    assert data["request_id"].isascii() and data["request_id"].isdigit()
    request_id = int(data["request_id"])
    assert data == {
        "request_id": str(request_id),
        "client_transfer_id": None,
        "from_account": {"account_type": "funding", "asset": "USDT"},
        "to_account": {"account_type": "spot", "asset": "USDT"},
        "amount": "12.5",
        "status": "pending",  # stored `requesting`: the API speaks only pending, success, failed
        "error_message": None,
        "created_at": data["created_at"],
        "updated_at": data["updated_at"],
    }
    assert type(data["created_at"]) is int
    assert type(data["updated_at"]) is int
    assert before <= data["created_at"] <= data["updated_at"] <= after
    assert "Idempotent-Replayed" not in response

    stored = get_transfer_store().get(request_id)
    assert stored.user_id == user_id
    assert stored.status is TransferStatus.REQUESTING
    assert stored.amount == 12_500_000
    assert stored.asset_id == USDT_ID
    assert bus.published == []  # the relay publishes it, not the request

    assert relay() == [
        Outgoing(
            topic=topics.TRANSFER_REQUESTS,
            key=user_id,
            message=TransferRequested(
                request_id=request_id,
                user_id=user_id,
                asset_id=USDT_ID,
                amount=12_500_000,
                direction="funding_to_spot",
            ),
        )
    ]
    assert topics.TRANSFER_REQUESTS == "internal_transfer.requests"
    assert get_transfer_store().get(request_id).status is TransferStatus.PENDING


def test_create_spot_to_funding(api_client, user_id, relay):
    response = post(api_client, body(from_type="spot", to_type="funding", asset="BTC", amount="0.00000001"))

    assert response.status_code == 202, response.content
    data = response.json()
    request_id = int(data["request_id"])
    assert data["from_account"] == {"account_type": "spot", "asset": "BTC"}
    assert data["to_account"] == {"account_type": "funding", "asset": "BTC"}
    assert data["amount"] == "0.00000001"
    assert data["status"] == "pending"
    assert relay() == [
        Outgoing(
            topic=topics.BALANCE_OPERATIONS,
            key=user_id,
            message=BalanceOperation(
                ref_id=request_id, operation="TransferOut", user_id=user_id, asset_id=BTC_ID, amount=1
            ),
        )
    ]
    assert topics.BALANCE_OPERATIONS == "balance.operations"


def test_amount_is_answered_in_canonical_form(api_client):
    response = post(api_client, body(amount="0012.500000"))
    assert response.status_code == 202
    assert response.json()["amount"] == "12.5"
    response = post(api_client, body(amount="1000000000"))  # the USDT maximum itself
    assert response.status_code == 202
    assert response.json()["amount"] == "1000000000"


def test_create_with_a_client_transfer_id(api_client):
    response = post(api_client, body(client_transfer_id="order_2024-06-01_A"))
    assert response.status_code == 202
    assert response.json()["client_transfer_id"] == "order_2024-06-01_A"
    assert stored_transfer(int(response.json()["request_id"])).client_transfer_id == (
        "order_2024-06-01_A"
    )


def test_null_client_transfer_id_is_the_same_as_none(api_client):
    response = post(api_client, body(client_transfer_id=None) | {"client_transfer_id": None})
    assert response.status_code == 202
    assert response.json()["client_transfer_id"] is None


def test_the_api_accepts_without_funds_the_saga_decides(api_client, user_id, relay):
    # The user never deposited: the API accepts; settlement fails it later.
    response = post(api_client, body(amount="999"))
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert len(relay()) == 1


def test_each_post_is_a_new_transfer_with_a_new_id(api_client, relay):
    first = post(api_client, body()).json()
    second = post(api_client, body()).json()
    assert first["request_id"] != second["request_id"]
    assert stored_transfer_count() == 2
    assert len(relay()) == 2


def test_while_the_bus_is_down_the_api_accepts_and_the_transfer_waits_requesting(
    api_client, bus, relay, monkeypatch
):
    def unavailable(self, outgoing):
        raise BusUnavailable("broker down")

    monkeypatch.setattr(InMemoryMessageBus, "publish_many", unavailable)
    response = post(api_client, body())
    assert response.status_code == 202
    data = response.json()
    assert data["status"] == "pending"
    with pytest.raises(BusUnavailable):
        relay()
    stored = get_transfer_store().get(int(data["request_id"]))
    assert stored.status is TransferStatus.REQUESTING
    assert bus.published == []

    monkeypatch.undo()  # the broker is back: the relay publishes it
    assert [out.message.request_id for out in relay()] == [int(data["request_id"])]
    assert get_transfer_store().get(int(data["request_id"])).status is TransferStatus.PENDING


def test_updated_at_in_the_answer_is_the_stored_one(api_client, monkeypatch):
    # A clock that moves 1 ms per reading makes any stale timestamp visible.
    clock = {"ns": time.time_ns()}

    def ticking_time_ns():
        clock["ns"] += 1_000_000
        return clock["ns"]

    monkeypatch.setattr(time, "time_ns", ticking_time_ns)
    created = post(api_client, body()).json()
    fetched = api_client.get(detail_url(created["request_id"])).json()
    assert created == fetched


# --- client_transfer_id: idempotent replays -----------------------------------


def test_replay_with_the_same_body_returns_the_same_transfer_once(api_client, relay):
    first = post(api_client, body(client_transfer_id="abc-1"))
    second = post(api_client, body(client_transfer_id="abc-1"))
    third = post(api_client, body(client_transfer_id="abc-1", amount="12.50"))  # the same amount, written otherwise

    assert first.status_code == second.status_code == third.status_code == 202
    request_id = first.json()["request_id"]
    assert second.json()["request_id"] == request_id
    assert third.json()["request_id"] == request_id
    assert second.json() == third.json()
    assert second["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert stored_transfer_count() == 1
    assert len(relay()) == 1


def test_replay_answers_the_current_status(api_client, relay):
    first = post(api_client, body(client_transfer_id="abc-2")).json()
    relay()
    assert get_transfer_store().compare_and_set_status(
        int(first["request_id"]), {TransferStatus.PENDING}, TransferStatus.FAILED, "insufficient balance"
    )
    replay = post(api_client, body(client_transfer_id="abc-2"))
    assert replay.status_code == 202
    assert replay.json()["status"] == "failed"
    assert replay.json()["error_message"] == "insufficient balance"
    assert stored_transfer_count() == 1


@pytest.mark.parametrize(
    "different",
    [
        body(client_transfer_id="dup", amount="13"),
        body(client_transfer_id="dup", from_type="spot", to_type="funding"),
        body(client_transfer_id="dup", asset="BTC"),
    ],
    ids=["amount", "direction", "asset"],
)
def test_same_client_transfer_id_for_a_different_transfer_is_a_conflict(api_client, bus, different):
    first = post(api_client, body(client_transfer_id="dup"))
    assert first.status_code == 202
    bus.published.clear()
    count = stored_transfer_count()

    response = post(api_client, different)
    error = assert_error(response, 409, "conflict")
    assert "dup" in error["message"]
    assert stored_transfer_count() == count
    assert bus.published == []
    # The first transfer is untouched.
    stored = stored_transfer(int(first.json()["request_id"]))
    assert (stored.amount, stored.asset_id, stored.direction) == (12_500_000, USDT_ID, "funding_to_spot")


def test_same_client_transfer_id_for_another_user_is_a_different_transfer(api_client, other_client, relay):
    mine = post(api_client, body(client_transfer_id="shared"))
    theirs = post(other_client, body(client_transfer_id="shared", amount="99"))
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["request_id"] != theirs.json()["request_id"]
    assert theirs.json()["amount"] == "99"
    assert stored_transfer_count() == 2
    assert len(relay()) == 2


# --- GET one ----------------------------------------------------------------


def test_get_by_id(api_client):
    created = post(api_client, body(client_transfer_id="get-1", asset="ETH", amount="1.23456789")).json()
    response = api_client.get(detail_url(created["request_id"]))
    assert response.status_code == 200
    fetched = response.json()
    assert set(fetched) == TRANSFER_KEYS
    assert {k: v for k, v in fetched.items() if k != "updated_at"} == {
        k: v for k, v in created.items() if k != "updated_at"
    }
    assert fetched["amount"] == "1.23456789"
    assert fetched["updated_at"] >= created["created_at"]


def test_get_shows_the_outcome(api_client, relay):
    created = post(api_client, body()).json()
    relay()
    get_transfer_store().compare_and_set_status(
        int(created["request_id"]), {TransferStatus.PENDING}, TransferStatus.FAILED, "insufficient balance", now_ms=42
    )
    fetched = api_client.get(detail_url(created["request_id"])).json()
    assert fetched["status"] == "failed"
    assert fetched["error_message"] == "insufficient balance"
    assert fetched["updated_at"] == 42


@pytest.mark.parametrize(
    "request_id", ["1", "382638807905730560", "9223372036854775807", "9999999999999999999", "abc", "-1", "1.5"]
)
def test_get_of_an_unknown_id_is_not_found(api_client, request_id):
    assert_error(api_client.get(detail_url(request_id)), 404, "not_found", "no such transfer")


def test_get_of_another_users_transfer_is_not_found(api_client, other_client):
    theirs = post(other_client, body()).json()
    assert other_client.get(detail_url(theirs["request_id"])).status_code == 200
    response = api_client.get(detail_url(theirs["request_id"]))
    # Exactly as for an id that does not exist: nothing tells the two apart.
    assert_error(response, 404, "not_found", "no such transfer")
    assert response.json() == api_client.get(detail_url("1")).json()


# --- GET list ---------------------------------------------------------------


def walk(client, **params) -> tuple[list[dict], int]:
    items, pages, cursor = [], 0, None
    while True:
        query = dict(params)
        if cursor is not None:
            query["cursor"] = cursor
        response = client.get(LIST_URL, query)
        assert response.status_code == 200, response.content
        data = response.json()
        assert set(data) == {"items", "next_cursor"}
        items.extend(data["items"])
        pages += 1
        cursor = data["next_cursor"]
        if cursor is None:
            return items, pages
        assert isinstance(cursor, str)
        assert pages < 100


def test_list_is_newest_first_and_paginates(api_client, other_client):
    created = [post(api_client, body(amount=str(n))).json()["request_id"] for n in range(1, 8)]
    post(other_client, body())  # never listed for this user

    items, pages = walk(api_client, limit=3)
    assert [item["request_id"] for item in items] == sorted(created, key=int, reverse=True)
    assert [item["amount"] for item in items] == [str(n) for n in range(7, 0, -1)]
    assert pages == 3
    assert all(set(item) == TRANSFER_KEYS for item in items)

    everything = api_client.get(LIST_URL).json()
    assert [item["request_id"] for item in everything["items"]] == sorted(created, key=int, reverse=True)
    assert everything["next_cursor"] is None


def test_list_of_a_user_without_transfers(api_client, other_client):
    post(other_client, body())
    assert api_client.get(LIST_URL).json() == {"items": [], "next_cursor": None}


def test_list_filters_by_asset_and_status(api_client, relay):
    usdt = post(api_client, body(asset="USDT")).json()["request_id"]
    btc_pending = post(api_client, body(asset="BTC", amount="0.5")).json()["request_id"]
    btc_failed = post(api_client, body(asset="BTC", amount="0.25", from_type="spot", to_type="funding")).json()[
        "request_id"
    ]
    relay()
    get_transfer_store().compare_and_set_status(
        int(btc_failed), {TransferStatus.PENDING}, TransferStatus.FAILED, "insufficient balance"
    )

    def listed(**params):
        response = api_client.get(LIST_URL, params)
        assert response.status_code == 200, response.content
        return [item["request_id"] for item in response.json()["items"]]

    assert listed(asset="BTC") == sorted([btc_pending, btc_failed], key=int, reverse=True)
    assert listed(asset="USDT") == [usdt]
    assert listed(asset="ETH") == []
    assert listed(status="pending") == sorted([usdt, btc_pending], key=int, reverse=True)
    assert listed(status="failed") == [btc_failed]
    assert listed(asset="BTC", status="pending") == [btc_pending]
    assert listed(status="success") == []
    items, _ = walk(api_client, asset="BTC", limit=1)
    assert [item["request_id"] for item in items] == sorted([btc_pending, btc_failed], key=int, reverse=True)


def test_not_yet_published_transfers_are_pending_on_the_api(api_client, relay):
    finished = post(api_client, body()).json()["request_id"]
    published = [post(api_client, body()).json()["request_id"] for _ in range(2)]
    relay()  # stored `pending` now
    get_transfer_store().compare_and_set_status(int(finished), {TransferStatus.PENDING}, TransferStatus.SUCCESS)
    waiting = [post(api_client, body()).json()["request_id"] for _ in range(3)]  # not relayed: `requesting`
    assert {get_transfer_store().get(int(r)).status for r in waiting} == {TransferStatus.REQUESTING}

    items, pages = walk(api_client, status="pending", limit=2)
    assert [item["request_id"] for item in items] == sorted(published + waiting, key=int, reverse=True)
    assert {item["status"] for item in items} == {"pending"}
    assert pages == 3
    assert [item["request_id"] for item in walk(api_client, status="success")[0]] == [finished]
    assert {item["status"] for item in walk(api_client)[0]} == {"pending", "success"}
    assert api_client.get(detail_url(waiting[0])).json()["status"] == "pending"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"asset": "XYZ"}, "unknown_asset"),
        ({"status": "bogus"}, "invalid_status"),
        ({"status": "requesting"}, "invalid_status"),  # stored only, never shown
        ({"status": "PENDING"}, "invalid_status"),
        ({"limit": "0"}, "invalid_request"),
        ({"limit": "101"}, "invalid_request"),
        ({"limit": "abc"}, "invalid_request"),
        ({"cursor": "garbage"}, "invalid_cursor"),
        ({"cursor": "-5"}, "invalid_cursor"),
        ({"cursor": "99999999999999999999"}, "invalid_cursor"),  # 20 digits: no id is that large
        ({"page": "2"}, "invalid_request"),
    ],
)
def test_list_rejects_bad_queries(api_client, query, code):
    post(api_client, body())
    assert_error(api_client.get(LIST_URL, query), 400, code)


# --- balances -----------------------------------------------------------------


def test_balances_after_a_funding_deposit(api_client, deposit, other_user_id):
    deposit("USDT", "100.5")
    deposit("BTC", "0.00000001")
    deposit("USDT", "5000", to_user=other_user_id)  # someone else's money is not ours
    response = api_client.get(BALANCES_URL)
    assert response.status_code == 200
    assert response.json() == {
        "balances": [
            {
                "asset": "USDT",
                "funding": {"available": "100.5", "frozen": "0"},
                "spot": {"available": "0", "frozen": "0"},
            },
            {
                "asset": "BTC",
                "funding": {"available": "0.00000001", "frozen": "0"},
                "spot": {"available": "0", "frozen": "0"},
            },
            {"asset": "ETH", "funding": {"available": "0", "frozen": "0"}, "spot": {"available": "0", "frozen": "0"}},
        ]
    }


def test_balances_of_a_new_user_list_every_asset_at_zero(api_client):
    response = api_client.get(BALANCES_URL)
    assert response.status_code == 200
    balances = response.json()["balances"]
    assert [b["asset"] for b in balances] == ["USDT", "BTC", "ETH"]
    for balance in balances:
        assert balance["funding"] == {"available": "0", "frozen": "0"}
        assert balance["spot"] == {"available": "0", "frozen": "0"}


def test_deposits_add_up(api_client, deposit):
    deposit("ETH", "1.5")
    deposit("ETH", "0.25")
    eth = next(b for b in api_client.get(BALANCES_URL).json()["balances"] if b["asset"] == "ETH")
    assert eth["funding"]["available"] == "1.75"


# --- every error: status, shape, nothing stored, nothing published ------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (body(asset="USDT", to_asset="BTC"), "asset_mismatch"),
        (body(from_type="funding", to_type="funding"), "same_account"),
        (body(from_type="spot", to_type="spot"), "same_account"),
        (body(asset="XYZ"), "unknown_asset"),
        (body(asset="usdt"), "unknown_asset"),
        (body(from_type="margin"), "invalid_account_type"),
        (body(to_type="FUNDING"), "invalid_account_type"),
        (body(from_type=""), "invalid_request"),
    ],
    ids=[
        "asset_mismatch",
        "same_account_funding",
        "same_account_spot",
        "unknown_asset",
        "unknown_asset_lowercase",
        "invalid_account_type",
        "invalid_account_type_case",
        "blank_account_type",
    ],
)
def test_invalid_transfers_are_rejected(api_client, nothing_stored_or_published, data, code):
    assert_error(post(api_client, data), 400, code)
    nothing_stored_or_published()


@pytest.mark.parametrize(
    ("amount", "asset", "message_part"),
    [
        ("0", "USDT", "greater than zero"),
        ("0.000000", "USDT", "greater than zero"),
        ("-1", "USDT", "plain decimal"),
        ("-12.5", "USDT", "plain decimal"),
        ("abc", "USDT", "plain decimal"),
        ("", "USDT", "plain decimal"),
        (12.5, "USDT", "decimal string"),
        (12, "USDT", "decimal string"),
        (True, "USDT", "decimal string"),
        (["12.5"], "USDT", "decimal string"),
        ({"value": "12.5"}, "USDT", "decimal string"),
        ("12.1234567", "USDT", "more than 6 decimal places"),
        ("0.000000001", "BTC", "more than 8 decimal places"),
        ("1000000000.000001", "USDT", "above the maximum of 1000000000"),
        ("10000.00000001", "BTC", "above the maximum of 10000"),
        ("1e3", "USDT", "plain decimal"),
        ("1E3", "USDT", "plain decimal"),
        ("\uff11\uff12", "USDT", "plain decimal"),  # fullwidth digits
        ("\u0661\u0662", "USDT", "plain decimal"),  # Arabic-Indic digits
        (" 12", "USDT", "plain decimal"),
        ("12 ", "USDT", "plain decimal"),
        ("NaN", "USDT", "plain decimal"),
        ("1" * 65, "USDT", "too long"),
    ],
)
def test_invalid_amounts_are_rejected(api_client, nothing_stored_or_published, amount, asset, message_part):
    error = assert_error(post(api_client, body(asset=asset, amount=amount)), 400, "invalid_amount")
    assert message_part in error["message"]
    nothing_stored_or_published()


def test_missing_amount_is_an_invalid_request(api_client, nothing_stored_or_published):
    data = body()
    del data["amount"]
    error = assert_error(post(api_client, data), 400, "invalid_request")
    assert "amount" in error["message"]
    nothing_stored_or_published()


@pytest.mark.parametrize("client_transfer_id", ["has space", "trailing ", "\u00fc", "a/b", "a.b", "x;DROP"])
def test_invalid_client_transfer_id(api_client, nothing_stored_or_published, client_transfer_id):
    assert_error(
        post(api_client, body(client_transfer_id=client_transfer_id)),
        400,
        "invalid_client_transfer_id",
        "client_transfer_id must be 1-64 characters of A-Z a-z 0-9 _ -",
    )
    nothing_stored_or_published()


@pytest.mark.parametrize("client_transfer_id", ["x" * 65, "", 123], ids=["too_long", "empty", "json_number"])
def test_every_bad_client_transfer_id_gets_the_same_code(api_client, nothing_stored_or_published, client_transfer_id):
    # The documented rule is "1-64 characters of A-Z a-z 0-9 _ -" with its own
    # code; a client must not see a different code (or an accepted transfer)
    # depending on which part of the rule it broke.
    assert_error(post(api_client, body(client_transfer_id=client_transfer_id)), 400, "invalid_client_transfer_id")
    nothing_stored_or_published()


def test_64_character_client_transfer_id_is_accepted(api_client):
    response = post(api_client, body(client_transfer_id="A" * 64))
    assert response.status_code == 202
    assert response.json()["client_transfer_id"] == "A" * 64


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (body(memo="hi"), "memo"),
        (body(user_id=1), "user_id"),
        (
            {
                "from_account": {"account_type": "funding", "asset": "USDT", "user_id": 5},
                "to_account": {"account_type": "spot", "asset": "USDT"},
                "amount": "1",
            },
            "from_account.user_id",
        ),
    ],
)
def test_unknown_field_is_an_invalid_request(api_client, nothing_stored_or_published, data, field):
    assert_error(post(api_client, data), 400, "invalid_request", f"{field}: unknown field")
    nothing_stored_or_published()


@pytest.mark.parametrize("raw", ["{bad", '{"amount": "1",}', "", "nul", '{"a": 1'])
def test_malformed_json_is_rejected(api_client, nothing_stored_or_published, raw):
    response = api_client.post(CREATE_URL, raw, content_type="application/json")
    if raw == "":
        # An empty body is no object at all.
        assert_error(response, 400, "invalid_request")
    else:
        assert_error(response, 400, "invalid_json")
    nothing_stored_or_published()


@pytest.mark.parametrize("payload", [[body()], "a string", 12, None, [], True])
def test_body_that_is_not_an_object_is_rejected(api_client, nothing_stored_or_published, payload):
    response = api_client.post(CREATE_URL, json.dumps(payload), content_type="application/json")
    assert_error(response, 400, "invalid_request", "the body must be a JSON object")
    nothing_stored_or_published()


def test_account_that_is_not_an_object_is_rejected(api_client, nothing_stored_or_published):
    data = body()
    data["from_account"] = "funding"
    assert_error(post(api_client, data), 400, "invalid_request")
    nothing_stored_or_published()


def test_non_json_content_type_is_rejected(api_client, nothing_stored_or_published):
    response = api_client.post(CREATE_URL, "amount=1", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")
    nothing_stored_or_published()


def test_disabled_asset_is_rejected(api_client, nothing_stored_or_published):
    Asset.objects.filter(code="BTC").update(transfers_enabled=False)
    assert_error(post(api_client, body(asset="BTC")), 400, "asset_disabled", "transfers of BTC are disabled")
    nothing_stored_or_published()
    # Other assets are unaffected.
    assert post(api_client, body(asset="USDT")).status_code == 202


# --- authentication -----------------------------------------------------------


def assert_unauthorized(response) -> None:
    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"] == "X-API-Key"


def test_missing_api_key_is_unauthorized(anonymous_client, nothing_stored_or_published):
    assert_unauthorized(post(anonymous_client, body()))
    nothing_stored_or_published()


@pytest.mark.parametrize("url", [LIST_URL, BALANCES_URL, detail_url("1")])
def test_reads_need_an_api_key(anonymous_client, url):
    assert_unauthorized(anonymous_client.get(url))


@pytest.mark.parametrize(
    "make_wrong_key",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # wrong secret
        lambda key: "itk_000000000000_" + key.split("_", 2)[2],  # unknown prefix
        lambda key: "garbage",
        lambda key: "itk__",
        lambda key: key.replace("itk_", "xyz_", 1),
        lambda key: key + "_extra",
    ],
    ids=["wrong_secret", "unknown_prefix", "garbage", "empty_parts", "wrong_scheme", "extra_part"],
)
def test_wrong_api_key_is_unauthorized(db, api_key, nothing_stored_or_published, make_wrong_key):
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=make_wrong_key(api_key))
    assert_unauthorized(post(client, body()))
    assert_unauthorized(client.get(BALANCES_URL))
    nothing_stored_or_published()


def test_revoked_api_key_is_unauthorized(api_client, api_key, nothing_stored_or_published):
    assert api_client.get(BALANCES_URL).status_code == 200
    prefix = api_key.split("_")[1]
    ApiKey.objects.filter(prefix=prefix).update(revoked_at=timezone.now())
    assert_unauthorized(post(api_client, body()))
    assert_unauthorized(api_client.get(BALANCES_URL))
    nothing_stored_or_published()


def test_the_user_comes_from_the_key(api_client, user_id, relay):
    response = post(api_client, body())
    assert stored_transfer(int(response.json()["request_id"])).user_id == user_id
    assert relay()[0].key == user_id


def test_api_key_is_stored_only_as_a_hash(api_key, user_id):
    stored = ApiKey.objects.get(user_id=user_id)
    secret = api_key.split("_", 2)[2]
    assert secret not in stored.secret_hash
    assert api_key.startswith(f"itk_{stored.prefix}_")


# --- the rest of the error format ---------------------------------------------


@pytest.mark.parametrize("url", ["/nope", "/api/v1/user/nothing_here", "/api/v2/user/internal_transfer"])
def test_unknown_url_is_a_json_404(api_client, url):
    assert_error(api_client.get(url), 404, "not_found", "no such resource")


def test_wrong_method_is_a_json_405(api_client, nothing_stored_or_published):
    assert_error(api_client.get(CREATE_URL), 405, "method_not_allowed")
    assert_error(api_client.delete(detail_url("1")), 405, "method_not_allowed")
    nothing_stored_or_published()


# --- The store down ------------------------------------------------------------------


def unreachable_store_error(store) -> Exception:
    """The error the configured store's client raises when its servers cannot be reached."""
    if type(store).__name__ == "ScyllaTransferStore":
        from cassandra.cluster import NoHostAvailable

        return NoHostAvailable("Unable to connect to any servers", {"127.0.0.1:9042": ConnectionRefusedError(111)})
    from django.db import OperationalError

    return OperationalError("connection to server failed: Connection refused")


def test_a_store_that_cannot_be_reached_is_a_503_not_a_500(api_client, bus, monkeypatch):
    store = get_transfer_store()
    error = unreachable_store_error(store)
    assert store.is_unavailable(error)

    def unreachable(*args, **kwargs):
        raise error

    monkeypatch.setattr(store, "create", unreachable)
    monkeypatch.setattr(store, "get", unreachable)
    assert_error(post(api_client, body()), 503, "unavailable")
    assert_error(api_client.get("/api/v1/user/internal_transfer/386764767001313280"), 503, "unavailable")
    assert bus.published == []


def test_a_bug_in_the_store_is_still_a_500(api_client, monkeypatch):
    store = get_transfer_store()
    monkeypatch.setattr(store, "create", lambda *args, **kwargs: 1 / 0)
    api_client.raise_request_exception = False
    assert post(api_client, body()).status_code == 500
