"""Two copies of every process that scales out, over four partitions, with copies joining and leaving.

A stack of its own runs two copies each of the web server, the outbox relay,
the bridge, the settlement worker and UBSCore. Eight users send transfers in
both directions while a third relay, bridge and UBSCore join (a rebalance of
each group) and then one copy of each is stopped (SIGTERM for the relay and
UBSCore, SIGKILL for the bridge: a rebalance after the session timeout).
Afterwards:

* every transfer is final, moved its amount exactly once on each side, and
  every balance is what the deposits and the successful transfers imply
  (tests/e2e/audit.py);
* each relay copy published only transfers of users in the shards it had
  been assigned at that moment (its "shards assigned" log lines), and both
  first copies published some;
* on Kafka, each user's first messages that a relay published
  (TransferRequested on `internal_transfer.requests`, TransferOut on
  `balance.operations`) appear in the order the user sent the transfers,
  whichever relay sent them.
"""

from __future__ import annotations

import datetime
import json
import signal
import threading
import time

import pytest

from tests.e2e.audit import count_in_flight, run_audit
from tests.e2e.conftest import TERMINAL, _user_ids
from tests.e2e.seed import run_seed
from tests.e2e.stack import Stack, wait_until
from transfer_site.messages import BalanceOperation, TransferRequested, decode

pytestmark = pytest.mark.e2e

USERS = 8
TRANSFERS_PER_USER = 12
ASSETS_TO_EACH = [("USDT", "1000", "funding"), ("USDT", "1000", "spot")]


@pytest.fixture(scope="module")
def copies_stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("copies"), copies=2)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop(sig=signal.SIGKILL)  # twelve processes: a graceful stop of each took 46 s; nothing is kept


def test_two_copies_of_every_process_move_each_transfer_once_and_keep_each_users_order(copies_stack):
    stack = copies_stack
    partitions = int(stack.env.get("KAFKA_TOPIC_PARTITIONS", "4"))
    wait_until(lambda: _shards_settled(stack, ["relay", "relay-2"], partitions), 60,
               "the two relays to share the shards")
    users = [next(_user_ids) for _ in range(USERS)]
    seeded = run_seed(stack, users, [(user, *deposit) for user in users for deposit in ASSETS_TO_EACH])
    sent: dict[int, list[str]] = {user: [] for user in users}
    refused: list[tuple[int, object]] = []

    def send(user: int) -> None:
        for number in range(TRANSFERS_PER_USER):
            source, destination = ("funding", "spot") if number % 2 else ("spot", "funding")
            body = {"from_account": {"account_type": source, "asset": "USDT"},
                    "to_account": {"account_type": destination, "asset": "USDT"}, "amount": "1.25",
                    "client_transfer_id": f"copies-{user}-{number}"}
            for _ in range(20):  # a web copy stopped under a request: retried, as a client would
                try:
                    status, answer = stack.http("POST", "/api/v1/user/internal_transfer", seeded["keys"][user], body)
                except OSError:
                    time.sleep(0.2)
                    continue
                break
            if status in (200, 202):
                sent[user].append(answer["request_id"])
            else:
                refused.append((status, answer))
            time.sleep(0.25)

    senders = [threading.Thread(target=send, args=(user,), daemon=True) for user in users]
    for sender in senders:
        sender.start()
    time.sleep(1)
    for name in ("relay-3", "bridge-3", "ubscore-3"):  # joins: every group rebalances
        stack.start_process(name)
    time.sleep(1)
    stack.stop_process("relay-2", signal.SIGTERM)  # leaves its group at once
    stack.stop_process("ubscore-2", signal.SIGTERM)
    stack.stop_process("bridge", signal.SIGKILL)  # its partitions move after the session timeout
    for sender in senders:
        sender.join(timeout=120)

    assert refused == []
    assert sum(map(len, sent.values())) == USERS * TRANSFERS_PER_USER
    wait_until(lambda: count_in_flight(stack) == 0, 180, "every transfer to finish")
    report = run_audit(stack, users=users, deposits=seeded["deposits"])
    assert report["violations"] == []
    assert all(report["transfers"][rid]["status"] in TERMINAL for rids in sent.values() for rid in rids)
    for code, row in report["assets"].items():
        assert row["conserved"] and row["reconciled"], (code, row)

    published = _relay_publishes(stack, [rid for rids in sent.values() for rid in rids])
    by_process: dict[str, int] = {}
    for request_id, (process, at_ms) in published.items():
        user = next(u for u, rids in sent.items() if request_id in rids)
        owned = _shards_owned_at(stack, process, at_ms)
        assert user % partitions in owned, f"{process} published {request_id} of user {user} owning {owned}"
        by_process[process] = by_process.get(process, 0) + 1
    assert by_process.get("relay", 0) > 0 and by_process.get("relay-2", 0) > 0, by_process

    first_seen = _first_messages_per_user(stack, set(users))
    for user, request_ids in sent.items():
        # Transfer n went spot -> funding (TransferOut) for even n, funding -> spot for odd n.
        # Only what a relay published (the re-drive finishes a funding -> spot transfer left `requesting`
        # for STUCK_TRANSFER_SECONDS -- a rebalance pauses the relays for seconds -- without a message).
        for first_message, parity in (("TransferOut", 0), ("TransferRequested", 1)):
            sent_order = [int(rid) for n, rid in enumerate(request_ids) if n % 2 == parity and rid in published]
            seen = [rid for rid in first_seen[(user, first_message)] if str(rid) in published]
            assert seen == sent_order, f"user {user}, {first_message}: on Kafka {seen}, sent {sent_order}"


def _assignments(stack: Stack, name: str) -> list[tuple[int, frozenset[int]]]:
    """(time in ms, shards) of each "shards assigned" and "shards revoked" (none) line of a relay copy's log."""
    found = []
    for record in stack.log_records(name):
        if record.get("message") in ("shards assigned", "shards revoked"):
            at = datetime.datetime.fromisoformat(record["ts"]).timestamp() * 1000
            found.append((int(at), frozenset(record.get("shards", ()))))  # revoked: none
    return found


def _shards_settled(stack: Stack, names: list[str], partitions: int) -> bool:
    """Every copy owns some shards, and together each shard once."""
    latest = [(_assignments(stack, name) or [(0, frozenset())])[-1][1] for name in names]
    return all(latest) and sorted(shard for shards in latest for shard in shards) == list(range(partitions))


def _shards_owned_at(stack: Stack, process: str, at_ms: int) -> frozenset[int]:
    owned: frozenset[int] = frozenset()
    for assigned_at, shards in _assignments(stack, process):
        if assigned_at <= at_ms:
            owned = shards
    return owned


def _relay_publishes(stack: Stack, request_ids: list[str]) -> dict[str, tuple[str, int]]:
    """request id -> (relay copy, time) of each transfer's first publish by a relay."""
    code = (
        "import json\n"
        "from transfers.store import get_transfer_store\n"
        "store = get_transfer_store()\n"
        f"ids = {[int(r) for r in request_ids]!r}\n"
        "out = {}\n"
        "for rid in ids:\n"
        "    for e in store.timeline(rid):\n"
        "        if e.kind.value in ('published', 'transfer_out_sent') and e.process.startswith('relay'):\n"
        "            out[str(rid)] = (e.process, e.at_ms)\n"
        "            break\n"
        "print(json.dumps(out))\n"
    )
    found = json.loads(stack.manage("shell", "-c", code).stdout.strip().splitlines()[-1])
    return {rid: (process, at_ms) for rid, (process, at_ms) in found.items()}


def _first_messages_per_user(stack: Stack, users: set[int]) -> dict[tuple[int, str], list[int]]:
    """(user, first message type) -> the user's transfers in the order their first messages are on Kafka."""
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, group_id=None)
    order: dict[tuple[int, str], list[int]] = {
        (user, kind): [] for user in users for kind in ("TransferRequested", "TransferOut")}
    try:
        for topic in (stack.topic("internal_transfer.requests"), stack.topic("balance.operations")):
            partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
            ends = reader.end_offsets(partitions)
            reader.assign(partitions)
            reader.seek_to_beginning(*partitions)
            deadline = time.monotonic() + 60
            while any(reader.position(p) < ends[p] for p in partitions) and time.monotonic() < deadline:
                for batch in reader.poll(timeout_ms=500).values():
                    for record in batch:  # one user's messages share a partition: in their order
                        message = decode(record.value)
                        if isinstance(message, TransferRequested):
                            key = (message.user_id, "TransferRequested")
                            request_id = message.request_id
                        elif isinstance(message, BalanceOperation) and message.operation == "TransferOut":
                            key = (message.user_id, "TransferOut")
                            request_id = message.ref_id
                        else:
                            continue
                        if key in order and request_id not in order[key]:
                            order[key].append(request_id)
    finally:
        reader.close()
    return order


def test_relay_shard_claims_never_overlap_and_a_leaving_copys_shards_move_at_once(stack):
    """KafkaShardClaim on the stack's broker: two claims in one group split the shards, never both owning one."""
    from transfer_site.bus import KafkaShardClaim

    topic = stack.topic("internal_transfer.requests")
    group = stack.consumer_group(f"claims-{time.monotonic_ns()}")
    first = KafkaShardClaim(stack.kafka_bootstrap, group, topic)
    partitions = frozenset(range(first.current().count))
    assert first.current().owned == partitions
    joined: dict[str, KafkaShardClaim] = {}
    joining = threading.Thread(target=lambda: joined.setdefault("second", KafkaShardClaim(
        stack.kafka_bootstrap, group, topic)))
    joining.start()
    while joining.is_alive():  # the first copy goes on with its batches while the second joins
        first.current()
        time.sleep(0.02)
    second = joined["second"]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            mine, theirs = first.current().owned, second.current().owned
            assert not mine & theirs, f"shards owned twice: {sorted(mine & theirs)}"
            if mine and theirs and mine | theirs == partitions:
                break
            time.sleep(0.02)
        assert mine and theirs and mine | theirs == partitions, (mine, theirs)
    finally:
        second.close()  # leaves the group: no session timeout to wait for
    wait_until(lambda: first.current().owned == partitions, 30, "the first copy to take every shard again")
    first.close()
