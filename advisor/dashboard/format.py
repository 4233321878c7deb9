"""Text helpers of both views: sparklines, bars, numbers, durations, sizes (pure functions, no rich)."""

from __future__ import annotations

import math
from typing import Sequence

SPARK = "▁▂▃▄▅▆▇█"
GIB = 1024**3


def sparkline(values: Sequence[float], width: int) -> str:
    """Values as block characters, resampled (bucket means) to at most `width`."""
    if not values or width <= 0:
        return ""
    n = len(values)
    if n > width:
        values = [
            sum(values[i * n // width : (i + 1) * n // width]) / ((i + 1) * n // width - i * n // width) for i in range(width)
        ]
    low, high = min(values), max(values)
    if high - low <= 1e-12 * max(abs(high), 1.0):
        return SPARK[3] * len(values)
    scale = (len(SPARK) - 1) / (high - low)
    return "".join(SPARK[int((v - low) * scale + 0.5)] for v in values)


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



def table_source(run: dict) -> str:
    """Where the micro-batch came from, from a start event's fields ("" if unknown)."""
    source = run.get("table_source", run.get("batch_source"))
    return f"batch from {source}" if source else ""


def curve(values: Sequence[float], width: int, height: int = 4) -> list[str]:
    """A column chart `height` rows tall (top row first), each value stretched over width / n columns.

    Eighth blocks give 8 levels per row; the lowest value keeps one eighth so every column shows."""
    if not values or width <= 0 or height <= 0:
        return []
    n = len(values)
    columns = [values[min(i * n // width, n - 1)] for i in range(width)] if n < width else [
        sum(values[i * n // width : (i + 1) * n // width]) / ((i + 1) * n // width - i * n // width) for i in range(width)
    ]
    low, high = min(columns), max(columns)
    span = high - low if high - low > 1e-12 * max(abs(high), 1.0) else 1.0
    levels = [1 + round((v - low) / span * (8 * height - 1)) for v in columns]  # 1 .. 8 x height eighths
    rows = []
    for row in range(height - 1, -1, -1):
        cells = []
        for level in levels:
            fill = min(max(level - 8 * row, 0), 8)
            cells.append(" " if fill == 0 else SPARK[fill - 1])
        rows.append("".join(cells))
    return rows
