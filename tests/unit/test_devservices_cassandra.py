"""The Cassandra node of `make services` (devservices/cassandra.py): what it writes and refuses.

Pure logic, no JVM: the generated cassandra.yaml, the JVM options, the
refusals before anything is started. The node itself runs in CI's
production-like pass and in the ScyllaDB contract suite.
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from devservices import cassandra
from devservices.process import ServiceError, spawn, stop_pid_file


@pytest.fixture
def settings(tmp_path) -> dict:
    return yaml.safe_load(cassandra.cassandra_yaml(tmp_path, 29042, 27000))


def test_the_version_is_a_pinned_5_0_release_and_the_pom_asks_for_it():
    assert re.fullmatch(r"5\.0\.\d+", cassandra.CASSANDRA_VERSION)
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    dependencies = ElementTree.parse(cassandra.POM).getroot().findall("m:dependencies/m:dependency", ns)
    versions = {d.findtext("m:artifactId", namespaces=ns): d.findtext("m:version", namespaces=ns)
                for d in dependencies}
    assert versions == {"cassandra-all": cassandra.CASSANDRA_VERSION}


def test_the_yaml_template_is_filled_in_completely(tmp_path):
    text = cassandra.cassandra_yaml(tmp_path, 29042, 27000)
    assert "${" not in text and "$" not in text


def test_one_node_on_loopback_on_the_given_ports(settings):
    assert (settings["listen_address"], settings["rpc_address"]) == ("127.0.0.1", "127.0.0.1")
    assert (settings["native_transport_port"], settings["storage_port"]) == (29042, 27000)
    assert settings["seed_provider"][0]["parameters"][0]["seeds"] == "127.0.0.1:27000"
    assert settings["start_native_transport"] is True
    assert settings["num_tokens"] == 1
    assert str(settings["initial_token"]) == "0"


def test_every_directory_is_under_home_data(settings, tmp_path):
    data = str(tmp_path / "data")
    paths = [*settings["data_file_directories"], settings["commitlog_directory"],
             settings["saved_caches_directory"], settings["hints_directory"], settings["cdc_raw_directory"]]
    assert all(str(path).startswith(data + "/") for path in paths)


def test_a_developer_node_without_auth_snapshots_or_big_pools(settings):
    assert settings["authenticator"] == "AllowAllAuthenticator"
    assert settings["authorizer"] == "AllowAllAuthorizer"
    assert settings["auto_snapshot"] is False  # test keyspaces are dropped by the hundred
    assert settings["concurrent_reads"] <= 8 and settings["concurrent_writes"] <= 8
    assert settings["concurrent_compactors"] == 1


def test_lightweight_transactions_run_on_paxos_v2(settings):
    assert settings["paxos_variant"] == "v2"


def test_an_acknowledged_write_survives_a_sigkill(settings):
    # periodic sync acknowledges before the commit log is synced; the replay after a kill stops at the last sync
    assert settings["commitlog_sync"] == "batch"


def test_the_jvm_runs_the_daemon_in_the_foreground_with_a_small_heap(tmp_path):
    command = cassandra.java_command(tmp_path)
    assert command[0] == "java"
    assert command[-1] == "org.apache.cassandra.service.CassandraDaemon"
    assert command[command.index("-cp") + 1] == str(tmp_path / "lib" / "*")
    assert "-Xms512m" in command and "-Xmx1g" in command
    assert "-Dcassandra-foreground=yes" in command
    assert f"-Dcassandra.config=file://{tmp_path / 'cassandra.yaml'}" in command
    assert f"-Dcassandra.storagedir={tmp_path / 'data'}" in command
    assert f"-Dcassandra.logdir={tmp_path / 'logs'}" in command
    assert f"-Dlogback.configurationFile={cassandra.LOGBACK}" in command


def test_start_up_shortcuts_for_one_node(tmp_path):
    command = cassandra.java_command(tmp_path)
    assert "-Dcassandra.skip_wait_for_gossip_to_settle=0" in command
    assert "-Dcassandra.superuser_setup_delay_ms=0" in command
    assert any(option.startswith("-Dcassandra.ring_delay_ms=") for option in command)


def test_java_17_module_access_of_the_release_is_all_there(tmp_path):
    command = cassandra.java_command(tmp_path)
    # The release's conf/jvm17-server.options: 9 exports, 14 opens.
    assert len([option for option in command if option.startswith("--add-exports=")]) == 9
    assert len([option for option in command if option.startswith("--add-opens=")]) == 14
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in command
    assert "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED" in command
    assert "-Djdk.attach.allowAttachSelf=true" in command


def test_jvm_options_drop_comments_and_blank_lines():
    options = cassandra.jvm_options()
    assert options and all(option.startswith("-") for option in options)


def test_logs_go_to_the_log_directory_property():
    text = cassandra.LOGBACK.read_text()
    assert "${cassandra.logdir}/system.log" in text


def _taken_port() -> tuple[socket.socket, int]:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken, taken.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _installed(home: Path) -> Path:
    (home / "lib").mkdir(parents=True)
    (home / "lib" / f"cassandra-all-{cassandra.CASSANDRA_VERSION}.jar").write_bytes(b"")
    return home


@pytest.mark.parametrize("which", ["cql", "storage"])
def test_a_taken_port_is_refused_before_anything_starts(tmp_path, which, monkeypatch):
    home = _installed(tmp_path)
    monkeypatch.setattr(cassandra, "spawn", lambda *args, **kwargs: pytest.fail("started despite a taken port"))
    taken, port = _taken_port()
    with taken:
        cql_port, storage_port = (port, _free_port()) if which == "cql" else (_free_port(), port)
        variable = "SERVICES_CQL_PORT" if which == "cql" else "SERVICES_CASSANDRA_STORAGE_PORT"
        with pytest.raises(ServiceError, match=rf"port {port} .* taken .* {variable}"):
            cassandra.start(home, cql_port, storage_port)
    assert not (home / "cassandra.pid").exists()


def test_a_node_running_on_another_port_is_refused_at_once(tmp_path):
    home = _installed(tmp_path)
    (home / "cassandra.yaml").write_text(cassandra.cassandra_yaml(home, 19042, 17000))
    spawn([sys.executable, "-c", "import time; time.sleep(60)"], home / "cassandra.pid", home / "out.log")
    try:
        with pytest.raises(ServiceError, match=r"already running .* another port \(19042\) than 29042"):
            cassandra.start(home, 29042, 27000)
    finally:
        assert stop_pid_file(home / "cassandra.pid")


def test_the_port_a_running_node_was_given_is_read_back(tmp_path):
    assert cassandra.configured_cql_port(tmp_path) is None
    (tmp_path / "cassandra.yaml").write_text(cassandra.cassandra_yaml(tmp_path, 19042, 17000))
    assert cassandra.configured_cql_port(tmp_path) == 19042


def test_start_without_install_says_so(tmp_path):
    with pytest.raises(ServiceError, match=r"not installed .* install"):
        cassandra.start(tmp_path, _free_port(), _free_port())


def test_install_without_java_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError, match="no `java` on PATH"):
        cassandra.install(tmp_path / "home")


def test_install_without_maven_says_so(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ServiceError, match="no `mvn` on PATH"):
        cassandra.install(tmp_path / "home")


def test_install_is_a_no_op_once_the_jars_are_there(tmp_path, monkeypatch):
    home = _installed(tmp_path / "home")
    monkeypatch.setattr(cassandra, "maven_copy_dependencies",
                        lambda *args: pytest.fail("downloaded although installed"))
    cassandra.install(home)
