"""Apache Kafka, one KRaft node (broker and controller), from its Maven Central jars.

Version: 4.0.2, the newest release of the 4.0 line. kafka-python 2.3.3 knows
brokers up to 4.0: its table of broker API versions
(kafka/protocol/broker_api_versions.py) ends at (4, 0), which is what it
infers from a newer broker's ApiVersions as well. A 4.1+ broker would be
spoken to as a 4.0 one; 4.0 is the newest the client fully speaks, and the
first line without ZooKeeper and without the pre-0.10 protocols (KIP-896),
so it also proves the client uses no removed request version.
"""

from __future__ import annotations

import base64
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
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
HEAP = ["-Xms256m", "-Xmx512m"]


def install(home: Path) -> None:
    """The broker's jars into home/lib, from Maven Central, once."""
    if shutil.which("java") is None:
        raise ServiceError("Kafka: no `java` on PATH (OpenJDK 17 or newer)")
    lib = home / "lib"
    if (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return
    maven_copy_dependencies(POM, lib, "Kafka")


def maven_copy_dependencies(pom: Path, lib: Path, what: str) -> None:
    if shutil.which("mvn") is None:
        raise ServiceError(f"{what}: no `mvn` on PATH to download its jars from Maven Central (apt-get install maven)")
    partial = lib.with_name(lib.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime",
         f"-DoutputDirectory={partial}"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise ServiceError(f"{what}: downloading its jars from Maven Central failed:\n{result.stdout[-3000:]}"
                           f"{result.stderr[-2000:]}")
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)  # only a complete download counts as installed


def server_properties(home: Path, port: int, controller_port: int) -> str:
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
        # One node: every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
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


LOG4J2 = """status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def _java(home: Path, main: str, *args: str) -> list[str]:
    return ["java", *HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            "-cp", str(home / "lib" / "*"), main, *args]


def start(home: Path, port: int, controller_port: int) -> None:
    """Start the broker (formatting its storage the first time) and wait until it serves metadata."""
    pid_file = home / "kafka.pid"
    if running_pid(pid_file):
        if port_open(port):
            return
        raise ServiceError(f"Kafka is already running from {home} (pid {running_pid(pid_file)}) on another "
                           f"port than {port}: make services-stop first")
    require_free_port(port, "Kafka", "SERVICES_KAFKA_PORT")
    require_free_port(controller_port, "Kafka's controller", "SERVICES_KAFKA_CONTROLLER_PORT")
    (home / "logs").mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    properties.write_text(server_properties(home, port, controller_port))
    (home / "log4j2.properties").write_text(LOG4J2.format(log=home / "logs" / "server.log"))
    if not (home / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(_java(home, "kafka.tools.StorageTool", "format", "--cluster-id", cluster_id,
                                      "--config", str(properties), "--ignore-formatted"),
                                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        if result.returncode != 0:
            raise ServiceError(f"Kafka: formatting the storage failed:\n{result.stdout}{result.stderr}")
    spawn(_java(home, "kafka.Kafka", str(properties)), pid_file, home / "logs" / "stdout.log")
    wait_until(lambda: _serves_metadata(port) or _exited(pid_file), 120, f"Kafka on port {port}",
               home / "logs" / "server.log")
    if _exited(pid_file):
        tail = "\n".join((home / "logs" / "stdout.log").read_text(errors="replace").splitlines()[-20:])
        raise ServiceError(f"Kafka exited during start-up:\n{tail}")


def _exited(pid_file: Path) -> bool:
    return running_pid(pid_file) is None


def _serves_metadata(port: int) -> bool:
    """A client can bootstrap and read cluster metadata (the controller has elected itself)."""
    if not port_open(port):
        return False
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
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
    stop_pid_file(home / "kafka.pid", sig, timeout=60)
