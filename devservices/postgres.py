"""PostgreSQL from Debian's packages: a private cluster under var/services/postgres.

Used when nothing answers on the port already (then that server is used, as
the `postgres` user without a password). The cluster trusts loopback
connections: it is a development and CI server, never a deployment.
"""

from __future__ import annotations

import getpass
import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from devservices.process import ServiceError, port_open, wait_until

DEBIAN_PACKAGE = "postgresql"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def install(home: Path) -> None:
    if _bin_dir() is None:
        apt_install(DEBIAN_PACKAGE)
    if _bin_dir() is None:
        raise ServiceError("PostgreSQL: no /usr/lib/postgresql/*/bin/initdb after installing the package")


def apt_install(package: str) -> None:
    """Install a Debian package (needs root: CI and these machines run as root)."""
    if os.geteuid() != 0:
        raise ServiceError(f"{package} is not installed and this is not root: sudo apt-get install -y {package}")
    if shutil.which("apt-get") is None:
        raise ServiceError(f"{package} is not installed and there is no apt-get to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def _run_as(user: str | None, command: list[str]) -> subprocess.CompletedProcess:
    """PostgreSQL's server refuses to run as root: as root, run it as `user`."""
    if user:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def start(home: Path, port: int) -> str:
    """Start (or find) a server on `port`; the DATABASE_URL of the service's database on it."""
    url = f"postgres://postgres@127.0.0.1:{port}/transfer_service"
    if not port_open(port):
        bin_dir = _bin_dir()
        assert bin_dir is not None
        owner = None
        if os.geteuid() == 0:
            owner = "postgres"
            pwd.getpwnam(owner)  # the Debian package made this user
        data = home / "data"
        home.mkdir(parents=True, exist_ok=True)
        if owner:
            shutil.chown(home, owner)
        if not (data / "PG_VERSION").exists():
            result = _run_as(owner, [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                     "--encoding=UTF8", "--locale=C"])
            if result.returncode != 0:
                raise ServiceError(f"PostgreSQL initdb failed:\n{result.stdout}{result.stderr}")
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={home} -c fsync=off"
        result = _run_as(owner, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(home / "postgres.log"),
                                 "-o", options, "-w", "-t", "60", "start"])
        if result.returncode != 0:
            raise ServiceError(f"PostgreSQL did not start:\n{result.stdout}{result.stderr}")
    wait_until(lambda: _connects(port), 60, f"PostgreSQL on port {port}", home / "postgres.log")
    _create_database(port, "transfer_service")
    return url


def _connects(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(f"postgres://postgres@127.0.0.1:{port}/postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _create_database(port: int, name: str) -> None:
    import psycopg

    with psycopg.connect(f"postgres://postgres@127.0.0.1:{port}/postgres", autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def stop(home: Path) -> None:
    """Stop the private cluster, if it is the one running (a server found running is left alone)."""
    bin_dir = _bin_dir()
    data = home / "data"
    if bin_dir is None or not (data / "postmaster.pid").exists():
        return
    owner = "postgres" if os.geteuid() == 0 else getpass.getuser()
    _run_as(owner if os.geteuid() == 0 else None, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"])
