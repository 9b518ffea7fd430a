"""Small inline SVG charts for the HTML report: lines over time, bars, grouped bars.

No library, no script: each function returns one `<svg>` element as text, with its
numbers also in `<title>` tooltips, so the report is a single self-contained file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#3b6fd8", "#e8833a", "#3aa17e", "#c94f6d", "#8a63d2", "#b59b2c", "#5b9bb8")
WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40


def nice_max(value: float) -> float:
    """A round number at or above `value` for an axis' top."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _frame(body: list[str], title: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _y_axis(top: float, height: int = HEIGHT) -> list[str]:
    parts = []
    for i in range(5):
        value = top * i / 4
        y = height - BOTTOM - (height - TOP - BOTTOM) * i / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(value)}</text>'
        )
    return parts


def empty(title: str, message: str = "no data") -> str:
    return _frame(
        [f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">{escape(message)}</text>'],
        title,
        height=80,
    )


def line_chart(
    title: str,
    xs: Sequence[float],
    series: dict[str, Sequence[float]],
    x_label: str = "seconds",
) -> str:
    """One line per entry of `series` over the shared `xs`."""
    if len(xs) < 2 or not series:
        return empty(title, "not enough samples")
    x0, x1 = min(xs), max(xs)
    span = (x1 - x0) or 1.0
    top = nice_max(max((max(v) for v in series.values() if v), default=0.0))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    body = _y_axis(top)
    for i in range(5):
        x = LEFT + inner_w * i / 4
        body.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{fmt(x0 + span * i / 4)}</text>"
        )
    body.append(
        f'<text x="{LEFT + inner_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    for n, (name, ys) in enumerate(series.items()):
        color = PALETTE[n % len(PALETTE)]
        points = " ".join(
            f"{LEFT + inner_w * (x - x0) / span:.1f},{TOP + inner_h * (1 - y / top):.1f}"
            for x, y in zip(xs, ys, strict=False)
        )
        body.append(
            f'<polyline class="line" fill="none" stroke="{color}" stroke-width="2" '
            f'points="{points}"><title>{escape(name)}</title></polyline>'
        )
        body.append(
            f'<rect x="{LEFT + 8 + 150 * n}" y="{TOP}" width="10" height="10" fill="{color}"/>'
            f'<text x="{LEFT + 22 + 150 * n}" y="{TOP + 9}">{escape(name)}</text>'
        )
    return _frame(body, title)


def bar_chart(title: str, bars: Sequence[tuple[str, float]], unit: str = "") -> str:
    """Horizontal bars, one per (label, value), in the given order."""
    if not bars:
        return empty(title)
    row = 22
    height = TOP + BOTTOM // 2 + row * len(bars)
    label_w = 230
    inner_w = WIDTH - label_w - RIGHT - 70
    top = nice_max(max(v for _, v in bars))
    body = []
    for i, (label, value) in enumerate(bars):
        y = TOP + row * i
        w = max(inner_w * value / top if top else 0, 1)
        color = PALETTE[i % len(PALETTE)]
        shown = f"{fmt(value)}{escape(unit)}"
        body.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(label[:36])}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}"'
            f' fill="{color}"><title>{escape(label)}: {shown}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{shown}</text>'
        )
    return _frame(body, title, height=height)


def grouped_bars(
    title: str, groups: Sequence[tuple[str, Sequence[float]]], names: Sequence[str], unit: str = ""
) -> str:
    """Vertical bars: per group (e.g. a host) one bar per name (e.g. p50, p95, p99)."""
    if not groups:
        return empty(title)
    top = nice_max(max((max(v) for _, v in groups if v), default=0.0))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = inner_w / len(groups)
    bar_w = max(2.0, slot * 0.8 / max(len(names), 1))
    body = _y_axis(top)
    for g, (label, values) in enumerate(groups):
        x0 = LEFT + slot * g + slot * 0.1
        for n, value in enumerate(values):
            h = inner_h * value / top
            body.append(
                f'<rect class="bar" x="{x0 + bar_w * n:.1f}" y="{TOP + inner_h - h:.1f}" '
                f'width="{bar_w - 1:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{PALETTE[n % len(PALETTE)]}"><title>{escape(label)} {escape(names[n])}: '
                f"{fmt(value)}{escape(unit)}</title></rect>"
            )
        body.append(
            f'<text x="{x0 + slot * 0.4:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{escape(label[:24])}</text>"
        )
    for n, name in enumerate(names):
        x = WIDTH - RIGHT - 70 * (len(names) - n)
        body.append(
            f'<rect x="{x}" y="{TOP}" width="10" height="10" fill="{PALETTE[n % len(PALETTE)]}"/>'
            f'<text x="{x + 14}" y="{TOP + 9}">{escape(name)}</text>'
        )
    return _frame(body, title)
