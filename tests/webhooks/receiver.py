"""A webhook receiver for tests: a real HTTP server on loopback that keeps what it is sent.

It answers `status` (or 500 for its first `fail_first` requests, or after
`delay_seconds`), and writes more than the excerpt the service keeps.
"""

from __future__ import annotations

import http.server
import json
import threading
import time


class Receiver:
    def __init__(self, status: int = 200, fail_first: int = 0, delay_seconds: float = 0.0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answered_ok: list[bytes] = []  # bodies this receiver answered 2xx
        self.status = status
        self.fail_first = fail_first
        self.delay_seconds = delay_seconds
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.received.append((dict(self.headers.items()), body))
                    failing = len(receiver.received) <= receiver.fail_first
                time.sleep(receiver.delay_seconds)
                status = 500 if failing else receiver.status
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"x" * 1000)  # more than the excerpt kept
                except (BrokenPipeError, ConnectionResetError):
                    return  # the sender gave up waiting: not an answer
                if 200 <= status < 300:
                    with receiver._lock:
                        receiver.answered_ok.append(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/transfers?source=test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def documents(self) -> list[dict]:
        with self._lock:
            return [json.loads(body) for _, body in self.received]

    def delivered_ids(self) -> set[str]:
        """Ids of the events this receiver took (answered 2xx)."""
        with self._lock:
            return {json.loads(body)["id"] for body in self.answered_ok}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
