"""Prints where each page of a `make run` stack is, once its web server is ready.

`make run` starts this beside honcho; it waits for GET /ready (the database,
ledger, Kafka and Celery broker answer), prints the addresses and exits. If
the stack is not ready within the timeout it says so and exits too.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 180


def pages(port: int, flower_port: int, host: str = "127.0.0.1") -> list[tuple[str, str]]:
    """(name, address) of each page a person opens on a running stack."""
    web = f"http://{host}:{port}"
    return [
        ("API", f"{web}/api/v1/user/internal_transfer"),
        ("API docs", f"{web}/api/docs/"),
        ("Admin", f"{web}/admin/  (first: .venv/bin/python manage.py createsuperuser)"),
        ("Operations", f"{web}/admin/operations/overview/"),
        ("Flower", f"http://{host}:{flower_port}/"),
        ("Metrics", f"{web}/metrics"),
        ("Readiness", f"{web}/ready"),
    ]


def is_ready(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ready", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--flower-port", type=int, default=5555)
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout
    while not is_ready(args.port):
        if time.monotonic() > deadline:
            print(f"The stack did not become ready within {args.timeout:.0f} s: see var/log/*.log", flush=True)
            return 1
        time.sleep(0.5)
    width = max(len(name) for name, _ in pages(args.port, args.flower_port))
    lines = [f"  {name.ljust(width)}  {address}" for name, address in pages(args.port, args.flower_port)]
    print("\nThe stack is ready (Ctrl-C stops it):\n" + "\n".join(lines) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
