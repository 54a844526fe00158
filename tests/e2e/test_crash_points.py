"""A process killed at each dangerous point, restarted, and the transfer still ends exactly once.

Each test starts one process of a real stack with CRASH_AT=<point>
(transfer_site/faults.py): it ends itself there with os._exit -- no cleanup,
no Kafka offset commit, no Celery acknowledgement. The test sees it die at
that point (exit code, or the log line when gunicorn's or Celery's parent
process outlives the worker that died), checks the state it left behind,
restarts it without CRASH_AT and then checks that the transfer reached the
right terminal state once, that the balances moved exactly once, and that
the ledger and UBSCore agree (tests/e2e/audit.py).

One stack for the module, with a short STUCK_TRANSFER_SECONDS so the
re-drive comes quickly. Consumers are stopped with SIGTERM before a crash
run so they leave their Kafka group at once; after a crash the restarted one
waits for the broker to expire the dead member (~18 s on Tansu).
"""

import http.client
import json
import os
import signal
import time

import pytest

from tests.e2e.audit import run_audit
from tests.e2e.conftest import TERMINAL, User, _user_ids, count_log
from tests.e2e.seed import run_seed
from tests.e2e.stack import Stack, wait_until
from transfer_site import faults, topics

pytestmark = pytest.mark.e2e

CRASH_MESSAGE = "crash point reached; exiting without cleanup"
CONSUMERS = ("bridge", "ubscore")
SINGLE_PROCESSES = ("relay", *CONSUMERS)  # no parent process: the crash ends the process itself


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(
        tmp_path_factory.mktemp("crash-stack"), {"STUCK_TRANSFER_SECONDS": "2", "REDRIVE_INTERVAL_SECONDS": "1"}
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop(sig=signal.SIGKILL)  # nothing to keep: no need to wait for graceful stops


# Each test's user and what it holds before the test (seeded at once: one process, not a manage.py each).
DEPOSITS = {
    "web": [("USDT", "100", "funding"), ("USDT", "10", "spot")],
    "relay": [("USDT", "20", "funding"), ("USDT", "20", "spot")],
    "reserve": [("BTC", "2", "funding")],
    "ubscore_apply": [("ETH", "5", "spot"), ("ETH", "5", "funding")],
    "settle_before": [("USDT", "50", "funding"), ("USDT", "50", "spot")],
    "settle_after": [("BTC", "1", "funding"), ("BTC", "1", "spot")],
    "bridge_commit": [("USDT", "10", "funding")],
    "ubscore_commit": [("ETH", "3", "spot")],
    "webhook_confirm": [("USDT", "30", "funding")],
}


class Users(dict):
    """name -> User, and the deposits made for them (to check every balance against)."""

    deposits: list[dict]


@pytest.fixture(scope="module")
def users(stack) -> Users:
    ids = {name: next(_user_ids) for name in DEPOSITS}
    seeded = run_seed(stack, list(ids.values()), [
        (ids[name], *deposit) for name, deposits in DEPOSITS.items() for deposit in deposits])
    users = Users({name: User(stack, user_id, seeded["keys"][user_id]) for name, user_id in ids.items()})
    users.deposits = seeded["deposits"]
    return users


# --- helpers -------------------------------------------------------------------


_crashing: set[str] = set()  # processes running with CRASH_AT


def start_crashing_at(stack: Stack, process: str, point: str) -> int:
    """Restart `process` with CRASH_AT=point; the log line its crash will be found after."""
    since = len(stack.log_lines(process))
    sig = signal.SIGTERM if process in CONSUMERS else signal.SIGKILL  # consumers leave their group
    _crashing.add(process)
    stack.restart_process(process, sig=sig, extra_env={"CRASH_AT": point})
    return since


def restart_without_crash_point(stack: Stack, process: str) -> None:
    """SIGKILL whatever is left of it (gunicorn's or Celery's parent) and start it as deployed."""
    stack.restart_process(process)
    _crashing.discard(process)


@pytest.fixture(autouse=True)
def _no_crash_point_left_behind(stack):
    yield
    for process in sorted(_crashing):  # a test that failed half-way must not break the next ones
        restart_without_crash_point(stack, process)


def crashes(stack: Stack, process: str, point: str, since: int) -> list[dict]:
    found = []
    for line in stack.log_lines(process)[since:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("message") == CRASH_MESSAGE and record.get("crash_point") == point:
            found.append(record)
    return found


def wait_crashed(stack: Stack, process: str, point: str, since: int, count: int = 1) -> list[dict]:
    wait_until(lambda: len(crashes(stack, process, point, since)) >= count, 60, f"{process} to crash at {point}")
    found = crashes(stack, process, point, since)
    if process in SINGLE_PROCESSES:  # the process itself ended, with the crash point's exit code
        assert stack.wait_exit(process, 30) == faults.CRASH_EXIT_CODE
    else:  # a gunicorn or Celery pool worker died; its parent reports the exit code
        code = faults.CRASH_EXIT_CODE
        reports = [f"(pid:{r['pid']}) exited with code {code}." for r in found] if process == "web" else [
            f"pid:{r['pid']} exited with 'exitcode {code}'" for r in found]

        def parent_reported_exits() -> bool:
            stdout = (stack.var_dir / f"{process}.out").read_text(errors="replace")
            output = "\n".join(stack.log_lines(process)) + stdout
            return all(report in output for report in reports)

        wait_until(parent_reported_exits, 30, f"the {process} parent to report exit code {code}")
    return found


def state_of(stack: Stack, *request_ids: str) -> dict[str, dict]:
    return run_audit(stack, request_ids=[int(r) for r in request_ids])["transfers"]


def assert_settled_exactly_once(stack: Stack, users: Users, expected: dict[str, tuple[str, str | None]]) -> None:
    """Every transfer of the stack finished and consistent, every balance as the deposits and the
    successful transfers imply; these transfers with this outcome."""
    report = run_audit(stack, deposits=users.deposits)
    assert report["violations"] == []
    for request_id, (status, error) in expected.items():
        transfer = report["transfers"][request_id]
        assert (transfer["status"], transfer["error_message"]) == (status, error), transfer
    assert all(t["status"] in TERMINAL for t in report["transfers"].values())
    for code, row in report["assets"].items():
        assert row["conserved"] and row["reconciled"], (code, row)
        assert row["in_flight"] == 0 and row["reserved"] == 0, (code, row)


def status_of(user, request_id: str) -> str:
    status, body = user.get_transfer(request_id)
    assert status == 200, body
    return body["status"]


def posted(user, source: str, destination: str, asset: str, amount: str, **extra) -> str:
    status, body = user.transfer(source, destination, asset, amount, **extra)
    assert status == 202, body
    return body["request_id"]


# --- (a) web: record stored, no answer sent ------------------------------------------


def test_web_dies_after_storing_a_transfer_before_answering(stack, users):
    user = users["web"]
    since = start_crashing_at(stack, "web", faults.WEB_AFTER_STORE)

    for source, destination, amount, client_id in (
        ("funding", "spot", "30", "crash-web-in"),
        ("spot", "funding", "4", "crash-web-out"),
    ):
        with pytest.raises((OSError, http.client.HTTPException)):  # the worker died mid-request
            user.transfer(source, destination, "USDT", amount, client_transfer_id=client_id)
    crashed = wait_crashed(stack, "web", faults.WEB_AFTER_STORE, since, count=2)
    inbound_id, outbound_id = (record["request_id"] for record in crashed[:2])
    restart_without_crash_point(stack, "web")

    # The client retries: the same transfer, stored before the crash, comes back.
    status, replay = user.transfer("funding", "spot", "USDT", "30", client_transfer_id="crash-web-in")
    assert status == 202
    assert replay["request_id"] == inbound_id
    # The other client never comes back: the relay publishes it anyway.
    assert user.wait_terminal(inbound_id)["status"] == "success"
    assert user.wait_terminal(outbound_id)["status"] == "success"
    assert user.balance("USDT") == ("74", "0", "36", "0")
    assert_settled_exactly_once(stack, users, {inbound_id: ("success", None), outbound_id: ("success", None)})


# --- (a2) relay: first messages published, transfers not marked pending -------------


def test_relay_dies_after_publishing_before_marking_pending(stack, users):
    user = users["relay"]
    # Both transfers wait for the relay, so its one batch holds both; settlement is held back
    # (SIGSTOP) so the messages are still unread when the restarted relay publishes them again,
    # and so is the re-drive (beat and the worker): it would otherwise take a transfer that has
    # waited STUCK_TRANSFER_SECONDS on, and the restarted relay would rightly leave it alone.
    stack.stop_process("relay")
    inbound_id = posted(user, "funding", "spot", "USDT", "6")
    outbound_id = posted(user, "spot", "funding", "USDT", "2")
    pipeline = [stack.processes[name].pid for name in ("bridge", "ubscore", "worker", "beat")]
    for pid in pipeline:
        os.killpg(pid, signal.SIGSTOP)
    try:
        since = len(stack.log_lines("relay"))
        _crashing.add("relay")
        stack.start_process("relay", {"CRASH_AT": faults.RELAY_AFTER_PUBLISH})
        wait_crashed(stack, "relay", faults.RELAY_AFTER_PUBLISH, since)
        # Stored `requesting` (the API shows `pending`), then marked `pending` by the restarted relay.
        assert [status_of(user, request_id) for request_id in (inbound_id, outbound_id)] == ["pending"] * 2
        assert [t["status"] for t in state_of(stack, inbound_id, outbound_id).values()] == ["requesting"] * 2
        restart_without_crash_point(stack, "relay")  # publishes both again, then marks them `pending`
        wait_until(lambda: {t["status"] for t in state_of(stack, inbound_id, outbound_id).values()} == {"pending"},
                   30, "the restarted relay to mark both pending")
    finally:
        for pid in pipeline:
            os.killpg(pid, signal.SIGCONT)

    assert user.wait_terminal(inbound_id)["status"] == "success"
    assert user.wait_terminal(outbound_id)["status"] == "success"
    # Each message went out (at least) twice: settlement took the request again, UBSCore answered the
    # repeat as before. (The re-drive, STUCK_TRANSFER_SECONDS=2 here, may add a copy afterwards.)
    requests_topic = stack.topic(topics.TRANSFER_REQUESTS)

    def requests_handed_over() -> int:
        return sum(1 for record in stack.log_records("bridge") if record.get("message") == "handed to settlement"
                   and record.get("request_id") == inbound_id and record.get("topic") == requests_topic)

    wait_until(lambda: requests_handed_over() >= 2, 30, "the bridge to hand the repeated TransferRequested over")
    assert count_log(stack, "ubscore", "balance operation repeated; answering as before", outbound_id) >= 1
    assert count_log(stack, "ubscore", "balance operation applied", outbound_id) == 1
    assert user.balance("USDT") == ("16", "0", "24", "0")
    assert_settled_exactly_once(stack, users, {inbound_id: ("success", None), outbound_id: ("success", None)})


# --- (b) worker: reserve in the ledger, TransferIn not published --------------------


def test_worker_dies_after_reserving_before_sending_transfer_in(stack, users):
    user = users["reserve"]
    since = start_crashing_at(stack, "worker", faults.RESERVE_AFTER_LEDGER)

    request_id = posted(user, "funding", "spot", "BTC", "0.5")
    wait_crashed(stack, "worker", faults.RESERVE_AFTER_LEDGER, since)
    # Dead with the funds reserved and nothing sent to UBSCore.
    left = state_of(stack, request_id)[request_id]
    assert (left["status"], left["ledger"], left["ubscore"]) == ("pending", {"reserve": 50_000_000}, None)
    assert user.balance("BTC") == ("1.5", "0.5", "0", "0")
    restart_without_crash_point(stack, "worker")

    assert user.wait_terminal(request_id)["status"] == "success"
    assert user.balance("BTC") == ("1.5", "0", "0.5", "0")
    assert_settled_exactly_once(stack, users, {request_id: ("success", None)})


# --- (c) UBSCore: balance changed and committed, event not published -------------------


def test_ubscore_dies_after_applying_before_answering(stack, users):
    user = users["ubscore_apply"]
    since = start_crashing_at(stack, "ubscore", faults.UBSCORE_AFTER_APPLY)

    outbound = posted(user, "spot", "funding", "ETH", "2")
    too_much = posted(user, "spot", "funding", "ETH", "50")
    inbound = posted(user, "funding", "spot", "ETH", "1")
    wait_crashed(stack, "ubscore", faults.UBSCORE_AFTER_APPLY, since)
    # Spot was debited, the answer never went out: the transfer is still on its way.
    left = state_of(stack, outbound)[outbound]
    assert left["ubscore"]["status"] == "applied"
    assert (left["status"], left["ledger"]) == ("pending", {})
    restart_without_crash_point(stack, "ubscore")

    assert user.wait_terminal(outbound)["status"] == "success"
    assert user.wait_terminal(too_much)["error_message"] == "insufficient balance"
    assert user.wait_terminal(inbound)["status"] == "success"
    assert user.balance("ETH") == ("6", "0", "4", "0")
    assert_settled_exactly_once(stack, users, {
        outbound: ("success", None), too_much: ("failed", "insufficient balance"), inbound: ("success", None)})


# --- (d) worker: balance event taken, ledger not yet posted ----------------------------


def test_worker_dies_after_taking_the_event_before_the_ledger_step(stack, users):
    user = users["settle_before"]
    since = start_crashing_at(stack, "worker", faults.SETTLE_BEFORE_LEDGER)

    inbound = posted(user, "funding", "spot", "USDT", "20")
    outbound = posted(user, "spot", "funding", "USDT", "5")
    wait_crashed(stack, "worker", faults.SETTLE_BEFORE_LEDGER, since)

    def both_answered_by_ubscore():
        states = state_of(stack, inbound, outbound)
        return states if all(s["ubscore"] for s in states.values()) else None

    left = wait_until(both_answered_by_ubscore, 60, "UBSCore to answer both")
    # Spot moved both ways; the ledger has not followed yet.
    assert (left[inbound]["status"], left[inbound]["ledger"]) == ("pending", {"reserve": 20_000_000})
    assert (left[outbound]["status"], left[outbound]["ledger"]) == ("pending", {})
    restart_without_crash_point(stack, "worker")

    assert user.wait_terminal(inbound)["status"] == "success"
    assert user.wait_terminal(outbound)["status"] == "success"
    assert user.balance("USDT") == ("35", "0", "65", "0")
    assert_settled_exactly_once(stack, users, {inbound: ("success", None), outbound: ("success", None)})


# --- (e) worker: ledger posted, status not updated -----------------------------------


def test_worker_dies_between_the_ledger_step_and_the_status(stack, users):
    user = users["settle_after"]
    since = start_crashing_at(stack, "worker", faults.SETTLE_AFTER_LEDGER)

    inbound = posted(user, "funding", "spot", "BTC", "0.3")
    outbound = posted(user, "spot", "funding", "BTC", "0.1")
    wait_crashed(stack, "worker", faults.SETTLE_AFTER_LEDGER, since)

    def a_ledger_step_done():
        states = state_of(stack, inbound, outbound)
        done = "post" in states[inbound]["ledger"] or "credit" in states[outbound]["ledger"]
        return states if done else None

    # (One batch posts, then credits: the crash after the post may keep the
    # credit from ever running until the restart, so one is enough here.)
    left = wait_until(a_ledger_step_done, 60, "a ledger step")
    # Money moved in the ledger; the record does not know yet.
    for request_id, step in ((inbound, "post"), (outbound, "credit")):
        if step in left[request_id]["ledger"]:
            assert left[request_id]["status"] == "pending"
            assert left[request_id]["ubscore"]["status"] == "applied"
    restart_without_crash_point(stack, "worker")

    assert user.wait_terminal(inbound)["status"] == "success"
    assert user.wait_terminal(outbound)["status"] == "success"
    assert user.balance("BTC") == ("0.8", "0", "1.2", "0")
    assert_settled_exactly_once(stack, users, {inbound: ("success", None), outbound: ("success", None)})


# --- (f) Kafka offset commit lost after the work was done -------------------------------


def test_bridge_loses_its_offset_commit(stack, users):
    user = users["bridge_commit"]
    since = start_crashing_at(stack, "bridge", faults.CONSUMER_BEFORE_COMMIT)

    request_id = posted(user, "funding", "spot", "USDT", "3")
    wait_crashed(stack, "bridge", faults.CONSUMER_BEFORE_COMMIT, since)
    assert count_log(stack, "bridge", "handed to settlement", request_id) == 1
    restart_without_crash_point(stack, "bridge")

    # The restarted bridge gets the uncommitted batch again and hands it over again.
    wait_until(lambda: count_log(stack, "bridge", "handed to settlement", request_id) >= 2, 60,
               "the bridge to hand the request over again")
    assert user.wait_terminal(request_id)["status"] == "success"
    wait_until(lambda: count_log(stack, "worker", "request for a finished transfer; nothing to do", request_id)
               + count_log(stack, "worker", "funds reserved in the funding ledger", request_id) >= 2, 60,
               "settlement to see the repeated request")
    assert user.balance("USDT") == ("7", "0", "3", "0")
    assert_settled_exactly_once(stack, users, {request_id: ("success", None)})


def test_ubscore_loses_its_offset_commit(stack, users):
    user = users["ubscore_commit"]
    since = start_crashing_at(stack, "ubscore", faults.CONSUMER_BEFORE_COMMIT)

    outbound = posted(user, "spot", "funding", "ETH", "1")
    too_much = posted(user, "spot", "funding", "ETH", "9")
    wait_crashed(stack, "ubscore", faults.CONSUMER_BEFORE_COMMIT, since)
    restart_without_crash_point(stack, "ubscore")

    # Applied and answered once; after the restart the same operations come again.
    wait_until(lambda: count_log(stack, "ubscore", "balance operation repeated; answering as before", outbound) >= 1,
               60, "UBSCore to see the operation again")
    assert count_log(stack, "ubscore", "balance operation applied", outbound) == 1
    assert user.wait_terminal(outbound)["status"] == "success"
    assert user.wait_terminal(too_much)["error_message"] == "insufficient balance"
    assert user.balance("ETH") == ("1", "0", "2", "0")
    assert_settled_exactly_once(
        stack, users, {outbound: ("success", None), too_much: ("failed", "insufficient balance")})


# --- (g) the status stored, its webhook event not yet confirmed ---------------------------


def test_worker_dies_between_the_status_and_its_webhook_event(stack, users):
    from tests.webhooks.receiver import Receiver
    from webhooks import signing

    user = users["webhook_confirm"]
    receiver = Receiver()
    try:
        status, endpoint = stack.http("POST", "/api/v1/user/webhooks", user.api_key, {"url": receiver.url})
        assert status == 201, endpoint
        since = start_crashing_at(stack, "worker", faults.FINISH_BEFORE_WEBHOOK_CONFIRM)

        request_id = posted(user, "funding", "spot", "USDT", "7")
        wait_crashed(stack, "worker", faults.FINISH_BEFORE_WEBHOOK_CONFIRM, since)
        # The status is stored; the event waits, held, for a confirmation that will not come from this worker.
        assert user.wait_terminal(request_id)["status"] == "success"
        restart_without_crash_point(stack, "worker")

        # Beat's sweep confirms it from the store (WEBHOOK_CONFIRM_AFTER_SECONDS later), and it is delivered.
        wait_until(lambda: receiver.delivered_ids() == {f"evt_{request_id}"}, 60, "the swept event's delivery")
        headers, body = receiver.received[-1]
        assert signing.verify(endpoint["secret"], headers["Webhook-Timestamp"], headers["Webhook-Signature"], body,
                              now=int(time.time()))
        assert json.loads(body)["data"] == user.get_transfer(request_id)[1]
        assert_settled_exactly_once(stack, users, {request_id: ("success", None)})
    finally:
        receiver.close()
