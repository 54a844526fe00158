"""`make services`' launchers: what they write and how they refuse (no JVM started here;
CI's production-like pass runs the servers themselves)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from devservices import cassandra, kafka
from devservices.process import ServiceError, require_free_port, running_pid, spawn, stop_pid_file


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_kafka_is_one_kraft_node_on_loopback(tmp_path):
    settings = properties(kafka.server_properties(tmp_path, 9092, 9093))
    assert settings["process.roles"] == "broker,controller"
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert settings["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert settings["log.dirs"] == str(tmp_path / "data")
    # One node: an internal topic with 3 replicas could never be created.
    assert settings["offsets.topic.replication.factor"] == settings["transaction.state.log.replication.factor"] == "1"


def test_cassandra_listens_on_loopback_and_keeps_no_snapshots_of_dropped_test_keyspaces(tmp_path):
    import yaml

    settings = yaml.safe_load(cassandra.cassandra_yaml(tmp_path, 9042, 7000))
    assert (settings["listen_address"], settings["rpc_address"]) == ("127.0.0.1", "127.0.0.1")
    assert (settings["native_transport_port"], settings["storage_port"]) == (9042, 7000)
    assert settings["seed_provider"][0]["parameters"][0]["seeds"] == "127.0.0.1:7000"
    assert settings["auto_snapshot"] is False
    assert all(str(path).startswith(str(tmp_path)) for path in (
        *settings["data_file_directories"], settings["commitlog_directory"], settings["hints_directory"]))


def test_cassandra_runs_on_java_17_with_the_module_access_it_needs(tmp_path):
    command = cassandra.java_command(tmp_path)
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in command
    assert command[-1] == "org.apache.cassandra.service.CassandraDaemon"


def test_a_taken_port_is_refused_with_the_variable_to_change():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceError, match=rf"port {port} .* taken .* SERVICES_KAFKA_PORT"):
            require_free_port(port, "Kafka", "SERVICES_KAFKA_PORT")


def test_a_server_already_running_on_another_port_is_refused(tmp_path):
    spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "kafka.pid", tmp_path / "out.log")
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free_port = probe.getsockname()[1]
        with pytest.raises(ServiceError, match=r"already running .* make services-stop"):
            kafka.start(tmp_path, free_port, free_port)
    finally:
        assert stop_pid_file(tmp_path / "kafka.pid")
    assert running_pid(tmp_path / "kafka.pid") is None


def test_a_missing_java_is_said_plainly(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError, match="no `java` on PATH"):
        kafka.install(tmp_path)


def test_stop_kills_the_whole_process_group(tmp_path):
    spawn(["bash", "-c", "sleep 60 & wait"], tmp_path / "x.pid", tmp_path / "x.log")
    pid = running_pid(tmp_path / "x.pid")
    children: list[str] = []
    deadline = time.monotonic() + 10
    while not children and time.monotonic() < deadline:  # bash forks its child a moment later
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    assert children
    assert stop_pid_file(tmp_path / "x.pid")
    deadline = time.monotonic() + 10
    while any(alive(int(child)) for child in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(int(child)) for child in children)


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for whoever reaps it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
