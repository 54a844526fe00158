"""Summarize a py-spy raw profile (collapsed stacks): where the samples went.

    python -m bench.profile_summary PROFILE.txt [--top 40] [--match transfers/]

Inclusive share per function (a function counts once per sample however deep
it recurses) and self share, over the samples py-spy took of busy threads.
`compare` (written by `python -m bench --profile` as
accept-web-per-request.txt) sets the transfer endpoint's web profile against
the bare endpoint's, per request.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterator, Sequence

_LOCATION = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = _LOCATION.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['name']} ({path})"


def _stacks(path: str) -> Iterator[tuple[list[str], int]]:
    """(frames, samples) of each distinct stack in a raw profile, thread and process frames left out."""
    with open(path) as file:
        for line in file:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            if frames:
                yield frames, int(count_text)


def summarize(path: str, top: int, match: str | None) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for frames, count in _stacks(path):
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{path}: {total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- {title} --")
        shown = 0
        for frame, count in counter.most_common():
            if match and match not in frame:
                continue
            lines.append(f"{100 * count / total:5.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


def per_request(paths: Sequence[str], requests: int) -> tuple[dict[str, float], float]:
    """Inclusive samples per request of each function over these profiles, and all samples per request."""
    inclusive: Counter[str] = Counter()
    total = 0
    for path in paths:
        for frames, count in _stacks(path):
            total += count
            for frame in set(frames):
                inclusive[frame] += count
    return {frame: count / requests for frame, count in inclusive.items()}, total / requests


def compare(
    paths: Sequence[str], requests: int, base_paths: Sequence[str], base_requests: int, top: int = 60
) -> str:
    """What a request of one endpoint costs more than one of another (the benchmark: transfer vs bare).

    Samples per request, not shares: both endpoints are profiled for the same
    time while the web server is busy, so a share would hide that one of them
    answers half as many requests. Sorted by the difference, largest first.
    """
    costs, total = per_request(paths, requests)
    base_costs, base_total = per_request(base_paths, base_requests)
    lines = [
        f"samples per request: {total:.3f} against {base_total:.3f} (ratio {base_total / total:.0%})"
        if total else "no samples",
        f"{'this':>7} {'base':>7} {'more':>7}  function (inclusive)",
    ]
    frames = sorted(set(costs) | set(base_costs), key=lambda f: (base_costs.get(f, 0.0) - costs.get(f, 0.0), f))
    for frame in frames[:top]:
        cost, base_cost = costs.get(frame, 0.0), base_costs.get(frame, 0.0)
        lines.append(f"{cost:7.3f} {base_cost:7.3f} {cost - base_cost:+7.3f}  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default=None)
    args = parser.parse_args()
    print(summarize(args.profile, args.top, args.match))


if __name__ == "__main__":
    main()
