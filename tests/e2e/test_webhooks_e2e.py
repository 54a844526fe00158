"""Webhooks through the real processes: transfers finish, the webhooks worker POSTs them to receivers on loopback.

Receivers verify each delivery's signature as a user's server would; one
fails before it recovers, one is too slow to answer at all, and neither delays
the healthy one's deliveries.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.stack import wait_until
from tests.webhooks.receiver import Receiver
from webhooks import signing

pytestmark = pytest.mark.e2e


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def register(user, url: str) -> dict:
    status, body = user.stack.http("POST", "/api/v1/user/webhooks", user.api_key, {"url": url})
    assert status == 201, body
    return body


def event_ids(receiver: Receiver) -> set[str]:
    return {document["id"] for document in receiver.documents()}


def metric(stack, name: str, labels: str = "") -> float:
    import urllib.request

    with urllib.request.urlopen(stack.base_url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_every_final_status_reaches_each_receiver_signed(stack, user, receivers):
    other = type(user)(stack, user.user_id + 500_000, stack.create_api_key(user.user_id + 500_000))
    healthy, flaky, slow, others = (receivers(), receivers(fail_first=3), receivers(delay_seconds=3),
                                    receivers())
    secrets = {receiver: register(user, receiver.url)["secret"] for receiver in (healthy, flaky, slow)}
    secrets[others] = register(other, others.url)["secret"]
    attempts_before = {
        outcome: metric(stack, "internal_transfer_webhook_delivery_attempts_total", f'{{outcome="{outcome}"}}')
        for outcome in ("delivered", "http_error", "timeout")
    }

    user.deposit("USDT", "100", "funding")
    user.deposit("BTC", "1", "spot")
    other.deposit("USDT", "5", "funding")
    created = [user.transfer("funding", "spot", "USDT", "10")[1], user.transfer("spot", "funding", "BTC", "0.25")[1],
               user.transfer("funding", "spot", "USDT", "1000")[1]]
    other_created = other.transfer("funding", "spot", "USDT", "5")[1]
    finished = {body["request_id"]: user.wait_terminal(body["request_id"]) for body in created}
    finished_at = time.monotonic()
    assert [finished[body["request_id"]]["status"] for body in created] == ["success", "success", "failed"]
    expected = {f"evt_{request_id}" for request_id in finished}

    # The healthy receiver has all three promptly, though the slow one holds its own deliveries meanwhile.
    wait_until(lambda: healthy.delivered_ids() == expected, 20, "the healthy receiver's events")
    assert time.monotonic() - finished_at < 5
    for headers, body in healthy.received:
        assert signing.verify(secrets[healthy], headers["Webhook-Timestamp"], headers["Webhook-Signature"], body,
                              now=int(time.time()))
        assert not signing.verify(secrets[flaky], headers["Webhook-Timestamp"], headers["Webhook-Signature"], body,
                                  now=int(time.time()))
    for document in healthy.documents():
        request_id = document["data"]["request_id"]
        assert document["data"] == user.get_transfer(request_id)[1]  # the transfer as GET shows it
        assert document["type"] == {"success": "transfer.succeeded", "failed": "transfer.failed"}[
            finished[request_id]["status"]]
        assert document["created_at"] == finished[request_id]["updated_at"]
    assert len(healthy.received) == 3  # nothing twice when the receiver answered 2xx

    # The flaky receiver's first three answers were 500s: retried, it gets every event in the end.
    wait_until(lambda: flaky.delivered_ids() == expected, 40, "the flaky receiver's events after its failures")
    assert len(flaky.received) >= 6 and event_ids(flaky) == expected
    # Another user's receiver gets that user's transfer only.
    wait_until(lambda: others.delivered_ids() == {f"evt_{other_created['request_id']}"}, 20,
               "the other user's event")
    assert all(document["data"]["request_id"] != body["request_id"]
               for document in others.documents() for body in created)

    # The slow receiver never answers in time: its attempts time out, and are counted.
    wait_until(lambda: len(slow.received) >= 3, 20, "attempts at the slow receiver")
    wait_until(lambda: metric(stack, "internal_transfer_webhook_delivery_attempts_total", '{outcome="timeout"}')
               > attempts_before["timeout"], 20, "timeouts counted")
    assert metric(stack, "internal_transfer_webhook_delivery_attempts_total", '{outcome="delivered"}') \
        >= attempts_before["delivered"] + 7
    assert metric(stack, "internal_transfer_webhook_delivery_attempts_total", '{outcome="http_error"}') \
        >= attempts_before["http_error"] + 3

    # Deleted, the slow endpoint gets nothing more: its retries are cancelled.
    status, listing = stack.http("GET", "/api/v1/user/webhooks", user.api_key)
    assert status == 200, listing
    slow_id = next(item["id"] for item in listing["items"] if item["url"] == slow.url)
    assert stack.http("DELETE", f"/api/v1/user/webhooks/{slow_id}", user.api_key)[0] == 204
    time.sleep(1.5)  # an attempt under way when it was deleted may still arrive
    attempts_at_slow = len(slow.received)
    time.sleep(6)  # longer than the back-off between its retries
    assert len(slow.received) == attempts_at_slow
