"""A Cassandra 5.0 node, the CQL server the ScyllaDB store is proven on, from its Maven Central jars.

ScyllaDB speaks the same CQL protocol and lightweight transactions; no
ScyllaDB build is obtainable on these machines. Where the two differ in
anything the store relies on, docs/scylla.md says so.

Version: 5.0.9, the newest 5.0.x release on Maven Central
(org.apache.cassandra:cassandra-all). Only the jar and its dependencies are
downloaded (devservices/cassandra/pom.xml); what the release tarball adds is
here instead: devservices/cassandra/cassandra.yaml (a template: ports and
directories filled in), logback.xml and jvm.options (heap, start-up shortcuts
for one node, the Java 17 module access of the tarball's
conf/jvm17-server.options).

The node is sized for a developer machine (512 MiB - 1 GiB heap, one token,
small thread pools), keeps no snapshots of dropped test keyspaces, and runs
lightweight transactions on Paxos v2. A SIGKILL loses nothing the next start
cannot replay from the commit log.
"""

from __future__ import annotations

import re
import shutil
import signal
import string
from pathlib import Path

from devservices.kafka import maven_copy_dependencies
from devservices.process import (
    ServiceError,
    port_open,
    require_free_port,
    running_pid,
    spawn,
    stop_pid_file,
    wait_until,
)

CASSANDRA_VERSION = "5.0.9"
CONFIG_DIR = Path(__file__).resolve().parent / "cassandra"
POM = CONFIG_DIR / "pom.xml"
YAML_TEMPLATE = CONFIG_DIR / "cassandra.yaml"
LOGBACK = CONFIG_DIR / "logback.xml"
JVM_OPTIONS = CONFIG_DIR / "jvm.options"
START_TIMEOUT_SECONDS = 180
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"


def install(home: Path) -> None:
    """The node's jars into home/lib, from Maven Central, once (later runs need no network)."""
    if shutil.which("java") is None:
        raise ServiceError("Cassandra: no `java` on PATH (OpenJDK 17: apt-get install -y openjdk-17-jre-headless)")
    lib = home / "lib"
    if (lib / f"cassandra-all-{CASSANDRA_VERSION}.jar").exists():
        return
    maven_copy_dependencies(POM, lib, "Cassandra")  # says so plainly when `mvn` is missing


def cassandra_yaml(home: Path, cql_port: int, storage_port: int) -> str:
    """devservices/cassandra/cassandra.yaml with this node's ports and directories (under home/data)."""
    return string.Template(YAML_TEMPLATE.read_text(encoding="utf-8")).substitute(
        cql_port=cql_port, storage_port=storage_port, data=home / "data")


def jvm_options() -> list[str]:
    """devservices/cassandra/jvm.options: one option a line, without blank lines and comments."""
    lines = (line.strip() for line in JVM_OPTIONS.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def java_command(home: Path) -> list[str]:
    return [
        "java", *jvm_options(),
        f"-Dcassandra.config=file://{home / 'cassandra.yaml'}",
        f"-Dcassandra.storagedir={home / 'data'}",
        f"-Dcassandra.logdir={home / 'logs'}",
        f"-Dlogback.configurationFile={LOGBACK}",
        "-cp", str(home / "lib" / "*"), MAIN_CLASS,
    ]


def start(home: Path, cql_port: int, storage_port: int) -> None:
    """Start the node (detached, pid in home/cassandra.pid) and wait until CQL answers a query."""
    pid_file = home / "cassandra.pid"
    pid = running_pid(pid_file)
    if pid:
        running_port = configured_cql_port(home)
        if running_port is not None and running_port != cql_port:
            raise ServiceError(f"Cassandra is already running from {home} (pid {pid}) on another port "
                               f"({running_port}) than {cql_port}: make services-stop first")
        # Running, perhaps still starting (or replaying its commit log): ready once a query answers.
        wait_until(lambda: running_pid(pid_file) is None or answers_cql(cql_port), START_TIMEOUT_SECONDS,
                   f"the running Cassandra (pid {pid}) to answer CQL on port {cql_port}", home / "logs" / "system.log")
        if running_pid(pid_file):
            return
        # It ended while we waited: start it again below.
    if not (home / "lib" / f"cassandra-all-{CASSANDRA_VERSION}.jar").exists():
        raise ServiceError(f"Cassandra {CASSANDRA_VERSION} is not installed in {home / 'lib'}: install() first")
    require_free_port(cql_port, "Cassandra (CQL)", "SERVICES_CQL_PORT")
    require_free_port(storage_port, "Cassandra (storage)", "SERVICES_CASSANDRA_STORAGE_PORT")
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / "data").mkdir(parents=True, exist_ok=True)
    (home / "cassandra.yaml").write_text(cassandra_yaml(home, cql_port, storage_port))
    spawn(java_command(home), pid_file, home / "logs" / "stdout.log", cwd=home)
    try:
        wait_until(lambda: running_pid(pid_file) is None or answers_cql(cql_port), START_TIMEOUT_SECONDS,
                   f"Cassandra CQL on port {cql_port}", home / "logs" / "system.log")
    except ServiceError:
        stop(home, signal.SIGKILL)  # not left half-started, holding the ports
        raise
    if running_pid(pid_file) is None:
        raise ServiceError(f"Cassandra exited during start-up:\n{_tail(home / 'logs' / 'stdout.log')}"
                           f"\n{_tail(home / 'logs' / 'system.log')}")


def configured_cql_port(home: Path) -> int | None:
    """native_transport_port of the cassandra.yaml start() last wrote into home, if any."""
    try:
        text = (home / "cassandra.yaml").read_text()
    except FileNotFoundError:
        return None
    match = re.search(r"^native_transport_port:\s*(\d+)\s*$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _tail(log: Path, lines: int = 30) -> str:
    if not log.exists():
        return f"({log} is missing)"
    return f"last lines of {log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def answers_cql(port: int) -> bool:
    """Whether the node on 127.0.0.1:port answers a query (not only accepts connections)."""
    if not port_open(port):
        return False
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=port, connect_timeout=3, control_connection_timeout=3,
                      protocol_version=5)
    try:
        session = cluster.connect()
        return session.execute("SELECT release_version FROM system.local", timeout=5).one() is not None
    except Exception:  # not up yet, whatever the driver raises
        return False
    finally:
        cluster.shutdown()


def stop(home: Path, sig: int = signal.SIGTERM) -> None:
    """Stop the node (SIGKILL: no clean shutdown; the next start replays the commit log)."""
    stop_pid_file(home / "cassandra.pid", sig, timeout=60)
