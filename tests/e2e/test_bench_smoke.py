"""`make bench` in miniature: the benchmark starts its own stack, runs every phase for a few seconds, reports.

Checks that the benchmark works, not the figures (CI machines vary); `make bench` measures.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.stack import ROOT

pytestmark = pytest.mark.e2e


def test_the_benchmark_runs_every_phase_and_writes_its_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path), "--var-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (report,) = tmp_path.glob("smoke-*.json")
    figures = json.loads(report.read_text())
    assert figures["machine"]["cpu_count"] >= 1
    assert figures["accept"]["bare"]["throughput_rps"] > 0 and figures["accept"]["transfer"]["throughput_rps"] > 0
    assert figures["raw_ledger"]["best_transfers_per_s"] > 0
    assert figures["settlement"]["not_finished"] == 0 and figures["settlement"]["transfers_per_s"] > 0
    end_to_end = figures["end_to_end"]
    assert end_to_end["sent"] > 0 and end_to_end["lost"] == 0 and end_to_end["stuck"] == 0
    assert end_to_end["end_to_end_latency"]["p99_ms"] is not None
    assert figures["reconcile"]["clean"], figures["reconcile"]["output"]
    # The idle stack's CPU and the burst are measured, and judged against the stack's own targets.
    assert figures["idle"]["total_cpu_percent_of_one_core"] >= 0 and "web" in figures["idle"]["cpu_percent_of_one_core"]
    assert figures["burst"]["sent"] > 0 and figures["burst"]["stuck"] == 0
    assert {"idle", "burst", "end_to_end"} <= set(figures["verdicts"])
    # The development broker is one of the stack's processes; a real Kafka broker (KAFKA_BOOTSTRAP_SERVERS) is not.
    own_broker = {"broker"} if figures["settings"]["message_bus"].startswith("kafka (Tansu") else set()
    assert {row["process"] for row in figures["memory"]} >= {"web", "worker", "bridge", "ubscore", *own_broker}
    for words in ("accept", "settlement", "end to end", "memory"):
        assert words in result.stdout
