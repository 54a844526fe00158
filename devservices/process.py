"""What every server here needs: a free-port check, a detached start with a
pid file, a readiness wait, and stop/kill by pid file."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ServiceError(RuntimeError):
    """A server could not be installed or started; the message says why and what to do."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def require_free_port(port: int, what: str, variable: str) -> None:
    if port_open(port):
        raise ServiceError(f"{what}: port {port} on 127.0.0.1 is taken by another process; stop it or set {variable}")


def wait_until(predicate: Callable[[], object], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    tail = ""
    if log and log.exists():
        tail = "\nlast lines of " + str(log) + ":\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def spawn(command: list[str], pid_file: Path, log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start `command` in a session of its own (it outlives this process); its pid goes to `pid_file`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=cwd,
        )
    pid_file.write_text(str(process.pid))
    return process.pid


def running_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is still alive."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    # A zombie of ours counts as gone.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return None
    return pid


def stop_pid_file(pid_file: Path, sig: int = signal.SIGTERM, timeout: float = 30) -> bool:
    """Signal the process group in `pid_file` and wait for it to end (SIGKILL after `timeout`)."""
    pid = running_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + timeout
    while running_pid(pid_file) is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return True
