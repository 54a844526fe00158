"""Starts the real processes of the service for end-to-end tests.

Broker (Tansu), UBSCore consumer, settlement bridge, outbox relay, Celery
worker, the webhooks worker, Celery beat and the web server (gunicorn), each its own OS process with the same
environment a deployment gives it, on free loopback ports and a private
VAR_DIR. Tests talk HTTP and Kafka to them; nothing is faked.

Every stack has servers of its own, or a private part of a shared one:

* Kafka: a Tansu broker of its own; or, when KAFKA_BOOTSTRAP_SERVERS names a
  running broker (`make services`), that broker, with topics and consumer
  groups under a namespace of this stack's own (KAFKA_NAMESPACE).
* The database: a private SQLite file; or, when DATABASE_URL points at
  PostgreSQL, a private database on that server, dropped afterwards.
* The transfer store: the database's tables; or, with TRANSFER_STORE=scylla,
  a private keyspace on the CQL node of SCYLLA_HOSTS, dropped afterwards.
* Celery: CELERY_BROKER_URL (e.g. Redis) when set, with a queue of its own.

With `copies=n` the processes that scale out (web, relay, bridge, settlement
worker, UBSCore) run n copies each, named `relay`, `relay-2`, ...: the web
copies share one port (SO_REUSEPORT) and have distinct snowflake worker ids,
the Celery workers distinct node names; `start_process("relay-3")` starts one
more at any time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class Stack:
    # name -> (command, line in its log that says it is ready, or None)
    PROCESSES: dict[str, tuple[list[str], str | None]] = {
        "ubscore": ([sys.executable, "manage.py", "run_ubscore"], "partitions assigned"),
        "bridge": ([sys.executable, "manage.py", "run_bridge"], "partitions assigned"),
        "relay": ([sys.executable, "manage.py", "run_relay"], "relay started"),
        "worker": (
            [sys.executable, "-m", "celery", "-A", "transfer_site", "worker", "--loglevel", "INFO",
             "--queues", "settlement-e2e-%(run)s",
             "--concurrency", "2", "--hostname", "e2e-%(run)s@%%h", "--without-mingle", "--without-gossip"],
            " ready.",
        ),
        "webhooks": (
            [sys.executable, "-m", "celery", "-A", "transfer_site", "worker", "--loglevel", "INFO",
             "--queues", "settlement-e2e-%(run)s-webhooks", "--pool", "threads", "--concurrency", "4",
             "--hostname", "e2e-webhooks-%(run)s@%%h", "--without-mingle", "--without-gossip"],
            " ready.",
        ),
        "beat": ([sys.executable, "-m", "celery", "-A", "transfer_site", "beat", "--loglevel", "INFO"], None),
        "web": ([sys.executable, "-m", "gunicorn", "-c", "transfer_site/gunicorn.conf.py", "transfer_site.wsgi"], None),
    }

    SCALED_OUT = ("web", "relay", "bridge", "worker", "ubscore")

    tigerbeetle_port: int | None = None

    def __init__(self, var_dir: Path, extra_env: dict[str, str | None] | None = None, copies: int = 1) -> None:
        self.var_dir = var_dir
        self.copies = copies
        # Every copy of a process, started (and awaited) in this order.
        self.names = [name if n == 1 else f"{name}-{n}" for name in self.PROCESSES
                      for n in range(1, (copies if name in self.SCALED_OUT else 1) + 1)]
        self.run_id = uuid.uuid4().hex[:8]
        self.web_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.web_port}"
        self.external_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        self.kafka_port = None if self.external_kafka else free_port()
        self.kafka_bootstrap = self.external_kafka or f"127.0.0.1:{self.kafka_port}"
        self.namespace = f"e2e-{self.run_id}."
        self.processes: dict[str, subprocess.Popen] = {}
        self._private_database: str | None = None
        self._private_keyspace: str | None = None
        self.env = self._environment(extra_env or {})

    # --- lifecycle ---------------------------------------------------------

    def _environment(self, extra_env: dict[str, str | None]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_SETTINGS", "CRASH_AT"))}
        env.update(
            DJANGO_SETTINGS_MODULE="transfer_site.settings",
            VAR_DIR=str(self.var_dir),
            LOG_DIR=str(self.var_dir / "log"),
            MESSAGE_BUS="kafka",
            KAFKA_BOOTSTRAP_SERVERS=self.kafka_bootstrap,
            KAFKA_NAMESPACE=self.namespace,
            PORT=str(self.web_port),
            CELERY_QUEUE=f"settlement-e2e-{self.run_id}",
            SETTLEMENT_CONSUMER_GROUP="settlement-bridge",
            STUCK_TRANSFER_SECONDS="5",
            REDRIVE_INTERVAL_SECONDS="2",
            WEB_WORKERS="2",
            PYTHONUNBUFFERED="1",
            # Receivers of the tests listen on loopback; retries come within seconds, not minutes.
            WEBHOOK_ALLOW_PRIVATE="1",
            WEBHOOK_RETRY_BASE_SECONDS="1",
            WEBHOOK_RETRY_MAX_SECONDS="4",
            WEBHOOK_READ_TIMEOUT_SECONDS="1",
            WEBHOOK_DISPATCH_INTERVAL_SECONDS="0.5",
            WEBHOOK_CONFIRM_AFTER_SECONDS="5",
            # The schema run (test_schema_e2e.py) sends hundreds of requests with one key.
            API_RATE_LIMIT_TRANSFER="1000/second",
            API_RATE_LIMIT_READ="1000/second",
        )
        if self.copies > 1:
            env["WEB_REUSE_PORT"] = "1"  # the web copies listen on one port; the kernel spreads connections
        if env.get("LEDGER_BACKEND") == "tigerbeetle" and env.get("TIGERBEETLE_BIN"):
            # A replica of this stack's own, so balances never carry over
            # between stacks (ledger account ids are fixed per asset).
            self.tigerbeetle_port = free_port()
            env.update(TIGERBEETLE_ADDRESSES=f"127.0.0.1:{self.tigerbeetle_port}", TIGERBEETLE_CLUSTER_ID="0")
        database_url = os.environ.get("DATABASE_URL", "")
        if database_url.startswith(("postgres://", "postgresql://")):
            env["DATABASE_URL"] = self._create_private_postgres_database(database_url)
        else:
            env["DATABASE_URL"] = f"sqlite:///{self.var_dir / 'e2e.sqlite3'}"
        if env.get("TRANSFER_STORE") == "scylla":
            self._private_keyspace = env["SCYLLA_KEYSPACE"] = f"test_e2e_{self.run_id}"
        env.update(extra_env)
        env = {name: value for name, value in env.items() if value is not None}  # None: the service's default
        return env

    def topic(self, name: str) -> str:
        """A topic's name as this stack's processes use it (`name` from transfer_site.topics)."""
        return self.namespace + name

    def consumer_group(self, name: str) -> str:
        return self.namespace + name

    def _create_private_postgres_database(self, database_url: str) -> str:
        import psycopg

        name = f"transfer_e2e_{self.run_id}"
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self._private_database = name
        self._server_url = database_url
        return database_url.rsplit("/", 1)[0] + "/" + name

    def start(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        if self.tigerbeetle_port:
            self._start_tigerbeetle()
        self.manage("migrate", "--noinput")
        self.manage("createcachetable")  # replay records and rate limits (the database cache)
        self.manage("collectstatic", "--noinput", "--verbosity", "0")  # what gunicorn serves (WhiteNoise)
        if self._private_keyspace:
            self.manage("sync_scylla_schema", "--replication", "1")
        if self.kafka_port:
            self._spawn("broker", [sys.executable, "-m", "transfer_site.devbroker", "--port", str(self.kafka_port)])
            wait_until(lambda: _port_open(self.kafka_port), 30, "the Kafka broker")
        for name in self.names:
            self.start_process(name)
        for name in self.names:
            self.wait_ready(name)

    def _start_tigerbeetle(self) -> None:
        """Format and start a single-replica server from the binary at TIGERBEETLE_BIN."""
        binary = self.env["TIGERBEETLE_BIN"]
        data_file = self.var_dir / "0_0.tigerbeetle"
        subprocess.run(
            [binary, "format", "--cluster=0", "--replica=0", "--replica-count=1", "--development", str(data_file)],
            check=True, capture_output=True, timeout=120,
        )
        self._spawn("tigerbeetle", [binary, "start", f"--addresses=127.0.0.1:{self.tigerbeetle_port}",
                                    "--development", str(data_file)])
        wait_until(lambda: _port_open(self.tigerbeetle_port), 60, "the TigerBeetle replica")

    @staticmethod
    def process_of(name: str) -> tuple[str, int]:
        """("relay", 2) for "relay-2"; ("relay", 1) for "relay"."""
        base, _, number = name.rpartition("-")
        return (base, int(number)) if base and number.isdigit() else (name, 1)

    def start_process(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        """Start one process (or copy: "relay-3"); `extra_env` (e.g. CRASH_AT) for this start only."""
        base, number = self.process_of(name)
        command, _ = self.PROCESSES[base]
        node_suffix = "" if number == 1 else f"-{number}"  # a Celery worker copy's node name: e2e-<run>-2@host
        command = [part.replace("@%%h", node_suffix + "@%%h") % {"run": self.run_id} if "%(run)s" in part else part
                   for part in command]
        copy_env = {}
        if base == "web" and number > 1:  # request ids of distinct copies never collide
            copy_env["SNOWFLAKE_WORKER_ID"] = str((number - 1) * int(self.env["WEB_WORKERS"]))
        self._spawn(name, command, {**copy_env, **(extra_env or {})})

    def wait_ready(self, name: str, since_line: int = 0) -> None:
        base, _ = self.process_of(name)
        _, ready_line = self.PROCESSES.get(base, (None, None))
        if base == "web":
            wait_until(self._web_healthy, STARTUP_TIMEOUT_SECONDS, "the web server's /ready")
        elif ready_line:
            wait_until(
                lambda: any(ready_line in line for line in self.log_lines(name)[since_line:]),
                STARTUP_TIMEOUT_SECONDS,
                f"{name} to log {ready_line!r}",
            )

    def _spawn(self, name: str, command: list[str], extra_env: dict[str, str] | None = None) -> None:
        env = dict(self.env, PROCESS_NAME=name, **(extra_env or {}))
        with open(self.var_dir / f"{name}.out", "ab") as output:  # the child keeps its own descriptor
            self.processes[name] = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def restart_process(
        self, name: str, sig: int = signal.SIGKILL, extra_env: dict[str, str] | None = None, wait: bool = True
    ) -> None:
        """Stop (SIGKILL by default: no cleanup) and start again, then wait until it is ready."""
        lines_before = len(self.log_lines(name))
        self.stop_process(name, sig)
        self.start_process(name, extra_env)
        if wait:
            self.wait_ready(name, since_line=lines_before)

    def wait_exit(self, name: str, timeout: float) -> int:
        """Wait for a process to end by itself; its exit code."""
        return self.processes[name].wait(timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for name in [n for n in self.processes if n != "broker"]:
            self.stop_process(name, sig)
        self.stop_process("broker", sig)
        if self._private_keyspace:
            self.manage("shell", "-c", "from transfers.store.scylla_schema import drop_keyspace; "
                        f"drop_keyspace({self._private_keyspace!r})", check=False)
        if self._private_database:
            import psycopg

            with psycopg.connect(self._server_url, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{self._private_database}" WITH (FORCE)')

    # --- talking to it -----------------------------------------------------

    def manage(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=dict(self.env, PROCESS_NAME="manage"),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def create_api_key(self, user_id: int) -> str:
        return self.manage("create_api_key", "--user-id", str(user_id)).stdout.strip().splitlines()[-1]

    def deposit(self, user_id: int, asset: str, amount: str, to: str) -> None:
        self.manage("deposit", "--user-id", str(user_id), "--asset", asset, "--amount", amount, "--to", to)

    def http(
        self,
        method: str,
        path: str,
        api_key: str | None = None,
        body: object = None,
        headers: dict[str, str] | None = None,
        raw_body: bytes | None = None,
    ) -> tuple[int, dict]:
        data = raw_body if raw_body is not None else json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if api_key:
            request.add_header("X-API-Key", api_key)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def log_lines(self, name: str) -> list[str]:
        path = self.var_dir / "log" / f"{name}.log"
        return path.read_text().splitlines() if path.exists() else []

    def log_records(self, name: str) -> Iterator[dict]:
        for line in self.log_lines(name):
            with contextlib.suppress(json.JSONDecodeError):
                yield json.loads(line)

    def _web_healthy(self) -> bool:
        # /ready, not /health: /health is liveness only; /ready also needs the database, ledger, Kafka and broker.
        try:
            status, _ = self.http("GET", "/ready")
        except OSError:
            return False
        return status == 200
