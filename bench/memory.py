"""RSS and CPU time of every process of the stack, sampled over the run (Linux /proc; no dependency).

Each process the stack started is followed with all its descendants (gunicorn
workers, Celery pool children, the broker binary), each labelled by the stack
name and, for a descendant, its place among that tree's processes.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field

#: A process whose resident memory grew more than this over a window is flagged.
GROWTH_FLAG_MIB = 8.0
GROWTH_FLAG_FRACTION = 0.05


def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return 0  # a zombie has no VmRSS line


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return sorted(found)


@dataclass
class Series:
    label: str
    root: str
    pid: int
    samples: list[tuple[float, int]] = field(default_factory=list)  # (monotonic s, KiB)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (monotonic s, CPU s used so far)


class MemorySampler:
    """Samples every `interval` seconds in a thread until stopped."""

    def __init__(self, roots: callable, interval: float = 1.0) -> None:
        self._roots = roots  # () -> {name: pid}
        self.interval = interval
        self.series: dict[int, Series] = {}
        self._labels_used: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        now = time.monotonic()
        children = _children_by_parent()
        for name, root in self._roots().items():
            for pid in [root, *descendants(root, children)]:
                rss = _rss_kib(pid)
                if rss is None:
                    continue
                series = self.series.get(pid)
                if series is None:
                    if pid == root:
                        label = name
                    else:
                        number = self._labels_used.get(name, 0) + 1
                        self._labels_used[name] = number
                        label = f"{name}/{number}"
                    series = self.series[pid] = Series(label, name, pid)
                series.samples.append((now, rss))
                cpu = _cpu_seconds(pid)
                if cpu is not None:
                    series.cpu.append((now, cpu))

    def mark(self) -> float:
        """Sample now (a phase starts or ends); the time to pass to cpu_seconds."""
        with self._lock:
            self.sample()
            return self.series_time()

    def series_time(self) -> float:
        return max((s.cpu[-1][0] for s in self.series.values() if s.cpu), default=time.monotonic())

    def cpu_seconds(self, since: float, until: float, roots: set[str] | None = None) -> dict[str, float]:
        """CPU seconds used between two marks, per stack process (its descendants included)."""
        used: dict[str, float] = {}
        for series in self.series.values():
            if roots is not None and series.root not in roots:
                continue
            window = [cpu for t, cpu in series.cpu if since <= t <= until]
            before = [cpu for t, cpu in series.cpu if t < since]
            start = before[-1] if before else 0.0  # a process born in the window started from 0
            if window:
                used[series.root] = used.get(series.root, 0.0) + window[-1] - start
        return used

    def report(self, since: float | None = None, until: float | None = None) -> list[dict]:
        """start/end/max per process over [since, until] (monotonic seconds); growth flagged."""
        rows = []
        for series in sorted(self.series.values(), key=lambda s: s.label):
            window = [
                kib for t, kib in series.samples
                if (since is None or t >= since) and (until is None or t <= until)
            ]
            if not window:
                continue
            rows.append(summarize(series.label, series.pid, window))
        return rows


def summarize(label: str, pid: int, window_kib: list[int]) -> dict:
    """Growth = median of the last tenth of the samples minus median of the first tenth (at least 3 each)."""
    edge = max(3, len(window_kib) // 10)
    start = statistics.median(window_kib[:edge]) / 1024
    end = statistics.median(window_kib[-edge:]) / 1024
    growth = end - start
    flagged = len(window_kib) >= 2 * edge and growth > max(GROWTH_FLAG_MIB, GROWTH_FLAG_FRACTION * start)
    return {
        "process": label,
        "pid": pid,
        "samples": len(window_kib),
        "start_mib": round(start, 1),
        "end_mib": round(end, 1),
        "max_mib": round(max(window_kib) / 1024, 1),
        "growth_mib": round(growth, 1),
        "growing": flagged,
    }
