"""Text helpers of both views: sparklines, bars, numbers, durations, sizes (pure functions, no rich)."""

from __future__ import annotations

import math
from typing import Sequence

SPARK = "▁▂▃▄▅▆▇█"
GIB = 1024**3


MIN_RELATIVE_SPAN = 0.01  # a scale is never narrower than 1 % of the value: a 0.04 % wobble draws flat


def axis(values: Sequence[float], min_span: float | None = None) -> tuple[float, float]:
    """The (low, high) a chart of `values` spans: their range, widened about its middle to at
    least `min_span` (default 1 % of the largest |value|, or 1e-12), so a near-constant series
    draws as the flat line it is instead of filling the height."""
    low, high = min(values), max(values)
    if min_span is None:
        min_span = MIN_RELATIVE_SPAN * max(abs(low), abs(high))
    min_span = max(min_span, 1e-12)
    if high - low < min_span:  # the middle at 45 % of the scale: inside a block level, not on the
        middle = (low + high) / 2  # edge between two, where rounding noise would flicker
        low = middle - 0.45 * min_span
        high = low + min_span
    return low, high


def span_labels(low: float, high: float) -> tuple[str, str]:
    """`high` and `low` with the fewest significant digits (4 to 8) that tell them apart."""
    for digits in range(4, 9):
        top, bottom = fmt(high, digits), fmt(low, digits)
        if top != bottom:
            break
    return top, bottom


def _buckets(values: Sequence[float], width: int) -> list[float]:
    """At most `width` values: bucket means when there are more."""
    n = len(values)
    if n <= width:
        return list(values)
    return [sum(values[i * n // width : (i + 1) * n // width]) / ((i + 1) * n // width - i * n // width) for i in range(width)]


def sparkline(values: Sequence[float], width: int, min_span: float | None = None) -> str:
    """Values as block characters, resampled (bucket means) to at most `width`, on `axis`'s scale."""
    if not values or width <= 0:
        return ""
    values = _buckets(values, width)
    low, high = axis(values, min_span)
    scale = (len(SPARK) - 1) / (high - low)
    return "".join(SPARK[min(max(int((v - low) * scale + 0.5), 0), len(SPARK) - 1)] for v in values)


def bar(fraction: float, width: int) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(fraction * width + 0.5)
    return "█" * full + "░" * (width - full)


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{max(digits - 2, 1)}e}"
    return f"{value:.{digits}g}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    clock = f"{h}:{m:02d}:{s:02d}"
    return f"{days}d {clock}" if days else clock


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f} GiB"


def curve(values: Sequence[float], width: int, height: int = 4, scale: tuple[float, float] | None = None) -> list[str]:
    """A column chart `height` rows tall (top row first), each value stretched over width / n columns,
    on `scale` (low, high), default `axis`'s (a near-constant series is a flat band at half height).

    Eighth blocks give 8 levels per row; the bottom of the scale keeps one eighth so every column shows."""
    if not values or width <= 0 or height <= 0:
        return []
    n = len(values)
    columns = [values[min(i * n // width, n - 1)] for i in range(width)] if n < width else _buckets(values, width)
    low, high = scale or axis(columns)
    levels = [1 + round((v - low) / (high - low) * (8 * height - 1)) for v in columns]  # 1 .. 8 x height eighths
    rows = []
    for row in range(height - 1, -1, -1):
        cells = []
        for level in levels:
            fill = min(max(level - 8 * row, 0), 8)
            cells.append(" " if fill == 0 else SPARK[fill - 1])
        rows.append("".join(cells))
    return rows
