"""The benchmark's own parts (bench/): statistics, memory flags, the load generator, the report."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from bench import loadgen, profile_summary
from bench.memory import MemorySampler, summarize
from bench.run import (
    busy_percent,
    cpu_bound_rate,
    latency_summary,
    percentile,
    slowest,
    soak_windows,
    stack_kind,
    table,
    verdicts,
)


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None
    assert latency_summary([])["p99_ms"] is None


def test_flat_memory_is_not_flagged_and_growth_is():
    flat = summarize("web", 1, [100 * 1024] * 30 + [101 * 1024] * 30)
    growing = summarize("web", 1, [100 * 1024 + i * 1024 for i in range(60)])
    assert not flat["growing"]
    assert growing["growing"] and growing["growth_mib"] > 40


_BUSY_THEN_IDLE = "import time\nsum(i * i for i in range(3_000_000))\nprint('done', flush=True)\ntime.sleep(30)"


def test_the_sampler_follows_a_process_and_its_cpu():
    # A child of its own, not the test runner: the runner may have children
    # left by other tests, which the sampler would rightly follow too.
    busy = subprocess.Popen(
        [sys.executable, "-c", _BUSY_THEN_IDLE],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        sampler = MemorySampler(lambda: {"busy": busy.pid}, interval=60)
        since = sampler.mark()
        assert busy.stdout.readline().strip() == "done"
        until = sampler.mark()
        (row,) = sampler.report()
        assert row["process"] == "busy" and row["pid"] == busy.pid and row["max_mib"] > 0
        assert sampler.cpu_seconds(since, until)["busy"] > 0.01
    finally:
        busy.kill()
        busy.wait()


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict] = []
    client_ports: list[int] = []  # the client's port of each request: one per connection

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Answer.seen.append(body)
        _Answer.client_ports.append(self.client_address[1])
        payload = json.dumps({"request_id": str(len(_Answer.seen))}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Answer.seen = []
    _Answer.client_ports = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def spec(base_url: str, **extra) -> dict:
    return {"base_url": base_url, "path": "/api/v1/user/internal_transfer", "keys": [[1, "itk_a_b"], [2, "itk_c_d"]],
            "asset": "USDT", "amount": "0.01", "tag": "t", **extra}


def test_closed_loop_sends_both_directions_with_client_ids(server):
    result = asyncio.run(loadgen.LoadGenerator(spec(server, mode="closed", concurrency=2, duration=5,
                                                    max_requests=10)).run())
    assert result["completed"] == 10 and result["statuses"] == {"202": 10}
    assert len(result["accepted"]) == 10
    sources = {body["from_account"]["account_type"] for body in _Answer.seen}
    assert sources == {"funding", "spot"}
    assert sorted(body["client_transfer_id"] for body in _Answer.seen) == sorted(f"t-{i}" for i in range(10))


def test_closed_loop_makes_its_connections_anew_every_recycle_after_requests(server):
    result = asyncio.run(loadgen.LoadGenerator(spec(server, mode="closed", concurrency=1, duration=5,
                                                    max_requests=12, recycle_after=5)).run())
    assert result["completed"] == 12
    # One connection at a time: requests 1-5, 6-10 and 11-12 each came over a connection of their own.
    runs = [len(list(group)) for _, group in itertools.groupby(_Answer.client_ports)]
    assert runs == [5, 5, 2]


def test_open_loop_keeps_its_schedule(server):
    result = asyncio.run(loadgen.LoadGenerator(spec(server, mode="open", rate=50, duration=0.4,
                                                    concurrency=8)).run())
    assert result["sent"] == 20 and result["completed"] == 20
    scheduled = sorted(row[1] for row in result["accepted"])
    gaps = [b - a for a, b in itertools.pairwise(scheduled)]
    assert all(abs(gap - 20) < 1 for gap in gaps)  # one every 1/50 s, whatever the answers


def test_load_goes_to_loopback_only():
    with pytest.raises(SystemExit):
        loadgen.LoadGenerator(spec("http://10.0.0.1:8000", mode="closed", concurrency=1, duration=1))


def test_the_report_prints_every_stage_and_the_verdicts():
    latency = {"p50_ms": 10.0, "p99_ms": 20.0}
    result = {
        "timestamp": "2026-01-01T00:00:00+00:00", "load_average_at_start": [1, 1, 1], "load_average_at_end": [1, 1, 1],
        "machine": {"cpu_count": 2, "cpu_model": "x", "python": "3.11"},
        "settings": {"database": "sqlite", "ledger_backend": "sql"},
        "accept": {"concurrency": 16, "ratio": 0.6, "cpu_ratio": 0.55,
                   "bare": {"throughput_rps": 500.0, "latency": latency, "accept_cpu_ms_per_request": 2.0},
                   "transfer": {"throughput_rps": 300.0, "latency": latency, "accept_cpu_ms_per_request": 3.6}},
        "raw_ledger": {"backend": "SqlFundingLedger", "best_transfers_per_s": 1000.0,
                       "sizes": [{"batch_size": 100, "transfers_per_s": 1000.0}]},
        "settlement": {"backlog": 1000, "transfers_per_s": 400.0, "ratio": 0.4, "drain_seconds": 2.5,
                       "not_finished": 0, "cpu_ms_per_transfer": {"worker": 1.5}},
        "end_to_end": {"rate": 100, "seconds": 30, "end_to_end_latency": {"p50_ms": 100.0, "p99_ms": 400.0},
                       "post_latency": latency, "sent": 3000, "lost": 0, "stuck": 0, "statuses": {"success": 3000}},
        "memory": [summarize("web", 1, [100 * 1024] * 10)],
    }
    assert verdicts(result) == {"accept": True, "settlement": True, "end_to_end": True, "memory_flat": False}
    text = table(result)
    for words in ("accept", "raw ledger", "settlement", "end to end", "memory", "60%", "400/s"):
        assert words in text


def write_profile(path, stacks: dict[str, int]) -> str:
    path.write_text("".join(f"process 1:python;thread (0x1);{stack} {count}\n" for stack, count in stacks.items()))
    return str(path)


def test_profiles_are_compared_per_request_not_by_share(tmp_path):
    dispatch = "dispatch (rest_framework/views.py:10)"
    auth = "authenticate (/work/main/transfers/api/authentication.py:48)"
    transfer = write_profile(tmp_path / "transfer.txt", {
        f"{dispatch};{auth}": 100,
        f"{dispatch};post (/work/main/transfers/api/views.py:53);publish_many (/work/main/transfer_site/bus.py:93)": 60,
        f"{dispatch};post (/work/main/transfers/api/views.py:53)": 40,
    })
    bare = write_profile(tmp_path / "bare.txt", {f"{dispatch};{auth}": 180, f"{dispatch}": 20})

    costs, total = profile_summary.per_request([transfer], requests=100)
    assert total == 2.0
    assert costs["publish_many (transfer_site/bus.py)"] == 0.6
    assert costs["dispatch (rest_framework/views.py)"] == 2.0  # inclusive: counted once per sample

    # The same 200 samples each, but the bare endpoint answered twice the requests.
    text = profile_summary.compare([transfer], 100, [bare], 200).splitlines()
    assert text[0] == "samples per request: 2.000 against 1.000 (ratio 50%)"
    rows = [line.split() for line in text[2:]]
    assert rows[0][-2:] == ["dispatch", "(rest_framework/views.py)"] and rows[0][2] == "+1.000"
    assert rows[1][-2:] == ["post", "(transfers/api/views.py)"] and rows[1][2] == "+1.000"
    assert rows[2][-2:] == ["publish_many", "(transfer_site/bus.py)"] and rows[2][2] == "+0.600"
    assert rows[-1][-2:] == ["authenticate", "(transfers/api/authentication.py)"]
    assert rows[-1][:3] == ["1.000", "0.900", "+0.100"]


_FAKE_STACK = """
import sys, time
from pathlib import Path
import bench.run

MARKS = Path(sys.argv[1])

class FakeStack:
    def __init__(self, var_dir, extra_env=None, copies=1):
        self.processes = {}
        self.names = []
    def start(self):
        (MARKS / "started").touch()
        {start}
    def stop(self, sig=None):
        (MARKS / "stopped").touch()

bench.run.Stack = FakeStack
sys.exit(bench.run.main(["--out", str(MARKS), "--var-dir", str(MARKS)]))
"""


def _run_fake_bench(tmp_path, start_body: str) -> subprocess.Popen:
    script = _FAKE_STACK.replace("{start}", start_body)
    return subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stderr=subprocess.PIPE)


def test_a_stack_that_does_not_come_up_is_stopped(tmp_path):
    process = _run_fake_bench(tmp_path, "raise TimeoutError('the web server did not come up')")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and b"did not come up" in stderr
    assert (tmp_path / "stopped").exists()


def test_sigterm_stops_the_stack(tmp_path):
    process = _run_fake_bench(tmp_path, "time.sleep(60)")
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline, "the benchmark never reached the stack's start"
        time.sleep(0.05)
    process.terminate()
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert (tmp_path / "stopped").exists()


class StoreWithRequesting:
    """A store whose `requesting` transfers are published after `polls` looks (never, if None)."""

    def __init__(self, polls: int | None) -> None:
        self.polls = polls
        self.looked = 0

    def list_not_moved_since(self, statuses, updated_before_ms, limit):
        self.looked += 1
        return [] if self.polls is not None and self.looked > self.polls else ["a requesting transfer"]


def test_a_transfer_slice_lasts_until_the_relay_has_published_it():
    from bench.run import Bench

    bench = Bench.__new__(Bench)  # only the store is needed
    bench.store = StoreWithRequesting(polls=3)
    run = {"completed": 100, "elapsed_s": 1.0, "throughput_rps": 100.0}
    bench._count_relay_drain(run)
    assert bench.store.looked == 4
    assert run["relay_drain_s"] >= 0.03  # three waits of 10 ms
    assert run["throughput_rps"] == pytest.approx(100 / (1.0 + run["relay_drain_s"]))


def test_a_relay_that_never_drains_fails_the_run(monkeypatch):
    from bench import run as bench_run

    monkeypatch.setattr(bench_run, "RELAY_DRAIN_TIMEOUT_SECONDS", 0.05)
    bench = bench_run.Bench.__new__(bench_run.Bench)
    bench.store = StoreWithRequesting(polls=None)
    with pytest.raises(RuntimeError, match="relay left transfers requesting"):
        bench._count_relay_drain({"completed": 1, "elapsed_s": 1.0, "throughput_rps": 1.0})


EMBEDDED = {"database": "sqlite", "ledger_backend": "sql", "transfer_store": "orm",
            "message_bus": "kafka (Tansu, in memory)", "celery_broker": "filesystem://"}
PRODUCTION_LIKE = {"database": "postgresql", "ledger_backend": "sql", "transfer_store": "orm",
                   "message_bus": "kafka (127.0.0.1:9092)", "celery_broker": "redis://127.0.0.1:6379/0"}


def test_each_stack_is_judged_by_its_own_latency_targets():
    assert stack_kind(EMBEDDED) == "embedded"
    assert stack_kind(PRODUCTION_LIKE) == "production-like"
    assert stack_kind({**PRODUCTION_LIKE, "transfer_store": "scylla"}) == "other"
    assert stack_kind({**EMBEDDED, "celery_broker": "redis://x"}) == "other"

    def run(p50: float, p99: float) -> dict:
        return {"end_to_end_latency": {"p50_ms": p50, "p99_ms": p99}, "lost": 0, "stuck": 0}

    # 80 / 250 ms meets the embedded targets (100 / 300) and misses the production-like ones (40 / 150).
    assert verdicts({"settings": EMBEDDED, "end_to_end": run(80, 250)})["end_to_end"]
    assert not verdicts({"settings": PRODUCTION_LIKE, "end_to_end": run(80, 250)})["end_to_end"]
    assert verdicts({"settings": PRODUCTION_LIKE, "end_to_end": run(30, 140)})["end_to_end"]
    # A transfer lost or stuck misses whatever the latency.
    assert not verdicts({"settings": EMBEDDED, "end_to_end": {**run(10, 20), "stuck": 1}})["end_to_end"]


def test_the_burst_idle_and_soak_figures_get_verdicts_when_measured():
    burst = {"end_to_end_latency": {"p50_ms": 500.0, "p99_ms": 1500.0}, "lost": 0, "stuck": 0}
    idle = {"total_cpu_percent_of_one_core": 3.0}
    soak = {"windows": {"first_p99_ms": 200.0, "last_p99_ms": 400.0, "last_to_first": 2.0}}
    judged = verdicts({"settings": EMBEDDED, "burst": burst, "idle": idle, "soak": soak})
    assert judged["burst"] is True  # embedded: p99 <= 2 s
    assert judged["idle"] is True
    assert judged["soak_no_drift"] is False
    assert verdicts({"settings": PRODUCTION_LIKE, "burst": burst})["burst"] is False  # p99 <= 1 s
    assert verdicts({"settings": EMBEDDED, "idle": {"total_cpu_percent_of_one_core": 12.0}})["idle"] is False
    assert "burst" not in verdicts({"settings": EMBEDDED})


def test_a_soak_compares_its_last_five_minutes_with_its_first():
    minutes = {minute: [100.0 + 10 * minute] * 100 for minute in range(30)}  # slower every minute
    windows = soak_windows(minutes, 30)
    assert windows == {"minutes": 5, "first_p99_ms": 140.0, "last_p99_ms": 390.0, "last_to_first": 2.79}
    assert soak_windows(minutes, 9) is None  # too short for two windows


def test_the_report_says_when_a_rate_is_beyond_what_the_cores_can_carry():
    assert cpu_bound_rate(2, 13.9) == 143.9  # 2 cores, 13.9 ms of CPU a transfer
    assert cpu_bound_rate(2, 0) is None  # nothing measured
    result = {
        "timestamp": "t", "load_average_at_start": [1, 1, 1], "load_average_at_end": [1, 1, 1],
        "machine": {"cpu_count": 2, "cpu_model": "x", "python": "3.11"}, "settings": EMBEDDED,
    }
    run = {"seconds": 60, "end_to_end_latency": {"p50_ms": 1.0, "p99_ms": 2.0}, "post_latency": {"p50_ms": 1.0,
           "p99_ms": 2.0}, "sent": 1, "lost": 0, "stuck": 0, "statuses": {}, "cpu_ms_per_transfer": {"web": 10.0},
           "cpu_ms_per_transfer_total": 10.0}
    lines = table({**result, "end_to_end": {**run, "rate": 100, "machine_cpu_busy_percent": 60.0},
                   "burst": {**run, "rate": 1000, "machine_cpu_busy_percent": 97.5}}).splitlines()
    ceilings = [line for line in lines if "CPU-bound ceiling" in line]
    assert len(ceilings) == 2
    assert "200/s" in ceilings[0] and "over capacity" not in ceilings[0]
    assert "200/s" in ceilings[1] and "over capacity" in ceilings[1]
    busy = [line for line in lines if "machine CPU busy" in line]
    assert "60% of 2 cores" in busy[0] and "saturated" not in busy[0]
    assert "98% of 2 cores" in busy[1] and busy[1].endswith("saturated")


def test_machine_busy_is_the_share_of_all_cores_not_idle():
    assert busy_percent((100, 1000), (250, 1200)) == 75.0  # 150 busy of 200 jiffies
    assert busy_percent((100, 1000), (100, 1000)) is None  # no time passed


def test_the_tail_is_the_slowest_hundredth_of_the_finished_transfers():
    finished, pending = SimpleNamespace(is_terminal=True), SimpleNamespace(is_terminal=False)
    accepted = {request_id: (request_id, 1_000) for request_id in range(2_000)}
    records = {request_id: SimpleNamespace(updated_at_ms=1_000 + request_id % 500, status=finished)
               for request_id in range(2_000)}
    records[7] = SimpleNamespace(updated_at_ms=99_999, status=pending)  # not finished: no latency yet
    tail = slowest(accepted, records)
    assert len(tail) == 19  # 1% of the 1,999 finished, rounded down
    assert 7 not in tail
    assert {records[request_id].updated_at_ms for request_id in tail} == {1_499, 1_498, 1_497, 1_496, 1_495}
    assert len(slowest(dict(list(accepted.items())[:50]), dict(list(records.items())[:50]))) == 10  # at least 10
