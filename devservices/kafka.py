"""Apache Kafka, one KRaft node (broker and controller), from its Maven Central jars.

Version: 4.0.2, the newest release of 4.0, the newest line kafka-python 2.3.3
knows: its broker table (kafka/protocol/broker_api_versions.py) ends at (4, 0)
and its README badge says "kafka 4.0--0.8". Run against it: create/list/delete
topics, acks=all, idempotent and transactional produce, a consumer group with
commits, list_consumer_group_offsets (with and without partitions),
describe/list/delete consumer groups, delete_records, end/beginning offsets:
all pass. kafka-python's probe (check_version) calls every broker since 2.6
"(2, 6)", then takes each request's version from the broker's ApiVersions
(Produce v8, Fetch v11, OffsetCommit v7, JoinGroup v5). Only DescribeLogDirs
has no common version (client v0, Kafka 4 v1+), unused here. 4.4.0, the newest
on Maven Central, passed the same checks with the same request versions; only
kafka-python's declared range keeps us on 4.0.
"""

from __future__ import annotations

import base64
import re
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

from devservices.process import (
    ServiceError,
    port_open,
    require_free_port,
    running_pid,
    spawn,
    stop_pid_file,
    wait_until,
)

KAFKA_VERSION = "4.0.2"
CONFIG_DIR = Path(__file__).resolve().parent / "kafka"
POM = CONFIG_DIR / "pom.xml"
LOG4J2 = CONFIG_DIR / "log4j2.properties"
HEAP = ["-Xms256m", "-Xmx512m"]
START_TIMEOUT_SECONDS = 90
MAVEN_TIMEOUT_SECONDS = 900
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


def _jar(home: Path) -> Path:
    return home / "lib" / f"kafka_2.13-{KAFKA_VERSION}.jar"


def install(home: Path) -> None:
    """The broker's jars into home/lib, from Maven Central, once (later runs need no network)."""
    if shutil.which("java") is None:
        raise ServiceError("Kafka: no `java` on PATH (Kafka 4 needs Java 17 or newer: "
                           "apt-get install -y openjdk-17-jre-headless)")
    if _jar(home).exists():
        return
    maven_copy_dependencies(POM, home / "lib", f"Kafka {KAFKA_VERSION}")


def maven_copy_dependencies(pom: Path, lib: Path, what: str) -> None:
    """`mvn dependency:copy-dependencies` of `pom` into `lib`, which is replaced only by a complete download."""
    if shutil.which("mvn") is None:
        raise ServiceError(f"{what}: no `mvn` on PATH to download its jars from Maven Central "
                           "(apt-get install -y maven)")
    partial = lib.with_name(lib.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    command = ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime",
               f"-DoutputDirectory={partial}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                timeout=MAVEN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as error:
        raise ServiceError(f"{what}: downloading its jars from Maven Central took over "
                           f"{MAVEN_TIMEOUT_SECONDS} s ({' '.join(command)})") from error
    if result.returncode != 0:
        raise ServiceError(f"{what}: downloading its jars from Maven Central failed ({' '.join(command)}):\n"
                           f"{result.stdout[-3000:]}{result.stderr[-2000:]}")
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)  # only a complete download counts as installed


def server_properties(home: Path, port: int, controller_port: int) -> str:
    """server.properties of the one node: broker and controller, listening on 127.0.0.1 only."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(home / "data"),
        "auto.create.topics.enable": "true",
        "num.partitions": "4",
        # One node: every internal topic has one replica (an internal topic with 3 could never be created).
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "min.insync.replicas": "1",
        # A consumer joining an empty group is assigned at once, not after 3 s.
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def java_command(home: Path, main: str = MAIN_CLASS, *args: str) -> list[str]:
    """`java` with the broker's heap, logging (into home/logs) and jars, running `main`."""
    return ["java", *HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={home / 'logs'}", f"-Dlog4j2.configurationFile={LOG4J2}",
            "-cp", str(home / "lib" / "*"), main, *args]


def configured_port(home: Path) -> int | None:
    """The PLAINTEXT port of the server.properties start() last wrote into home, if any."""
    try:
        text = (home / "server.properties").read_text()
    except FileNotFoundError:
        return None
    match = re.search(r"^listeners=.*PLAINTEXT://[^:,]+:(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def format_storage(home: Path, properties: Path) -> None:
    """Format the KRaft log directory once (a new cluster id); a formatted one is left as it is."""
    if (home / "data" / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    command = java_command(home, STORAGE_TOOL, "format", "--cluster-id", cluster_id, "--config", str(properties),
                           "--ignore-formatted")
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    if result.returncode != 0:
        raise ServiceError(f"Kafka: formatting the storage in {home / 'data'} failed:\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")


def start(home: Path, port: int, controller_port: int) -> None:
    """Start the broker (formatting its storage the first time) and wait until it serves metadata."""
    pid_file = home / "kafka.pid"
    pid = running_pid(pid_file)
    if pid:
        running_port = configured_port(home)
        if running_port != port:
            raise ServiceError(f"Kafka is already running from {home} (pid {pid}) on another port "
                               f"({running_port or 'unknown'}) than {port}: make services-stop first")
        # Running, perhaps still starting: ready once it serves metadata (at once when it is up).
        wait_until(lambda: running_pid(pid_file) is None or serves_metadata(port), START_TIMEOUT_SECONDS,
                   f"the running Kafka (pid {pid}) to answer on port {port}", home / "logs" / "server.log")
        if running_pid(pid_file):
            return
        # It ended while we waited: start it again below.
    if not _jar(home).exists():
        raise ServiceError(f"Kafka {KAFKA_VERSION} is not installed in {home / 'lib'}: install() first")
    require_free_port(port, "Kafka", "SERVICES_KAFKA_PORT")
    require_free_port(controller_port, "Kafka's controller", "SERVICES_KAFKA_CONTROLLER_PORT")
    (home / "logs").mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    properties.write_text(server_properties(home, port, controller_port))
    format_storage(home, properties)
    spawn(java_command(home, MAIN_CLASS, str(properties)), pid_file, home / "logs" / "stdout.log", cwd=home)
    try:
        wait_until(lambda: running_pid(pid_file) is None or serves_metadata(port), START_TIMEOUT_SECONDS,
                   f"Kafka on port {port}", home / "logs" / "server.log")
    except ServiceError:
        stop(home, signal.SIGKILL)  # not left half-started, holding the ports
        raise
    if running_pid(pid_file) is None:
        raise ServiceError(f"Kafka exited during start-up:\n{_tail(home / 'logs' / 'stdout.log')}\n"
                           f"{_tail(home / 'logs' / 'server.log')}")


def _tail(log: Path, lines: int = 30) -> str:
    if not log.exists():
        return f"({log} is missing)"
    return f"last lines of {log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def serves_metadata(port: int) -> bool:
    """A client can bootstrap from 127.0.0.1:port and list the topics (the controller has elected itself)."""
    if not port_open(port):
        return False
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000,
                                 api_version_auto_timeout_ms=3000, client_id="devservices-readiness")
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def stop(home: Path, sig: int = signal.SIGTERM) -> None:
    """Stop the broker started from home (SIGTERM: a clean shutdown; SIGKILL: none, as the chaos test does)."""
    stop_pid_file(home / "kafka.pid", sig, timeout=60)
