"""The chaos run: transfers under load while processes are SIGKILLed, then every invariant checked.

    make chaos                                  # default size
    CHAOS_TRANSFERS=400 CHAOS_SECONDS=45 make chaos
    .venv/bin/python tests/chaos/run_chaos.py --transfers 400 --seconds 45 --seed 7

1. Starts the whole stack on loopback (tests/e2e/stack.py: broker, web,
   bridge, Celery worker and beat, UBSCore) in a private folder.
2. Creates CHAOS_USERS users with API keys and deposits (funding and spot,
   several assets), and registers for each a webhook endpoint: a receiver of
   its own (tests/webhooks/receiver.py, on loopback), the first user's
   answering 500 to its first WEBHOOK_FAIL_FIRST requests.
3. Sends CHAOS_TRANSFERS transfers of random amounts in both directions over
   HTTP from CHAOS_CLIENTS threads, spread over CHAOS_SECONDS: some for more
   than the user holds, some repeated with the same client_transfer_id (one
   after the other, and two at once), some reusing a client_transfer_id for a
   different amount (must be 409). A request that gets no answer (the web
   server was killed) is retried with the same body and client id, as a
   client would.
4. Meanwhile SIGKILLs and restarts web, the outbox relay, Celery worker,
   the webhooks worker, bridge and UBSCore at random, over and over
   (web/relay/worker/webhooks on one schedule, the two Kafka consumers on
   another: a killed consumer's partitions return only after ~18 s).
5. Waits for quiescence (no transfer in flight, Kafka consumer lag 0, Celery
   idle), then checks (tests/e2e/audit.py) and prints a summary:
   every transfer `success` or `failed`; per asset funding + spot + in flight
   == deposited; spot pool == Σ UBSCore; per transfer, in the ledger (reserve
   / post / void / credit ids of schema/ledger_ids.md, lookup_transfers) and
   in UBSCore (AppliedOperation), that a `success` moved exactly its amount
   once and a `failed` nothing; every user's balances == deposits ± successful
   transfers; the service's own reconcile is clean; what every client was
   told agrees with what is stored.
6. Re-publishes every message of every topic from offset 0, waits for
   quiescence again, and checks that nothing changed.
7. Waits until every finished transfer's event (evt_<request_id>) has been
   delivered (answered 2xx) to its user's receiver, at most
   CHAOS_WEBHOOK_SECONDS counted from the end of step 5's quiescence; then
   checks every POST each receiver got: signed under that user's secret,
   about a finished transfer of that user, its type for the final status,
   `data` equal to the stored transfer as GET shows it. Duplicates are
   allowed (at-least-once) and counted; a missing event fails the run, with
   its stored event, deliveries and attempts printed.

With CHAOS_COPIES=n (2 or 3) the web server, the relay, the bridge, the
settlement worker and UBSCore run n copies each (tests/e2e/stack.py), all of
them on the kill schedules; and at JOIN_AT (40%) of the load one more copy
of the relay, bridge, UBSCore and worker joins, to leave again (SIGTERM) at
LEAVE_AT (75%): every consumer group rebalances while transfers flow.

With CHAOS_SERVER_FAULTS=1 (on the servers of `make services`: a real Kafka
broker and TRANSFER_STORE=scylla on the Cassandra node) the servers fail too:
the Kafka broker is SIGKILLed and restarted once, a third into the load, and
the Cassandra node once, two thirds in (`python -m devservices restart NAME
--kill`), besides the service's processes.

Exits 1 on any violation (0 if all hold). Only 127.0.0.1 is ever contacted;
the number of requests and every wait are bounded.

Settings (environment, or the matching --option): CHAOS_TRANSFERS (3000),
CHAOS_SECONDS (120), CHAOS_USERS (40), CHAOS_CLIENTS (16), CHAOS_KILL_INTERVAL
(4, mean seconds between kills on each schedule), CHAOS_SEED (random),
CHAOS_QUIESCE_SECONDS (600), CHAOS_KEEP (1: keep the stack's folder; it is
kept anyway when a check fails), CHAOS_SERVER_FAULTS (0),
CHAOS_WEBHOOK_SECONDS (120), CHAOS_COPIES (1).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a program: python tests/chaos/run_chaos.py
    sys.path.insert(0, str(ROOT))

from tests.e2e.audit import count_in_flight, run_audit  # noqa: E402
from tests.e2e.seed import run_seed  # noqa: E402
from tests.e2e.stack import Stack  # noqa: E402
from tests.webhooks.receiver import Receiver  # noqa: E402
from transfer_site import topics  # noqa: E402
from webhooks import signing  # noqa: E402

ASSETS = {"USDT": 6, "BTC": 8, "ETH": 8}  # code -> decimals (transfers/migrations/0002_seed_assets.py)
DEPOSIT_RANGE = {"USDT": (500, 5000), "BTC": (0.2, 3), "ETH": (1, 30)}  # whole units, per side
FAST_KILL = ("web", "relay", "worker", "webhooks")
SLOW_KILL = ("bridge", "ubscore")  # Kafka consumers: ~18 s until their partitions come back
# CHAOS_COPIES >= 2: one more copy of each joins at the first fraction of the load period, leaves at the second.
JOINING = ("relay", "bridge", "ubscore", "worker")
JOIN_AT, LEAVE_AT = 0.4, 0.75
# CHAOS_SERVER_FAULTS: each server SIGKILLed once, at this fraction of the load period.
SERVER_KILLS = (("kafka", 1 / 3), ("cassandra", 2 / 3))
REPLAYED_TOPICS = (topics.TRANSFER_REQUESTS, topics.BALANCE_OPERATIONS, topics.BALANCE_EVENTS)
HTTP_TIMEOUT_SECONDS = 30
# The first user's webhook receiver answers 500 to this many requests before it takes any: retried under chaos.
WEBHOOK_FAIL_FIRST = 8
EVENT_TYPES = {"success": "transfer.succeeded", "failed": "transfer.failed"}
STACK_ENV = {
    "STUCK_TRANSFER_SECONDS": "5",
    "REDRIVE_INTERVAL_SECONDS": "2",
    # One key sends up to a few transfers a second here; not what is tested.
    "API_RATE_LIMIT_TRANSFER": "1000/second",
    "API_RATE_LIMIT_READ": "1000/second",
}


@dataclasses.dataclass
class Config:
    transfers: int
    seconds: float
    users: int
    clients: int
    kill_interval: float
    seed: int
    quiesce_seconds: float
    keep: bool
    server_faults: bool
    webhook_seconds: float
    copies: int

    @classmethod
    def from_args(cls) -> Config:
        env = os.environ.get
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument("--transfers", type=int, default=int(env("CHAOS_TRANSFERS", "3000")))
        parser.add_argument("--seconds", type=float, default=float(env("CHAOS_SECONDS", "120")))
        parser.add_argument("--users", type=int, default=int(env("CHAOS_USERS", "40")))
        parser.add_argument("--clients", type=int, default=int(env("CHAOS_CLIENTS", "16")))
        parser.add_argument("--kill-interval", type=float, default=float(env("CHAOS_KILL_INTERVAL", "4")))
        parser.add_argument("--seed", type=int, default=int(env("CHAOS_SEED", str(random.randrange(1 << 30)))))
        parser.add_argument("--quiesce-seconds", type=float, default=float(env("CHAOS_QUIESCE_SECONDS", "600")))
        parser.add_argument("--keep", action="store_true", default=env("CHAOS_KEEP", "") not in ("", "0"))
        parser.add_argument("--server-faults", action="store_true",
                            default=env("CHAOS_SERVER_FAULTS", "") not in ("", "0"))
        parser.add_argument("--webhook-seconds", type=float, default=float(env("CHAOS_WEBHOOK_SECONDS", "120")))
        parser.add_argument("--copies", type=int, default=int(env("CHAOS_COPIES", "1")))
        args = parser.parse_args()
        if args.server_faults and not (env("KAFKA_BOOTSTRAP_SERVERS") and env("TRANSFER_STORE") == "scylla"):
            parser.error("CHAOS_SERVER_FAULTS needs the servers of `make services`: "
                         "set -a; . var/services.env; set +a")
        if not 1 <= args.transfers <= 100_000 or not 1 <= args.users <= 10_000 or not 1 <= args.clients <= 64:
            parser.error("CHAOS_TRANSFERS 1..100000, CHAOS_USERS 1..10000, CHAOS_CLIENTS 1..64")
        if not 1 <= args.seconds <= 3600:
            parser.error("CHAOS_SECONDS 1..3600")
        if not 1 <= args.copies <= 3:
            parser.error("CHAOS_COPIES 1..3")
        return cls(args.transfers, args.seconds, args.users, args.clients, args.kill_interval, args.seed,
                   args.quiesce_seconds, args.keep, args.server_faults, args.webhook_seconds, args.copies)


# --- The plan: what the clients will send ------------------------------------------


@dataclasses.dataclass
class Planned:
    index: int
    kind: str  # "new", "repeat" (same body again, after), "twin" (same body twice at once), "conflict"
    user_id: int
    asset: str
    source: str
    destination: str
    amount: str
    client_transfer_id: str
    expect_insufficient: bool = False
    original: int | None = None  # repeat/conflict: the planned transfer it repeats
    # outcome
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    http_status: int | None = None
    request_ids: list[str] = dataclasses.field(default_factory=list)
    replayed: bool = False
    attempts: int = 0
    error: str | None = None

    def body(self) -> dict:
        return {
            "from_account": {"account_type": self.source, "asset": self.asset},
            "to_account": {"account_type": self.destination, "asset": self.asset},
            "amount": self.amount,
            "client_transfer_id": self.client_transfer_id,
        }


def decimal_string(minor: int, decimals: int) -> str:
    text = format(Decimal(minor).scaleb(-decimals), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def plan(config: Config, rng: random.Random, user_ids: list[int]) -> tuple[list[tuple], list[Planned]]:
    holdings: dict[tuple[int, str], dict[str, int]] = {}
    deposits = []
    for user_id in user_ids:
        for code, decimals in ASSETS.items():
            if rng.random() < 0.15:
                continue  # holds none of it: everything it sends fails
            low, high = DEPOSIT_RANGE[code]
            for side in ("funding", "spot"):
                minor = int(Decimal(str(round(rng.uniform(low, high), 4))).scaleb(decimals))
                holdings.setdefault((user_id, code), {"funding": 0, "spot": 0})[side] = minor
                deposits.append((user_id, code, decimal_string(minor, decimals), side))
    run = f"{config.seed:x}"
    planned: list[Planned] = []
    earlier: list[Planned] = []  # the new transfers so far, which repeats and conflicts copy
    for index in range(config.transfers):
        roll = rng.random()
        if earlier and roll < 0.05:
            original = rng.choice(earlier)
            planned.append(dataclasses.replace(
                original, index=index, kind="repeat", original=original.index, done=threading.Event(),
                http_status=None, request_ids=[], replayed=False, attempts=0, error=None))
            continue
        if earlier and roll < 0.07:
            original = rng.choice(earlier)
            decimals = ASSETS[original.asset]
            other = decimal_string(int(Decimal(original.amount).scaleb(decimals)) + 1, decimals)
            planned.append(dataclasses.replace(
                original, index=index, kind="conflict", amount=other, original=original.index,
                expect_insufficient=False, done=threading.Event(), http_status=None, request_ids=[],
                replayed=False, attempts=0, error=None))
            continue
        user_id = rng.choice(user_ids)
        code = rng.choice(list(ASSETS))
        decimals = ASSETS[code]
        source, destination = rng.choice((("funding", "spot"), ("spot", "funding")))
        held = holdings.get((user_id, code), {"funding": 0, "spot": 0})
        everything = held["funding"] + held["spot"]
        insufficient = everything == 0 or rng.random() < 0.08
        if insufficient:  # more than the user could ever hold of it: must fail whatever else happens
            minor = everything + rng.randint(1, 10**decimals)
        else:
            minor = max(1, int(held[source] * rng.uniform(0.005, 0.25)))
        planned.append(Planned(
            index=index, kind="twin" if roll > 0.98 else "new", user_id=user_id, asset=code, source=source,
            destination=destination, amount=decimal_string(minor, decimals),
            client_transfer_id=f"chaos-{run}-{index}", expect_insufficient=insufficient))
        earlier.append(planned[-1])
    return deposits, planned


# --- The clients ----------------------------------------------------------------------


class Client:
    """HTTP to the web server on 127.0.0.1 only, a connection per request; retries what got no answer."""

    RETRY_STATUSES = {429, 500, 502, 503, 504}

    def __init__(self, port: int, keys: dict[int, str], deadline: float, stats: collections.Counter) -> None:
        self.port = port
        self.keys = keys
        self.deadline = deadline
        self.stats = stats
        self.connection: http.client.HTTPConnection | None = None

    def post(self, planned: Planned) -> tuple[int | None, dict | None, bool]:
        """Send until an answer that is not a retry status; (status, body, replayed)."""
        payload = json.dumps(planned.body()).encode()
        headers = {"Content-Type": "application/json", "X-API-Key": self.keys[planned.user_id]}
        delay = 0.1
        while time.monotonic() < self.deadline:
            planned.attempts += 1
            self.stats["requests"] += 1
            # A fresh connection each time: a kept-alive one the server closed
            # would fail for reasons that have nothing to do with the chaos.
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_SECONDS)
            try:
                self.connection.request("POST", "/api/v1/user/internal_transfer", payload, headers)
                response = self.connection.getresponse()
                raw = response.read()
                status = response.status
                replayed = response.getheader("Idempotent-Replayed") == "true"
            except (OSError, http.client.HTTPException) as error:
                self.stats[f"no answer ({type(error).__name__}), retried"] += 1
            else:
                if status not in self.RETRY_STATUSES:
                    with contextlib.suppress(ValueError):
                        return status, json.loads(raw or b"null"), replayed
                    return status, None, replayed
                self.stats[f"HTTP {status}, retried"] += 1
            finally:
                self.close()
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)
        return None, None, False

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = None


def send(client: Client, planned: Planned, by_index: dict[int, Planned]) -> None:
    try:
        if planned.original is not None:  # a repeat or conflict comes after its original has its answer
            by_index[planned.original].done.wait(HTTP_TIMEOUT_SECONDS * 4)
        if planned.kind == "twin":
            results: list = [None, None]

            def other() -> None:
                results[1] = Client(client.port, client.keys, client.deadline, client.stats).post(planned)

            twin = threading.Thread(target=other)
            twin.start()
            results[0] = client.post(planned)
            twin.join()
            answers = results
        else:
            answers = [client.post(planned)]
        planned.http_status = answers[0][0]
        for status, body, replayed in answers:
            if status != planned.http_status:
                planned.error = f"twin answers differ: {[a[0] for a in answers]}"
            if status == 202 and body:
                planned.request_ids.append(body["request_id"])
            elif status is not None and body is not None and status != 409:
                planned.error = f"HTTP {status}: {body}"
            planned.replayed = planned.replayed or replayed
    except Exception as error:  # recorded as a violation
        planned.error = repr(error)
    finally:
        planned.done.set()


def drive_load(stack: Stack, config: Config, planned: list[Planned], keys: dict[int, str],
               stats: collections.Counter) -> None:
    assert stack.base_url.startswith("http://127.0.0.1:")  # the load generator targets loopback only
    start = time.monotonic()
    deadline = start + config.seconds * 3 + 300  # bounded: every retry loop stops here
    by_index = {p.index: p for p in planned}
    queue = collections.deque(planned)
    lock = threading.Lock()
    spacing = config.seconds / max(len(planned), 1)

    def worker() -> None:
        client = Client(stack.web_port, keys, deadline, stats)
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    item = queue.popleft()
                wait = start + item.index * spacing - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                send(client, item, by_index)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"client-{n}", daemon=True) for n in range(config.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0) + 60)


# --- Killing processes ------------------------------------------------------------------


class Killer:
    def __init__(self, stack: Stack, config: Config, rng: random.Random) -> None:
        self.stack = stack
        self.config = config
        self.rng = rng
        self.stop = threading.Event()
        self.kills: collections.Counter = collections.Counter()
        self.restart_errors: list[str] = []
        self.server_downtime: dict[str, float] = {}  # server -> seconds from SIGKILL to ready again
        # Every copy of each process (stack.names: "relay", "relay-2", ...).
        self.fast = tuple(n for n in stack.names if Stack.process_of(n)[0] in FAST_KILL)
        self.slow = tuple(n for n in stack.names if Stack.process_of(n)[0] in SLOW_KILL)
        self.joined: list[str] = []  # the copies that joined and left (CHAOS_COPIES >= 2)
        self.threads = [
            threading.Thread(target=self._loop, args=(self.fast, random.Random(rng.random())), daemon=True),
            threading.Thread(target=self._loop, args=(self.slow, random.Random(rng.random())), daemon=True),
        ]
        if config.server_faults:
            self.threads.append(threading.Thread(target=self._kill_servers, daemon=True))
        if config.copies >= 2:
            self.threads.append(threading.Thread(target=self._join_and_leave, daemon=True))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _loop(self, names: tuple[str, ...], rng: random.Random) -> None:
        order: list[str] = []
        while not self.stop.wait(rng.uniform(0.5, 2 * self.config.kill_interval)):
            if not order:  # each process of the schedule once per round, in a random order
                order = rng.sample(names, len(names))
            name = order.pop()
            # Now and then a Kafka consumer is killed again before it is back in its group.
            ready = names is not self.slow or rng.random() < 0.7
            try:
                self.stack.restart_process(name, sig=signal.SIGKILL, wait=ready)
                self.kills[name] += 1
                self.kills[f"{name} (before ready)"] += not ready
            except Exception as error:  # made running again below, reported at the end
                self.restart_errors.append(f"{name}: {error!r}")
                self._ensure_running(name)

    def _kill_servers(self) -> None:
        """SIGKILL each server once at its moment of the load period, and start it again (it waits until ready)."""
        started = time.monotonic()
        for name, fraction in SERVER_KILLS:
            if self.stop.wait(max(0.0, started + fraction * self.config.seconds - time.monotonic())):
                return
            t = time.monotonic()
            result = subprocess.run([sys.executable, "-m", "devservices", "restart", name, "--kill"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
            if result.returncode == 0:
                self.kills[f"{name} (server)"] += 1
                self.server_downtime[name] = time.monotonic() - t
            else:
                self.restart_errors.append(f"{name} (server): {result.stdout}{result.stderr}")

    def _join_and_leave(self) -> None:
        """One more copy of each of JOINING joins (every group rebalances), then leaves on SIGTERM."""
        started = time.monotonic()
        names = [f"{name}-{self.config.copies + 1}" for name in JOINING]
        if self.stop.wait(JOIN_AT * self.config.seconds):
            return
        for name in names:
            try:
                self.stack.start_process(name)
                self.joined.append(name)
            except Exception as error:
                self.restart_errors.append(f"{name} (joining): {error!r}")
        if self.stop.wait(max(0.0, started + LEAVE_AT * self.config.seconds - time.monotonic())):
            return
        for name in names:
            try:
                self.stack.stop_process(name, signal.SIGTERM, timeout=60)
                self.kills[f"{name} (joined, left on SIGTERM)"] += 1
            except Exception as error:
                self.restart_errors.append(f"{name} (leaving): {error!r}")

    def _ensure_running(self, name: str) -> None:
        process = self.stack.processes.get(name)
        if process is None or process.poll() is not None:
            with contextlib.suppress(Exception):
                self.stack.restart_process(name, sig=signal.SIGKILL)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(300)
        for name in self.fast + self.slow:
            process = self.stack.processes.get(name)
            if process is None or process.poll() is not None:
                self.stack.restart_process(name, sig=signal.SIGKILL)


# --- Quiescence: Kafka lag, Celery, transfers in flight -------------------------------------------


class Observer:
    SETTLEMENT_TASKS = ("settlement.settle_batch", "settlement.reserve_funding_to_spot",
                        "settlement.settle_balance_events")

    def __init__(self, stack: Stack) -> None:
        from kafka import KafkaConsumer

        self.stack = stack
        self.groups = {
            stack.consumer_group(stack.env.get("SETTLEMENT_CONSUMER_GROUP", "settlement-bridge")): (
                stack.topic(topics.TRANSFER_REQUESTS), stack.topic(topics.BALANCE_EVENTS)),
            stack.consumer_group("ubscore"): (stack.topic(topics.BALANCE_OPERATIONS),),
        }
        self.consumers = {
            group: KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group, enable_auto_commit=False)
            for group in self.groups
        }
        self.reader = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=None, enable_auto_commit=False)
        self._worker_log_offsets: dict[str, int] = {}  # worker copy -> bytes of its log read
        # task id -> (worker copy, main pid that received it, finished)
        self._worker_tasks: dict[str, tuple[str, int, bool]] = {}

    def lag(self) -> int:
        from kafka import TopicPartition

        total = 0
        for group, names in self.groups.items():
            consumer = self.consumers[group]
            partitions = [TopicPartition(name, p) for name in names for p in consumer.partitions_for_topic(name) or ()]
            ends = end_offsets(self.reader, partitions)
            for partition in partitions:
                total += abs(ends[partition] - (consumer.committed(partition) or 0))
        return total

    def celery_outstanding(self) -> int:
        """Settlement tasks queued, or received by the running worker and not finished."""
        queue = self.stack.env["CELERY_QUEUE"]
        queued = 0
        if self.stack.env.get("CELERY_BROKER_URL", "filesystem://").startswith("filesystem://"):
            folder = self.stack.var_dir / "celery" / "queue"
            queued = sum(1 for name in os.listdir(folder) if name.endswith(f".{queue}.msg"))
        running = 0
        for name in [n for n in self.stack.processes if Stack.process_of(n)[0] == "worker"]:
            self._read_worker_log(name)
            process = self.stack.processes.get(name)
            main_pid = process.pid if process else None
            running += sum(1 for copy, pid, finished in self._worker_tasks.values()
                           if copy == name and pid == main_pid and not finished)
        return queued + running

    def _read_worker_log(self, name: str) -> None:
        path = self.stack.var_dir / "log" / f"{name}.log"
        if not path.exists():
            return
        with path.open("rb") as file:
            file.seek(self._worker_log_offsets.get(name, 0))
            chunk = file.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._worker_log_offsets[name] = self._worker_log_offsets.get(name, 0) + len(complete)
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            data = record.get("data")
            if not isinstance(data, dict) or "id" not in data:
                continue
            if record.get("logger") == "celery.worker.strategy":  # "Task ...[id] received", by the main process
                if data.get("name") in self.SETTLEMENT_TASKS:  # (the periodic re-drive is not waited for)
                    self._worker_tasks[data["id"]] = (name, record.get("pid"), False)
            elif data["id"] in self._worker_tasks:  # succeeded, failed or retry
                copy, pid, _ = self._worker_tasks[data["id"]]
                self._worker_tasks[data["id"]] = (copy, pid, True)

    def wait_quiet(self, timeout: float, label: str) -> tuple[bool, float]:
        """Until nothing is in flight anywhere, twice in a row; (quiet, seconds waited)."""
        start = time.monotonic()
        calm = 0
        last_report = 0.0
        while time.monotonic() - start < timeout:
            lag = self.lag()
            tasks = self.celery_outstanding()
            in_flight = count_in_flight(self.stack) if lag == 0 and tasks == 0 else None
            if time.monotonic() - last_report > 10:
                print(f"  [{label}] {time.monotonic() - start:5.0f}s  kafka lag {lag}, celery tasks {tasks}, "
                      f"transfers in flight {in_flight if in_flight is not None else '?'}", flush=True)
                last_report = time.monotonic()
            calm = calm + 1 if (lag, tasks, in_flight) == (0, 0, 0) else 0
            if calm >= 2:
                return True, time.monotonic() - start
            time.sleep(1)
        return False, time.monotonic() - start

    def close(self) -> None:
        for consumer in [*self.consumers.values(), self.reader]:
            with contextlib.suppress(Exception):
                consumer.close(autocommit=False)


def end_offsets(reader, partitions: list) -> dict:
    """The offset after the last message of each partition, read, not asked for.

    Tansu answers ListOffsets(latest) with the base offset of the partition's
    last record batch + 1, which falls short when that batch holds several
    messages (UBSCore and the saga publish in batches). So: seek to what it
    answers minus one, the base of the last batch, and read to the end.
    """
    reported = reader.end_offsets(partitions)
    ends = dict(reported)
    todo = {p for p in partitions if reported[p] > 0}
    if not todo:
        return ends
    reader.assign(list(todo))
    for partition in todo:
        reader.seek(partition, reported[partition] - 1)
    seen: set = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        polled = reader.poll(timeout_ms=300, max_records=10_000)
        for partition, records in polled.items():
            seen.add(partition)
            ends[partition] = max(ends[partition], records[-1].offset + 1)
        if not polled and seen >= todo:
            break
    reader.assign([])
    return ends


def replay_all_topics(stack: Stack) -> dict[str, int]:
    """Publish every message of every topic again, from offset 0, in order, with its key."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    reader = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False, group_id=None)
    producer = KafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, acks="all", max_in_flight_requests_per_connection=1)
    counts = {}
    try:
        for topic in (stack.topic(name) for name in REPLAYED_TOPICS):
            partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
            ends = end_offsets(reader, partitions)
            reader.assign(partitions)
            reader.seek_to_beginning(*partitions)
            records = []
            deadline = time.monotonic() + 300
            while any(reader.position(p) < ends[p] for p in partitions) and time.monotonic() < deadline:
                for batch in reader.poll(timeout_ms=500, max_records=5000).values():
                    records.extend(r for r in batch if r.offset < ends[TopicPartition(r.topic, r.partition)])
            for record in records:
                producer.send(topic, key=record.key, value=record.value)
            producer.flush(60)
            counts[topic] = len(records)
    finally:
        reader.close()
        producer.close()
    return counts


# --- Webhooks: a receiver per user, every finished transfer's event delivered ------------------


class Webhooks:
    """A Receiver (a real HTTP server on loopback) per user, registered as the user's webhook endpoint.

    The first user's receiver answers 500 to its first WEBHOOK_FAIL_FIRST
    requests. What each receiver got is checked against the stored transfers.
    """

    def __init__(self, stack: Stack, keys: dict[int, str]) -> None:
        self.stack = stack
        self.receivers: dict[int, Receiver] = {}
        self.secrets: dict[int, str] = {}
        self.since = time.time()  # signatures must carry a timestamp of this run
        for n, user_id in enumerate(sorted(keys)):
            receiver = self.receivers[user_id] = Receiver(fail_first=WEBHOOK_FAIL_FIRST if n == 0 else 0)
            status, body = stack.http("POST", "/api/v1/user/webhooks", keys[user_id], {"url": receiver.url})
            if status != 201:
                raise AssertionError(f"registering user {user_id}'s webhook endpoint answered {status}: {body}")
            self.secrets[user_id] = body["secret"]

    @staticmethod
    def expected(transfers: dict[str, dict]) -> dict[str, dict]:
        """Event id -> the terminal transfer it is about."""
        return {f"evt_{rid}": t for rid, t in transfers.items() if t["status"] in EVENT_TYPES}

    def missing(self, transfers: dict[str, dict]) -> list[str]:
        """Ids of the events of terminal transfers that their user's receiver has not taken (answered 2xx)."""
        delivered = {user_id: receiver.delivered_ids() for user_id, receiver in self.receivers.items()}
        return [event_id for event_id, t in self.expected(transfers).items()
                if event_id not in delivered.get(t["user_id"], ())]

    def wait_delivered(self, transfers: dict[str, dict], timeout: float) -> tuple[list[str], float]:
        """Until every terminal transfer's event is delivered, or timeout; (still missing, seconds waited)."""
        start = time.monotonic()
        last_report = start
        while (missing := self.missing(transfers)) and time.monotonic() - start < timeout:
            if time.monotonic() - last_report > 10:
                print(f"  [webhooks] {time.monotonic() - start:5.0f}s  {len(missing)} events not delivered yet",
                      flush=True)
                last_report = time.monotonic()
            time.sleep(0.5)
        return missing, time.monotonic() - start

    def check(self, transfers: dict[str, dict], missing: list[str], waited: float,
              not_yet_delivered: int) -> tuple[list[str], dict]:
        """Violations in what every receiver got (every POST, delivered or not), and the counts."""
        problems: dict[str, None] = {}  # in order, each once (an event sent again repeats its problems)
        expected = self.expected(transfers)
        counts: collections.Counter = collections.Counter({
            "events expected (terminal transfers)": len(expected),
            "  not yet delivered at the first audit": not_yet_delivered,
        })
        for user_id, receiver in sorted(self.receivers.items()):
            received, answered_ok = list(receiver.received), list(receiver.answered_ok)
            taken = collections.Counter(_event_id(body) for body in answered_ok)
            counts["events delivered (2xx), distinct"] += len(taken)
            counts["  delivered more than once (at-least-once)"] += sum(1 for n in taken.values() if n > 1)
            counts["  extra 2xx deliveries of those"] += sum(n - 1 for n in taken.values())
            counts["POSTs received (every attempt)"] += len(received)
            counts["  not answered 2xx (the failing receiver)"] += len(received) - len(answered_ok)
            for headers, body in received:
                for problem in self._problems(user_id, headers, body, transfers):
                    problems[f"webhook to user {user_id}'s receiver: {problem}"] = None
        for event_id in missing:
            t = expected[event_id]
            problems[f"webhook event {event_id} (transfer {t['status']}, user {t['user_id']}) not delivered "
                     f"to its user's receiver within {waited:.0f}s of every transfer being terminal"] = None
        counts["not delivered in time"] = len(missing)
        return list(problems), dict(counts)

    def _problems(self, user_id: int, headers: dict, body: bytes, transfers: dict[str, dict]) -> list[str]:
        timestamp = headers.get(signing.TIMESTAMP_HEADER, "")
        signature = headers.get(signing.SIGNATURE_HEADER, "")
        try:
            document = json.loads(body)
            event_id = document["id"]
        except (ValueError, TypeError, KeyError):
            return [f"a body that is not an event: {body[:200]!r}"]
        name = f"event {event_id}"
        problems = []
        # The signature under this user's secret; the timestamp must be of this run (checked at the end, not
        # on arrival, so the tolerance is the run's span rather than verify's 300 s from now).
        if not (timestamp.isascii() and timestamp.isdigit()
                and self.since - 5 <= int(timestamp) <= time.time() + 5
                and signing.verify(self.secrets[user_id], timestamp, signature, body, now=int(timestamp))):
            problems.append(f"{name}: signature {signature!r} at {timestamp!r} is not valid under the user's secret")
        request_id = event_id[4:] if isinstance(event_id, str) and event_id.startswith("evt_") else None
        transfer = transfers.get(request_id) if request_id else None
        if transfer is None:
            return [*problems, f"{name}: no transfer {request_id} in the store"]
        if transfer["user_id"] != user_id:
            problems.append(f"{name}: a transfer of user {transfer['user_id']}, not this user's")
        if transfer["status"] not in EVENT_TYPES:
            return [*problems, f"{name}: transfer is {transfer['status']}, not finished"]
        if document.get("type") != EVENT_TYPES[transfer["status"]]:
            problems.append(f"{name}: type {document.get('type')!r}, transfer is {transfer['status']}")
        data = document.get("data")
        if data != transfer["public"]:
            data = data if isinstance(data, dict) else {}
            differing = sorted(k for k in set(transfer["public"]) | set(data)
                               if data.get(k) != transfer["public"].get(k))
            problems.append(f"{name}: data differs from the stored transfer in {differing}: "
                            f"{ {k: data.get(k) for k in differing} } != "
                            f"{ {k: transfer['public'].get(k) for k in differing} }")
        if document.get("created_at") != transfer["public"]["updated_at"]:
            problems.append(f"{name}: created_at {document.get('created_at')} != the transfer's updated_at "
                            f"{transfer['public']['updated_at']}")
        return problems

    def describe(self, event_ids: list[str]) -> str:
        """The stored event, deliveries and attempts of some events (what support would look at)."""
        code = (
            "from webhooks.models import WebhookEvent, WebhookDelivery, WebhookAttempt\n"
            f"for event_id in {event_ids!r}:\n"
            "    event = WebhookEvent.objects.filter(pk=event_id)\n"
            "    print(event_id, 'event', event.values('type', 'confirmed', 'recorded_at_ms').first())\n"
            "    for d in WebhookDelivery.objects.filter(event_id=event_id).values():\n"
            "        print('   delivery', d)\n"
            "        for a in WebhookAttempt.objects.filter(delivery_id=d['id']).order_by('at_ms').values(\n"
            "                'at_ms', 'outcome', 'status_code', 'error'):\n"
            "            print('     attempt', a)\n"
        )
        result = self.stack.manage("shell", "-c", code, check=False)
        return (result.stdout + result.stderr)[-20_000:]

    def close(self) -> None:
        for receiver in self.receivers.values():
            with contextlib.suppress(Exception):
                receiver.close()


def _event_id(body: bytes) -> object:
    with contextlib.suppress(ValueError, AttributeError):
        return json.loads(body).get("id")
    return None


# --- Checks and the summary ---------------------------------------------------------------


def client_violations(planned: list[Planned], transfers: dict[str, dict]) -> list[str]:
    by_index = {p.index: p for p in planned}
    problems = []
    for p in planned:
        name = f"planned #{p.index} ({p.kind}, {p.client_transfer_id})"
        if p.error:
            problems.append(f"{name}: {p.error}")
            continue
        if p.http_status is None:
            problems.append(f"{name}: no answer before the deadline after {p.attempts} attempts")
            continue
        if p.kind == "conflict":
            if p.http_status != 409:
                problems.append(f"{name}: reused client id with another amount answered {p.http_status}, not 409")
            continue
        if p.http_status != 202:
            problems.append(f"{name}: answered {p.http_status}")
            continue
        if len(set(p.request_ids)) != 1:
            problems.append(f"{name}: one client id, request ids {p.request_ids}")
            continue
        request_id = p.request_ids[0]
        if p.kind == "repeat":
            original = by_index[p.original]
            if original.request_ids[:1] != [request_id]:
                problems.append(f"{name}: repeat got {request_id}, original {original.request_ids}")
            if not p.replayed:
                problems.append(f"{name}: repeat not marked Idempotent-Replayed")
        stored = transfers.get(request_id)
        if stored is None:
            problems.append(f"{name}: answered 202 {request_id}, which is not stored")
            continue
        if p.expect_insufficient and (stored["status"], stored["error_message"]) != ("failed", "insufficient balance"):
            problems.append(f"{name}: more than the user holds, yet {stored['status']} {stored['error_message']}")
    return problems


def table(rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        padded = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  " + "  ".join(padded))
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    config = Config.from_args()
    rng = random.Random(config.seed)
    var_dir = Path(tempfile.mkdtemp(prefix="chaos-"))
    started = time.monotonic()
    phases: dict[str, float] = {}
    violations: list[str] = []
    stack = Stack(var_dir, STACK_ENV, copies=config.copies)
    observer = None
    webhooks = None
    print(f"chaos run: seed {config.seed}, {config.users} users, {config.transfers} transfers over "
          f"{config.seconds:.0f}s from {config.clients} clients, a kill every ~{config.kill_interval:.0f}s "
          f"on each schedule, {config.copies} cop{'y' if config.copies == 1 else 'ies'} of each process that "
          f"scales out; stack in {var_dir}", flush=True)
    try:
        t = time.monotonic()
        stack.start()
        phases["start the stack"] = time.monotonic() - t

        t = time.monotonic()
        base = 700_000_000 + (config.seed % 100_000) * 1000
        user_ids = [base + n for n in range(config.users)]
        deposits, planned = plan(config, rng, user_ids)
        seeded = run_seed(stack, user_ids, deposits)
        webhooks = Webhooks(stack, seeded["keys"])
        phases["users, deposits, webhooks"] = time.monotonic() - t
        print(f"  {len(user_ids)} users, {len(deposits)} deposits, {len(webhooks.receivers)} webhook endpoints; "
              f"sending {len(planned)} requests", flush=True)

        t = time.monotonic()
        stats: collections.Counter = collections.Counter()
        killer = Killer(stack, config, rng)
        killer.start()
        load = threading.Thread(target=drive_load, args=(stack, config, planned, seeded["keys"], stats))
        load.start()
        load.join(config.seconds * 3 + 420)
        if time.monotonic() - t < config.seconds:  # keep killing for the whole chaos period
            time.sleep(config.seconds - (time.monotonic() - t))
        killer.finish()
        phases["load and kills"] = time.monotonic() - t
        violations += [f"restart failed: {e}" for e in killer.restart_errors]

        observer = Observer(stack)
        quiet, waited = observer.wait_quiet(config.quiesce_seconds, "quiescence")
        phases["quiescence"] = waited
        if not quiet:
            violations.append(f"not quiescent after {config.quiesce_seconds:.0f}s")
        # Every transfer is terminal now: their events have CHAOS_WEBHOOK_SECONDS from here to be delivered
        # (waited for at the end, so the audit and the replay do not add to it).
        webhook_deadline = time.monotonic() + config.webhook_seconds

        t = time.monotonic()
        report = run_audit(stack, users=user_ids, deposits=seeded["deposits"])
        phases["audit"] = time.monotonic() - t
        violations += report["violations"]
        stuck = [rid for rid, tr in report["transfers"].items() if tr["status"] not in ("success", "failed")]
        violations += [f"transfer {rid} stuck in {report['transfers'][rid]['status']}" for rid in stuck[:50]]
        violations += client_violations(planned, report["transfers"])
        not_yet_delivered = len(webhooks.missing(report["transfers"]))  # (e.g. the webhooks worker killed late)

        t = time.monotonic()
        replayed = replay_all_topics(stack)
        print(f"  replaying {sum(replayed.values())} messages from offset 0: {replayed}", flush=True)
        quiet_again, _ = observer.wait_quiet(config.quiesce_seconds, "after replay")
        if not quiet_again:
            violations.append("not quiescent after the replay")
        time.sleep(2 * float(STACK_ENV["REDRIVE_INTERVAL_SECONDS"]))  # let the re-drive look once more
        after = run_audit(stack, users=user_ids, deposits=seeded["deposits"])
        phases["replay and audit again"] = time.monotonic() - t
        changed = snapshot_differences(report["snapshot"], after["snapshot"])
        violations += [f"after the replay: {v}" for v in after["violations"]]
        violations += [f"the replay changed {c}" for c in changed]

        t = time.monotonic()
        missing, _ = webhooks.wait_delivered(after["transfers"], max(0.0, webhook_deadline - time.monotonic()))
        phases["webhooks delivered"] = time.monotonic() - t
        webhook_problems, webhook_counts = webhooks.check(
            after["transfers"], missing, config.webhook_seconds, not_yet_delivered)
        violations += webhook_problems
        if missing:
            print(f"  webhook events not delivered, as stored (the first ones):\n"
                  f"{webhooks.describe(missing[:10])}", flush=True)

        phases["total"] = time.monotonic() - started
        print_summary(config, phases, killer, stats, planned, report, replayed, changed, stuck, violations,
                      webhook_counts)
    finally:
        if observer is not None:
            observer.close()
        if webhooks is not None:
            webhooks.close()
        stack.stop(sig=signal.SIGKILL)
        if violations or config.keep:
            print(f"stack folder kept: {var_dir}")
        else:
            shutil.rmtree(var_dir, ignore_errors=True)
    return 1 if violations else 0


def snapshot_differences(before: dict, after: dict) -> list[str]:
    differences = []
    for section in sorted(set(before) | set(after)):
        old, new = before.get(section), after.get(section)
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    differences.append(f"{section} {key}: {old.get(key)} -> {new.get(key)}")
        elif old != new:
            differences.append(f"{section}: {old} -> {new}")
    return differences[:50]


def print_summary(config, phases, killer, stats, planned, report, replayed, changed, stuck, violations,
                  webhook_counts) -> None:
    print("\n== chaos run summary ==")
    print(f"seed {config.seed} (CHAOS_SEED={config.seed} repeats the plan; kill timing differs)\n")
    print(table([[name, f"{seconds:.1f}"] for name, seconds in phases.items()], ["phase", "seconds"]))

    kills = [[name, killer.kills[name]] for name in killer.fast] + [
        [name, f"{killer.kills[name]} ({killer.kills[f'{name} (before ready)']} of them before it was ready)"]
        for name in killer.slow]
    kills += [[name, "joined, left on SIGTERM" if killer.kills[f"{name} (joined, left on SIGTERM)"] else "joined"]
              for name in killer.joined]
    kills += [[f"{name} (server)", f"{killer.kills[f'{name} (server)']} (down {killer.server_downtime[name]:.0f}s)"]
              for name in killer.server_downtime]
    total_kills = sum(killer.kills[name] for name in killer.fast + killer.slow) + sum(
        killer.kills[f"{name} (server)"] for name, _ in SERVER_KILLS)
    print("\n" + table([*kills, ["total", total_kills]], ["process SIGKILLed + restarted", "times"]))

    kinds = collections.Counter(p.kind for p in planned)
    answers = collections.Counter(p.http_status for p in planned)
    rows = [
        ["planned requests", len(planned)],
        ["  new transfers (+ sent twice at once)", f"{kinds['new'] + kinds['twin']} (+{kinds['twin']})"],
        ["  repeats of a client id, same body", kinds["repeat"]],
        ["  client id reused for another amount", kinds["conflict"]],
        ["  meant to be insufficient", sum(p.expect_insufficient for p in planned if p.kind in ("new", "twin"))],
        ["answered 202 / 409 / none", f"{answers[202]} / {answers[409]} / {answers[None]}"],
        ["HTTP requests sent (with retries)", stats["requests"]],
        *[[f"  {k}", v] for k, v in sorted(stats.items()) if k != "requests"],
    ]
    print("\n" + table(rows, ["requests", "count"]))

    by = collections.Counter()
    for transfer in report["transfers"].values():
        status = transfer["status"]
        if status == "failed":
            status = "failed: " + (transfer["error_message"] or "?")
        by[(status, transfer["direction"])] += 1
    statuses = sorted({s for s, _ in by})
    rows = [[s, by[(s, "funding_to_spot")], by[(s, "spot_to_funding")], by[(s, "funding_to_spot")]
             + by[(s, "spot_to_funding")]] for s in statuses]
    rows.append(["total", sum(v for (s, d), v in by.items() if d == "funding_to_spot"),
                 sum(v for (s, d), v in by.items() if d == "spot_to_funding"), sum(by.values())])
    print("\n" + table(rows, ["transfers", "funding->spot", "spot->funding", "total"]))

    rows = []
    for code, row in report["assets"].items():
        rows.append([code, row["deposited"], row["funding"], row["spot"], row["in_flight"],
                     "ok" if row["conserved"] else "VIOLATED", row["spot_pool"],
                     "ok" if row["reconciled"] else "VIOLATED",
                     "clean" if report["reconcile"].get(code, {}).get("clean") else "NOT CLEAN"])
    print("\n" + table(rows, ["asset (minor units)", "deposited", "funding", "spot", "in flight",
                              "f+s+if==dep", "spot pool", "pool==ΣUBSCore", "reconcile"]))
    print("\n" + table([[name, count] for name, count in webhook_counts.items()], ["webhooks", "count"]))

    def ok(condition: bool) -> str:
        return "ok  " if condition else "FAIL"

    transfer_problems = [v for v in report["violations"] if v.startswith("transfer ")]
    user_problems = [v for v in report["violations"] if v.startswith("user ")]
    client_problems = [v for v in violations if v.startswith("planned #")]
    webhook_problems = [v for v in violations if v.startswith("webhook")]
    checks = [
        (not stuck, f"every transfer success or failed ({len(stuck)} stuck)"),
        (all(r["conserved"] for r in report["assets"].values()), "per asset funding + spot + in flight == deposited"),
        (all(r["reconciled"] for r in report["assets"].values()), "per asset spot pool == Σ UBSCore spot"),
        (all(r.get("clean") for r in report["reconcile"].values()), "the service's reconcile is clean"),
        (not transfer_problems, "every success moved exactly its amount once (ledger + UBSCore), every failed "
                                f"nothing ({len(transfer_problems)} problems)"),
        (not user_problems, f"every user's balances == deposits ± successful transfers ({len(user_problems)})"),
        (not client_problems, f"every client answer agrees with what is stored ({len(client_problems)})"),
        (not changed, f"replaying every topic from offset 0 ({sum(replayed.values())} messages) changed nothing"),
        (not webhook_problems, "every finished transfer's event delivered to its user's receiver, signed, with its "
                               f"type and data; nothing else sent ({len(webhook_problems)} problems)"),
    ]
    print("\nchecks")
    for condition, text in checks:
        print(f"  [{ok(condition)}] {text}")
    if violations:
        print(f"\nRESULT: FAIL, {len(violations)} violations; the first ones:")
        for violation in violations[:30]:
            print(f"  - {violation}")
    else:
        print(f"\nRESULT: PASS ({len(report['transfers'])} transfers, {total_kills} kills, "
              f"{phases['total']:.0f}s)")


if __name__ == "__main__":
    sys.exit(main())
