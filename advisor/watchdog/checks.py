"""Field checks for the watchdog's config dataclasses: one-line ValueErrors
that name the field (`watchdog.<policy>.<field>`) and what was expected."""

from __future__ import annotations

import math


def check_int(field: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field}: expected an integer >= {minimum}, got {value!r}")
    return value


def check_number(field: str, value, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    """A finite number in [low, high]; `*_open` excludes that end."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lb = "(" if low_open else "["
        rb = ")" if high_open else "]"
        raise ValueError(f"{field}: expected a number in {lb}{low:g}, {high:g}{rb}, got {value!r}")
    return float(value)


def check_choice(field: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{field}: expected one of {', '.join(choices)}, got {value!r}")
    return value
