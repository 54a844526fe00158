"""The benchmark's load generator: a separate process that POSTs over loopback.

    python -m bench.loadgen SPEC.json RESULT.json

SPEC (written by bench.run):
    base_url     http://127.0.0.1:PORT (loopback only: anything else is refused)
    path         /api/v1/user/internal_transfer or /api/v1/bench/bare
    mode         "closed": `concurrency` connections, each sends its next request when the last one answered
                 "open": one request every 1/`rate` s on a fixed schedule, whatever the answers
                 (latency is counted from the scheduled time: no coordinated omission)
    concurrency  connections (closed), or the most connections open at once (open)
    recycle_after  closed: requests before a connection is closed and made anew (50)
    rate         requests per second (open)
    duration     seconds; the run also stops after `max_requests`
    keys         [[user_id, api_key], ...], used round-robin
    asset, amount, tag  the body: directions alternate funding->spot, spot->funding;
                 client_transfer_id = f"{tag}-{i}", so a request re-sent after its connection
                 dropped before any answer is an idempotent replay, never a second transfer

RESULT: counts by status, latencies (ms), throughput, and for each 202 the
transfer's request id with its scheduled and answered times (epoch ms).

asyncio and raw HTTP/1.1 keep-alive on the standard library: a few tens of
microseconds of client CPU per request, so the client takes little of the
machine it shares with the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_CONNECTIONS = 512
# Closed loop: a connection is closed after about this many requests and the next one
# connects anew. A kept-alive connection stays with the server process that accepted
# it, and 16 connections opened at once can land mostly on one of gunicorn's two
# workers: a slice then ran at about half speed (bare 490 or 930/s, at random).
# Reconnecting spreads the load over the workers as a load balancer's pool would.
RECYCLE_AFTER_REQUESTS = 50
RESPONSE_TIMEOUT_SECONDS = 30
GRACE_SECONDS = 30


class ConnectionDropped(Exception):
    """The server closed the connection before answering (keep-alive race)."""


class HttpConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send one request; (status, headers, body). Reconnects once if the kept-alive socket was closed."""
        for attempt in (1, 2):
            if self.writer is None:
                await self._connect()
            try:
                self.writer.write(raw)
                await self.writer.drain()
                return await asyncio.wait_for(self._read_response(), RESPONSE_TIMEOUT_SECONDS)
            except (ConnectionDropped, ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _read_response(self) -> tuple[int, dict[str, str], bytes]:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            if not error.partial:
                raise ConnectionDropped() from None
            raise
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


@dataclass
class Results:
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    accepted: list[list] = field(default_factory=list)  # [request_id, scheduled_ms, answered_ms]
    errors: dict[str, int] = field(default_factory=dict)
    late_sends: int = 0  # open loop: sent more than 10 ms after its scheduled time
    max_connections: int = 0


class LoadGenerator:
    def __init__(self, spec: dict) -> None:
        url = urlsplit(spec["base_url"])
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"refusing to send load anywhere but loopback: {url.hostname}")
        self.host = url.hostname
        self.port = url.port
        self.spec = spec
        self.keys = spec["keys"]
        self.results = Results()
        self.sent = 0
        self.idle: list[HttpConnection] = []
        self.open_connections = 0
        self.slots = asyncio.Semaphore(min(int(spec.get("concurrency", 64)), MAX_CONNECTIONS))

    def _raw_request(self, index: int) -> bytes:
        spec = self.spec
        _, api_key = self.keys[index % len(self.keys)]
        if spec["path"].endswith("/bare"):
            body = {"n": index}
        else:
            source, destination = ("funding", "spot") if index % 2 == 0 else ("spot", "funding")
            body = {
                "from_account": {"account_type": source, "asset": spec["asset"]},
                "to_account": {"account_type": destination, "asset": spec["asset"]},
                "amount": spec["amount"],
                "client_transfer_id": f"{spec['tag']}-{index}",
            }
        payload = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {spec['path']} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nX-API-Key: {api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    async def _one(self, index: int, scheduled: float, connection: HttpConnection) -> None:
        results = self.results
        raw = self._raw_request(index)
        try:
            status, _, body = await connection.request(raw)
        except Exception as error:  # counted, never fatal: the run must end on time
            connection.close()
            name = type(error).__name__
            results.errors[name] = results.errors.get(name, 0) + 1
            return
        answered = time.time()
        results.latencies_ms.append((answered - scheduled) * 1000)
        results.statuses[str(status)] = results.statuses.get(str(status), 0) + 1
        if status == 202 and not self.spec["path"].endswith("/bare"):
            request_id = json.loads(body)["request_id"]
            results.accepted.append([request_id, round(scheduled * 1000, 3), round(answered * 1000, 3)])

    async def closed_loop(self) -> None:
        deadline = time.monotonic() + self.spec["duration"]
        limit = self.spec.get("max_requests") or 1 << 62

        recycle_after = int(self.spec.get("recycle_after", RECYCLE_AFTER_REQUESTS))

        async def worker() -> None:
            connection = HttpConnection(self.host, self.port)
            sent_here = 0
            try:
                while time.monotonic() < deadline and self.sent < limit:
                    index = self.sent
                    self.sent += 1
                    await self._one(index, time.time(), connection)
                    sent_here += 1
                    if sent_here % recycle_after == 0:
                        connection.close()  # the next request connects anew
            finally:
                connection.close()

        concurrency = min(int(self.spec["concurrency"]), MAX_CONNECTIONS)
        self.results.max_connections = concurrency
        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def open_loop(self) -> None:
        rate = float(self.spec["rate"])
        total = int(rate * self.spec["duration"])
        if self.spec.get("max_requests"):
            total = min(total, int(self.spec["max_requests"]))
        start_wall = time.time() + 0.05
        start = time.monotonic() + 0.05
        tasks = set()
        for index in range(total):
            due = start + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._paced(index, start_wall + index / rate, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        self.sent = total
        if tasks:
            # Bounded: what has not answered GRACE_SECONDS after the last send is counted unanswered.
            _, late = await asyncio.wait(tasks, timeout=GRACE_SECONDS)
            for task in late:
                task.cancel()
            self.results.errors["unanswered"] = len(late)
            await asyncio.gather(*late, return_exceptions=True)

    async def _paced(self, index: int, scheduled_wall: float, due: float) -> None:
        async with self.slots:
            if time.monotonic() - due > 0.010:
                self.results.late_sends += 1
            if self.idle:
                connection = self.idle.pop()
            else:
                connection = HttpConnection(self.host, self.port)
                self.open_connections += 1
                self.results.max_connections = max(self.results.max_connections, self.open_connections)
            await self._one(index, scheduled_wall, connection)
            self.idle.append(connection)

    async def run(self) -> dict:
        started = time.time()
        if self.spec["mode"] == "closed":
            await self.closed_loop()
        else:
            await self.open_loop()
        elapsed = time.time() - started
        for connection in self.idle:
            connection.close()
        results = self.results
        completed = len(results.latencies_ms)
        return {
            "mode": self.spec["mode"],
            "path": self.spec["path"],
            "started_ms": round(started * 1000, 3),
            "elapsed_s": elapsed,
            "sent": self.sent,
            "completed": completed,
            "throughput_rps": completed / elapsed if elapsed else 0.0,
            "statuses": results.statuses,
            "errors": results.errors,
            "latencies_ms": results.latencies_ms,
            "accepted": results.accepted,
            "late_sends": results.late_sends,
            "connections": results.max_connections,
        }


def main(argv: list[str]) -> None:
    spec_path, result_path = argv[1], argv[2]
    with open(spec_path) as file:
        spec = json.load(file)
    result = asyncio.run(LoadGenerator(spec).run())
    with open(result_path, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main(sys.argv)
