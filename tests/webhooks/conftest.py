"""Fixtures of the webhook tests: the API tests' user and clients, and a receiver on loopback."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.api.conftest import anonymous_client, api_client, api_key, bus, other_client, other_user_id, user_id  # noqa: F401


class Receiver:
    """A real HTTP server on loopback that records what it is sent and answers `status` (or sleeps first)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.delay_seconds = 0.0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append(({k: v for k, v in self.headers.items()}, body))
                time.sleep(receiver.delay_seconds)
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"x" * 1000)  # more than the excerpt kept

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/transfers?source=test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def allow_private(settings) -> Callable[[], None]:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_REQUIRE_HTTPS = False
    return lambda: None
