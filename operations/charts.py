"""Charts drawn on the server as inline SVG: no JavaScript and no charting library to serve."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 28, 12, 28  # room for the axes' labels
COLOURS = {"accepted": "#417690", "success": "#2e7d32", "failed": "#c62828"}
X_LABEL_EVERY = 15  # minutes


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n that is >= value (a readable top of the y axis)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def per_minute_chart(minutes: Sequence[int], series: Mapping[str, Sequence[int]], title: str) -> str:
    """An SVG line chart of counts per minute; `minutes` are minute starts in ms, one per point."""
    top = _nice_ceiling(max([1, *(max(values, default=0) for values in series.values())]))
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_width / max(1, len(minutes) - 1)

    def x(index: int) -> float:
        return LEFT + index * step

    def y(count: int) -> float:
        return TOP + plot_height * (1 - count / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="{escape(title)}" class="per-minute-chart">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{LEFT}" y1="{TOP + plot_height}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_height}" stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_height}" stroke="#888"/>',
    ]
    for count in (0, top // 2, top):
        parts.append(f'<text x="{LEFT - 6}" y="{y(count) + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="currentColor">{count}</text>')
    for index, minute in enumerate(minutes):
        if index % X_LABEL_EVERY == 0 or index == len(minutes) - 1:
            label = time.strftime("%H:%M", time.gmtime(minute / 1000))
            parts.append(f'<text x="{x(index):.1f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="11" '
                         f'fill="currentColor">{label}</text>')
    for name, values in series.items():
        points = " ".join(f"{x(i):.1f},{y(count):.1f}" for i, count in enumerate(values))
        colour = COLOURS.get(name, "#555")
        parts.append(f'<polyline class="series series-{escape(name)}" data-total="{sum(values)}" fill="none" '
                     f'stroke="{colour}" stroke-width="2" points="{points}"/>')
    parts.append("</svg>")
    return "".join(parts)
