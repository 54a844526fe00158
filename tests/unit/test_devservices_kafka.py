"""devservices/kafka.py without a JVM: what it writes, the command it runs, how it refuses.

The broker itself runs in CI's production-like pass (make services).
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from devservices import kafka
from devservices.process import ServiceError, running_pid, spawn, stop_pid_file


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def installed(home: Path) -> Path:
    """home with an (empty) jar of the pinned release, which is what start() checks."""
    (home / "lib").mkdir(parents=True)
    (home / "lib" / f"kafka_2.13-{kafka.KAFKA_VERSION}.jar").touch()
    return home


def taken_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fake_command(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_the_pom_pins_the_release_the_module_names():
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    dependencies = ET.parse(kafka.POM).getroot().findall("m:dependencies/m:dependency", namespace)
    versions = {d.findtext("m:artifactId", namespaces=namespace): d.findtext("m:version", namespaces=namespace)
                for d in dependencies}
    assert versions["kafka_2.13"] == kafka.KAFKA_VERSION
    # Kafka 4 logs through SLF4J 1.x: without log4j2's binding the broker's log is silently lost.
    assert {"log4j-slf4j-impl", "log4j-core"} <= versions.keys()


def test_one_kraft_node_listening_on_loopback_only(tmp_path):
    settings = properties(kafka.server_properties(tmp_path, 29092, 29093))
    assert settings["process.roles"] == "broker,controller"
    assert settings["node.id"] == "1"
    assert settings["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert settings["controller.listener.names"] == "CONTROLLER"


def test_topics_and_groups_as_the_service_expects_them(tmp_path):
    settings = properties(kafka.server_properties(tmp_path, 29092, 29093))
    assert settings["auto.create.topics.enable"] == "true"
    assert settings["num.partitions"] == "4"
    assert settings["group.initial.rebalance.delay.ms"] == "0"
    # One node: an internal topic asking for more replicas than brokers could never be created.
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "min.insync.replicas"):
        assert settings[key] == "1", key


def test_data_under_home(tmp_path):
    settings = properties(kafka.server_properties(tmp_path, 29092, 29093))
    assert settings["log.dirs"] == str(tmp_path / "data")


def test_the_port_written_is_read_back(tmp_path):
    assert kafka.configured_port(tmp_path) is None
    (tmp_path / "server.properties").write_text(kafka.server_properties(tmp_path, 29092, 29093))
    assert kafka.configured_port(tmp_path) == 29092


def test_java_command_small_heap_logging_to_a_file_and_the_jars_of_home(tmp_path):
    command = kafka.java_command(tmp_path, kafka.MAIN_CLASS, "server.properties")
    assert command[0] == "java"
    assert {"-Xms256m", "-Xmx512m"} <= set(command)
    assert f"-Dkafka.logs.dir={tmp_path / 'logs'}" in command
    assert f"-Dlog4j2.configurationFile={kafka.LOG4J2}" in command
    assert command[command.index("-cp") + 1] == str(tmp_path / "lib" / "*")
    assert command[-2:] == ["kafka.Kafka", "server.properties"]


def test_log4j2_writes_info_to_server_log_and_nothing_to_the_terminal():
    settings = {key.strip(): value.strip() for key, value in properties(kafka.LOG4J2.read_text()).items()}
    assert settings["rootLogger.level"] == "INFO"
    assert settings["appender.file.fileName"] == "${sys:kafka.logs.dir}/server.log"
    appender_types = {value for key, value in settings.items() if key.startswith("appender.") and key.endswith(".type")
                      and key.count(".") == 2}
    assert appender_types == {"RollingFile"}


def test_a_taken_broker_port_is_refused_with_the_variable_to_change(tmp_path):
    with taken_port() as sock:
        port = sock.getsockname()[1]
        with pytest.raises(ServiceError, match=rf"Kafka: port {port} .* taken .* SERVICES_KAFKA_PORT"):
            kafka.start(installed(tmp_path), port, free_port())
    assert not (tmp_path / "kafka.pid").exists()


def test_a_taken_controller_port_is_refused_with_the_variable_to_change(tmp_path):
    with taken_port() as sock:
        port = sock.getsockname()[1]
        with pytest.raises(ServiceError, match=rf"controller: port {port} .* SERVICES_KAFKA_CONTROLLER_PORT"):
            kafka.start(installed(tmp_path), free_port(), port)
    assert not (tmp_path / "kafka.pid").exists()


def test_start_without_install_says_so(tmp_path):
    with pytest.raises(ServiceError, match=rf"Kafka {kafka.KAFKA_VERSION} is not installed .* install\(\) first"):
        kafka.start(tmp_path, free_port(), free_port())


def test_a_broker_running_from_home_on_another_port_is_refused_at_once(tmp_path):
    (tmp_path / "server.properties").write_text(kafka.server_properties(tmp_path, 29092, 29093))
    spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "kafka.pid", tmp_path / "out.log")
    try:
        with pytest.raises(ServiceError, match=r"already running .* \(29092\) than 29094: make services-stop"):
            kafka.start(tmp_path, 29094, 29095)
    finally:
        assert stop_pid_file(tmp_path / "kafka.pid", signal.SIGKILL)
    assert running_pid(tmp_path / "kafka.pid") is None


def test_install_reuses_the_jars_without_maven(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "java", "exit 0")
    fake_command(bin_dir, "mvn", f"touch {tmp_path / 'mvn-ran'}; exit 1")
    monkeypatch.setenv("PATH", str(bin_dir))
    kafka.install(installed(tmp_path / "home"))
    assert not (tmp_path / "mvn-ran").exists()


def test_install_without_mvn_says_so(tmp_path, monkeypatch):
    fake_command(tmp_path, "java", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError, match="no `mvn` on PATH"):
        kafka.install(tmp_path / "home")


def test_a_failed_download_is_reported_and_installs_nothing(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "java", "exit 0")
    fake_command(bin_dir, "mvn", "echo 'Could not resolve dependencies: Network is unreachable'; exit 1")
    monkeypatch.setenv("PATH", str(bin_dir))
    home = tmp_path / "home"
    with pytest.raises(ServiceError, match=r"(?s)jars from Maven Central failed.*Network is unreachable"):
        kafka.install(home)
    assert not (home / "lib").exists()


def test_a_complete_download_becomes_home_lib(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_command(bin_dir, "java", "exit 0")
    # mvn ... -DoutputDirectory=<dir>: the last argument; put the jar there as the real plugin would.
    fake_command(bin_dir, "mvn", 'for a in "$@"; do out="${a#-DoutputDirectory=}"; done; mkdir -p "$out"; '
                                 f'touch "$out/kafka_2.13-{kafka.KAFKA_VERSION}.jar"')
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + "/bin")
    home = tmp_path / "home"
    kafka.install(home)
    assert (home / "lib" / f"kafka_2.13-{kafka.KAFKA_VERSION}.jar").exists()
    assert not (home / "lib.partial").exists()
