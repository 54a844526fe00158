"""`make services` / `make services-stop`: the production-like servers on loopback.

    python -m devservices start     # install once, start what is not running, write var/services.env
    python -m devservices stop      # stop what `start` started
    python -m devservices restart kafka|cassandra [--kill]   # for fault tests: SIGKILL (or stop), start again

Ports come from the environment (defaults in PORTS). Then

    set -a; . var/services.env; set +a; make run     # the production-like stack
    set -a; . var/services.env; set +a; make test    # the suite on it
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from devservices import cassandra, kafka, postgres, redis
from devservices.process import ServiceError

ROOT = Path(__file__).resolve().parents[1]
HOME = Path(os.environ.get("SERVICES_HOME", ROOT / "var" / "services"))
ENV_FILE = ROOT / "var" / "services.env"

# variable -> default port
PORTS = {
    "SERVICES_KAFKA_PORT": 9092,
    "SERVICES_KAFKA_CONTROLLER_PORT": 9093,
    "SERVICES_CQL_PORT": 9042,
    "SERVICES_CASSANDRA_STORAGE_PORT": 7000,
    "SERVICES_POSTGRES_PORT": 5432,
    "SERVICES_REDIS_PORT": 6379,
}


def port(variable: str) -> int:
    return int(os.environ.get(variable, PORTS[variable]))


def start_kafka() -> None:
    kafka.start(HOME / "kafka", port("SERVICES_KAFKA_PORT"), port("SERVICES_KAFKA_CONTROLLER_PORT"))


def start_cassandra() -> None:
    cassandra.start(HOME / "cassandra", port("SERVICES_CQL_PORT"), port("SERVICES_CASSANDRA_STORAGE_PORT"))


def start_all() -> dict[str, str]:
    if shutil.which("java") is None:
        raise ServiceError("no `java` on PATH: Kafka and Cassandra run on the JVM (OpenJDK 17: apt-get install -y "
                           "openjdk-17-jre-headless)")
    started = time.monotonic()
    for name, module in (("kafka", kafka), ("cassandra", cassandra), ("postgres", postgres), ("redis", redis)):
        print(f"services: installing {name} (first run only) ...", flush=True)
        module.install(HOME / name)
    # Cassandra takes longest to come up; Kafka's readiness wait overlaps nothing, so start it first.
    print("services: starting Kafka ...", flush=True)
    start_kafka()
    print("services: starting Cassandra ...", flush=True)
    start_cassandra()
    print("services: starting PostgreSQL and Redis ...", flush=True)
    database_url = postgres.start(HOME / "postgres", port("SERVICES_POSTGRES_PORT"))
    celery_broker_url = redis.start(HOME / "redis", port("SERVICES_REDIS_PORT"))
    settings = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port('SERVICES_KAFKA_PORT')}",
        "TRANSFER_STORE": "scylla",
        "SCYLLA_HOSTS": "127.0.0.1",
        "SCYLLA_PORT": str(port("SERVICES_CQL_PORT")),
        "SCYLLA_KEYSPACE": "internal_transfer",
        "SCYLLA_REPLICATION": "1",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": celery_broker_url,
        # Where the servers listen, so `python -m devservices restart` finds them again.
        **{variable: str(port(variable)) for variable in PORTS},
    }
    ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    ENV_FILE.write_text(
        "# Written by `make services`: the service on the production-like servers it started.\n"
        "# Use: set -a; . var/services.env; set +a; make run (or make test)\n"
        + "".join(f"{key}={value}\n" for key, value in settings.items())
    )
    print(f"services: up in {time.monotonic() - started:.0f} s; settings in {ENV_FILE.relative_to(ROOT)}:")
    for key, value in settings.items():
        print(f"  {key}={value}")
    return settings


def stop_all() -> None:
    for name, stop in (("redis", redis.stop), ("postgres", postgres.stop), ("cassandra", cassandra.stop),
                       ("kafka", kafka.stop)):
        print(f"services: stopping {name}", flush=True)
        stop(HOME / name)
    ENV_FILE.unlink(missing_ok=True)


def restart(name: str, kill: bool) -> None:
    """Stop one JVM server (SIGKILL with `kill`: no clean shutdown) and start it again, ready."""
    sig = signal.SIGKILL if kill else signal.SIGTERM
    if name == "kafka":
        kafka.stop(HOME / "kafka", sig)
        start_kafka()
    elif name == "cassandra":
        cassandra.stop(HOME / "cassandra", sig)
        start_cassandra()
    else:
        raise ServiceError(f"restart: kafka or cassandra, not {name!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devservices", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start")
    commands.add_parser("stop")
    restart_parser = commands.add_parser("restart")
    restart_parser.add_argument("name", choices=["kafka", "cassandra"])
    restart_parser.add_argument("--kill", action="store_true", help="SIGKILL instead of a clean stop")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "start":
            start_all()
        elif arguments.command == "stop":
            stop_all()
        else:
            restart(arguments.name, arguments.kill)
    except ServiceError as error:
        print(f"services: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
