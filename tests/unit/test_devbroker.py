"""The development broker's launcher (transfer_site/devbroker.py)."""

from __future__ import annotations

import socket
import subprocess
import sys

from transfer_site.devbroker import port_taken


def test_a_taken_port_is_refused_with_a_reason_not_a_silent_exit():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_taken(port)
        result = subprocess.run(
            [sys.executable, "-m", "transfer_site.devbroker", "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "DEV_BROKER_PORT=<port> make run" in result.stderr


def test_a_free_port_is_not_taken():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert not port_taken(port)
