"""Summarize a py-spy raw profile (collapsed stacks): where the samples went.

    python -m bench.profile_summary PROFILE.txt [--top 40] [--match transfers/]

Inclusive share per function (a function counts once per sample however deep
it recurses) and self share, over the samples py-spy took of busy threads.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

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


def summarize(path: str, top: int, match: str | None) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    with open(path) as file:
        for line in file:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default=None)
    args = parser.parse_args()
    print(summarize(args.profile, args.top, args.match))


if __name__ == "__main__":
    main()
