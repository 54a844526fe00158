"""Redis from Debian's packages (the Celery broker): a server of our own, nothing persisted.

Used when nothing answers on the port already (then that server is used).
"""

from __future__ import annotations

import shutil
import signal
import socket
from pathlib import Path

from devservices.postgres import apt_install
from devservices.process import ServiceError, port_open, spawn, stop_pid_file, wait_until

DEBIAN_PACKAGE = "redis-server"


def install(home: Path) -> None:
    if shutil.which("redis-server") is None:
        apt_install(DEBIAN_PACKAGE)
    if shutil.which("redis-server") is None:
        raise ServiceError("Redis: no redis-server on PATH after installing the package")


def start(home: Path, port: int) -> str:
    """Start (or find) a server on `port`; the CELERY_BROKER_URL for it."""
    if not port_open(port):
        home.mkdir(parents=True, exist_ok=True)
        spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
               "--dir", str(home), "--daemonize", "no"], home / "redis.pid", home / "redis.log")
    wait_until(lambda: _pong(port), 30, f"Redis on port {port}", home / "redis.log")
    return f"redis://127.0.0.1:{port}/0"


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def stop(home: Path, sig: int = signal.SIGTERM) -> None:
    stop_pid_file(home / "redis.pid", sig)
