"""Memory sizes: parse what users type ("8GiB", "8GB", "8192MiB", "8") and format bytes.

A bare number means GiB (above 1024 it is refused with a suggestion: `80000`
is a MiB figure). GB means GiB too (and MB MiB, KB KiB, TB TiB): an
"8 GB" card has 8 GiB (nvidia-smi shows 8192MiB), so "8GB", "8GiB", "8192MiB"
and "8" are the same budget. Units are case-insensitive; "B" is bytes.
"""

from __future__ import annotations

import re

GIB = 1024**3
MIB = 1024**2

# What a real card needs beyond the caching allocator's blocks (anchors.md): the
# CUDA context (300-550 MiB, growing with the SM count: we take the top) and
# cuBLAS/cuBLASLt workspaces (8-32 MiB a handle: one handle, the top).
CUDA_CONTEXT_BYTES = 550 * MIB
CUBLAS_WORKSPACE_BYTES = 32 * MIB

_UNITS = {
    "b": 1,
    "kb": 1024,  # card convention: GB on a GPU box is GiB
    "mb": MIB,
    "gb": GIB,
    "tb": 1024**4,
    "kib": 1024,
    "mib": MIB,
    "gib": GIB,
    "tib": 1024**4,
    "k": 1024,  # shorthand some tools print (nvidia-smi style "8192M" is MiB)
    "m": MIB,
    "g": GIB,
    "t": 1024**4,
}
BARE_GIB_LIMIT = 1024  # a bare number is GiB; past 1 TiB it is surely another unit: asked about
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int | float) -> int:
    """Bytes in `text`; a bare number is GiB. Raises ValueError naming what is accepted."""
    if isinstance(text, bool):
        raise ValueError(f"size {text!r} is not a size: expected e.g. 8GiB, 8GB, 8192MiB or 8 (GiB)")
    if isinstance(text, (int, float)):
        text = str(text)
    if str(text).strip().startswith("-"):
        raise ValueError(f"size {text!r} is negative: sizes are positive; expected e.g. 8GiB, 8GB, 8192MiB or 8 (GiB)")
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _UNITS):
        raise ValueError(f"size {text!r} is not a size: expected e.g. 8GiB, 8GB, 8192MiB or 8 (GiB)")
    number = float(match.group(1))
    if not unit and number > BARE_GIB_LIMIT:  # 80000 "GiB": surely MiB (nvidia-smi's unit) meant
        raise ValueError(f"size {text!r} has no unit and would be {number:g} GiB: write {match.group(1)}MiB "
                         f"(= {number / 1024:.3g}GiB) or {number / 1024:.3g}GiB, or {match.group(1)}GiB if you mean it")
    value = number * (_UNITS[unit] if unit else GIB)
    if value < 1:
        raise ValueError(f"size {text!r} is zero: expected a positive size such as 8GiB")
    return int(round(value))


def format_size(num_bytes: int | float | None) -> str:
    """Human-readable binary size: 8.00 GiB, 512.0 MiB, 300 B; '-' for None."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}" if unit == "GiB" else f"{value / scale:.1f} {unit}"
    return f"{int(value)} B"


def tier_label(num_bytes: int) -> str:
    """'8GB' for a tier of 8 GiB (cards are named in GB; the bytes are GiB), else the size."""
    gib = num_bytes / GIB
    if abs(gib - round(gib)) < 1e-9 and gib >= 1:
        return f"{round(gib)}GB"
    return format_size(num_bytes)
