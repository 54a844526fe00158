"""Both directions through real processes: HTTP -> Kafka -> Celery -> ledger/UBSCore."""

import pytest

from tests.e2e.conftest import count_log, publish_raw
from tests.e2e.stack import wait_until
from transfer_site import topics
from transfer_site.messages import BalanceEvent, BalanceOperation, TransferRequested

pytestmark = pytest.mark.e2e


def test_funding_to_spot_moves_exactly_the_amount(user):
    user.deposit("USDT", "100", "funding")
    assert user.balance("USDT") == ("100", "0", "0", "0")

    status, created = user.transfer("funding", "spot", "USDT", "12.5")

    assert status == 202, created
    assert created["status"] == "pending"
    assert created["amount"] == "12.5"
    finished = user.wait_terminal(created["request_id"])
    assert finished["status"] == "success"
    assert finished["error_message"] is None
    assert user.balance("USDT") == ("87.5", "0", "12.5", "0")


def test_spot_to_funding_moves_exactly_the_amount(user):
    user.deposit("BTC", "1.5", "spot")
    assert user.balance("BTC") == ("0", "0", "1.5", "0")

    status, created = user.transfer("spot", "funding", "BTC", "0.25")

    assert status == 202, created
    finished = user.wait_terminal(created["request_id"])
    assert finished["status"] == "success"
    assert user.balance("BTC") == ("0.25", "0", "1.25", "0")


def test_insufficient_funding_fails_and_moves_nothing(user):
    user.deposit("USDT", "10", "funding")

    status, created = user.transfer("funding", "spot", "USDT", "20")

    assert status == 202, created
    finished = user.wait_terminal(created["request_id"])
    assert finished["status"] == "failed"
    assert finished["error_message"] == "insufficient balance"
    assert user.balance("USDT") == ("10", "0", "0", "0")


def test_insufficient_spot_fails_and_moves_nothing(user):
    user.deposit("ETH", "1", "spot")

    status, created = user.transfer("spot", "funding", "ETH", "2")

    assert status == 202, created
    finished = user.wait_terminal(created["request_id"])
    assert finished["status"] == "failed"
    assert finished["error_message"] == "insufficient balance"
    assert user.balance("ETH") == ("0", "0", "1", "0")


def test_asset_mismatch_is_rejected_before_anything_moves(user):
    user.deposit("USDT", "5", "funding")
    body = {
        "from_account": {"account_type": "funding", "asset": "USDT"},
        "to_account": {"account_type": "spot", "asset": "BTC"},
        "amount": "1",
    }

    status, error = user.stack.http("POST", "/api/v1/user/internal_transfer", user.api_key, body)

    assert status == 400
    assert error["error"]["code"] == "asset_mismatch"
    listing_status, listing = user.stack.http("GET", "/api/v1/user/internal_transfers", user.api_key)
    assert listing_status == 200
    assert listing["items"] == []


def test_duplicate_client_transfer_id_moves_once(user):
    user.deposit("USDT", "50", "funding")

    first_status, first = user.transfer("funding", "spot", "USDT", "7", client_transfer_id="order-7")
    second_status, second = user.transfer("funding", "spot", "USDT", "7", client_transfer_id="order-7")
    conflict_status, conflict = user.transfer("funding", "spot", "USDT", "8", client_transfer_id="order-7")

    assert (first_status, second_status) == (202, 202)
    assert second["request_id"] == first["request_id"]
    assert conflict_status == 409
    assert conflict["error"]["code"] == "conflict"
    assert user.wait_terminal(first["request_id"])["status"] == "success"
    listing_status, listing = user.stack.http("GET", "/api/v1/user/internal_transfers", user.api_key)
    assert listing_status == 200
    assert [item["request_id"] for item in listing["items"]] == [first["request_id"]]
    assert user.balance("USDT") == ("43", "0", "7", "0")


def test_redelivered_messages_change_nothing(user):
    stack = user.stack
    user.deposit("USDT", "30", "funding")
    user.deposit("USDT", "30", "spot")
    _, inbound = user.transfer("funding", "spot", "USDT", "10")
    _, outbound = user.transfer("spot", "funding", "USDT", "4")
    inbound_id, outbound_id = inbound["request_id"], outbound["request_id"]
    assert user.wait_terminal(inbound_id)["status"] == "success"
    assert user.wait_terminal(outbound_id)["status"] == "success"
    balances_before = user.balance("USDT")
    assert balances_before == ("24", "0", "36", "0")

    # Every message of both transfers, delivered once more.
    amount_in, amount_out = 10_000_000, 4_000_000
    uid = user.user_id
    publish_raw(stack, topics.TRANSFER_REQUESTS, uid, TransferRequested(
        request_id=int(inbound_id), user_id=uid, asset_id=1, amount=amount_in, direction="funding_to_spot").to_json())
    for ref_id, operation, amount in ((inbound_id, "TransferIn", amount_in), (outbound_id, "TransferOut", amount_out)):
        publish_raw(stack, topics.BALANCE_OPERATIONS, uid, BalanceOperation(
            ref_id=int(ref_id), operation=operation, user_id=uid, asset_id=1, amount=amount).to_json())
        publish_raw(stack, topics.BALANCE_EVENTS, uid, BalanceEvent(
            ref_id=int(ref_id), operation=operation, user_id=uid, asset_id=1, amount=amount,
            status="applied", reason=None).to_json())

    # Wait until each process has seen the repeats and said it did nothing.
    wait_until(lambda: count_log(stack, "worker", "request for a finished transfer; nothing to do", inbound_id) >= 1,
               60, "settlement to see the repeated request")
    wait_until(lambda: all(
        count_log(stack, "ubscore", "balance operation repeated; answering as before", ref) >= 1
        for ref in (inbound_id, outbound_id)), 60, "UBSCore to see the repeated operations")
    # UBSCore's re-emitted answers plus our own repeats: two more events each,
    # each either found finished or folded into a batch with its twin.
    def repeats_settled(ref: str) -> int:
        return count_log(stack, "worker", "balance event for a finished transfer; nothing to do", ref) + count_log(
            stack, "worker", "repeated balance event in one batch; handled once", ref)

    wait_until(lambda: all(repeats_settled(ref) >= 2 for ref in (inbound_id, outbound_id)),
               60, "settlement to see the repeated events")

    assert user.balance("USDT") == balances_before
    assert user.get_transfer(inbound_id)[1]["status"] == "success"
    assert user.get_transfer(outbound_id)[1]["status"] == "success"
