"""A Cassandra 5.0 node, the CQL server the ScyllaDB store is proven on, from its Maven Central jars.

ScyllaDB speaks the same CQL protocol and lightweight transactions; no
ScyllaDB build is obtainable on these machines. Where the two differ in
anything the store relies on, docs/scylla.md says so. The node is sized for a
developer machine (1 GiB heap, one token, small thread pools) and keeps no
snapshots of dropped test keyspaces.
"""

from __future__ import annotations

import signal
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

CASSANDRA_VERSION = "5.0.7"
POM = Path(__file__).resolve().parent / "cassandra" / "pom.xml"
HEAP = ["-Xms1g", "-Xmx1g", "-Xmn256m"]

# What Cassandra 5 needs from the JDK's modules on Java 17 (the release's conf/jvm17-server.options).
JAVA17_MODULE_ACCESS = [
    *(f"--add-exports={export}=ALL-UNNAMED" for export in (
        "java.base/jdk.internal.misc", "java.management.rmi/com.sun.jmx.remote.internal.rmi",
        "java.rmi/sun.rmi.registry", "java.rmi/sun.rmi.server", "java.sql/java.sql", "java.base/java.lang.ref",
        "jdk.unsupported/sun.misc", "jdk.compiler/com.sun.tools.javac.file", "jdk.attach/sun.tools.attach",
    )),
    *(f"--add-opens={package}=ALL-UNNAMED" for package in (
        "java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
        "java.base/jdk.internal.reflect", "java.base/jdk.internal.math", "java.base/jdk.internal.module",
        "java.base/jdk.internal.util.jar", "jdk.management/com.sun.management.internal", "java.base/sun.nio.ch",
        "java.base/java.io", "java.base/java.lang.reflect", "jdk.compiler/com.sun.tools.javac",
        "java.base/java.lang", "java.base/java.util",
    )),
]


def install(home: Path) -> None:
    """The node's jars into home/lib, from Maven Central, once."""
    lib = home / "lib"
    if (lib / f"cassandra-all-{CASSANDRA_VERSION}.jar").exists():
        return
    maven_copy_dependencies(POM, lib, "Cassandra")


def cassandra_yaml(home: Path, cql_port: int, storage_port: int) -> str:
    data = home / "data"
    return f"""\
cluster_name: internal-transfer-dev
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:{storage_port}"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage_port}
native_transport_port: {cql_port}
start_native_transport: true
data_file_directories:
  - {data / "data"}
commitlog_directory: {data / "commitlog"}
saved_caches_directory: {data / "saved_caches"}
hints_directory: {data / "hints"}
cdc_raw_directory: {data / "cdc_raw"}
commitlog_sync: periodic
commitlog_sync_period: 10000ms
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
# Test runs create and drop a keyspace per stack: no snapshot of each on the disk.
auto_snapshot: false
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 4
concurrent_materialized_view_writes: 4
disk_failure_policy: stop
commit_failure_policy: stop
"""


LOGBACK = """<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>{log}</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>{log}.%i</fileNamePattern><minIndex>1</minIndex><maxIndex>3</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>20MB</maxFileSize>
    </triggeringPolicy>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""


def java_command(home: Path) -> list[str]:
    return [
        "java", *HEAP, "-Xss256k", "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1",
        "-XX:+HeapDumpOnOutOfMemoryError", "-Djdk.attach.allowAttachSelf=true",
        "-Dio.netty.tryReflectionSetAccessible=true", *JAVA17_MODULE_ACCESS,
        f"-Dcassandra.config=file://{home / 'cassandra.yaml'}",
        f"-Dcassandra.storagedir={home / 'data'}",
        f"-Dcassandra.logdir={home / 'logs'}",
        f"-Dlogback.configurationFile={home / 'logback.xml'}",
        "-Dcassandra-foreground=yes",
        # One node, nothing to wait for: skip the gossip settling and the superuser set-up delay.
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.superuser_setup_delay_ms=0",
        "-cp", str(home / "lib" / "*"), "org.apache.cassandra.service.CassandraDaemon",
    ]


def start(home: Path, cql_port: int, storage_port: int) -> None:
    """Start the node and wait until CQL answers a query."""
    pid_file = home / "cassandra.pid"
    if running_pid(pid_file):
        if port_open(cql_port):
            return
        raise ServiceError(f"Cassandra is already running from {home} (pid {running_pid(pid_file)}) on another "
                           f"port than {cql_port}: make services-stop first")
    require_free_port(cql_port, "Cassandra (CQL)", "SERVICES_CQL_PORT")
    require_free_port(storage_port, "Cassandra (storage)", "SERVICES_CASSANDRA_STORAGE_PORT")
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / "cassandra.yaml").write_text(cassandra_yaml(home, cql_port, storage_port))
    (home / "logback.xml").write_text(LOGBACK.format(log=home / "logs" / "system.log"))
    spawn(java_command(home), pid_file, home / "logs" / "stdout.log")
    wait_until(lambda: running_pid(pid_file) is None or _answers_cql(cql_port), 240, f"Cassandra CQL on port "
               f"{cql_port}", home / "logs" / "system.log")
    if running_pid(pid_file) is None:
        tail = "\n".join((home / "logs" / "stdout.log").read_text(errors="replace").splitlines()[-30:])
        raise ServiceError(f"Cassandra exited during start-up:\n{tail}")


def _answers_cql(port: int) -> bool:
    if not port_open(port):
        return False
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=port, connect_timeout=3, control_connection_timeout=3)
    try:
        session = cluster.connect()
        return session.execute("SELECT release_version FROM system.local", timeout=5).one() is not None
    except Exception:  # not up yet, whatever the driver raises
        return False
    finally:
        cluster.shutdown()


def stop(home: Path, sig: int = signal.SIGTERM) -> None:
    stop_pid_file(home / "cassandra.pid", sig, timeout=60)
