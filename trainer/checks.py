"""Argument checks of the workload contract, without torch: the CLI's plan path and the config use them.

Each returns the checked value or raises a one-line ValueError naming it and what was expected.
`trainer.workload` re-exports them.
"""

from __future__ import annotations

from trainer.audio_constants import MAX_SLICE_SECONDS

PRECISIONS = ("fp32", "fp16", "bf16")
SIZES = ("full", "tiny")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def check_slice_seconds(slice_seconds: float, name: str = "slice seconds", minimum: float | None = None) -> float:
    """The one check of a slice length (the config, the probe, the plan, `advisor prepare`,
    `advisor slice`): a number in (0, 54], or in [minimum, 54] when `minimum` is given
    (prepare and slice cut no pieces shorter than 2 s). `name` is what the error calls it."""
    low = f"[{minimum:g}" if minimum is not None else "(0"
    try:
        value = float(slice_seconds)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {slice_seconds!r} is not a number: expected a value in {low}, {MAX_SLICE_SECONDS:g}]") from None
    if minimum is None and not 0 < value <= MAX_SLICE_SECONDS:
        raise ValueError(f"{name} {slice_seconds!r} is outside (0, {MAX_SLICE_SECONDS:g}]")
    if minimum is not None and not minimum <= value <= MAX_SLICE_SECONDS:
        raise ValueError(f"{name} {value:g} is outside [{minimum:g}, {MAX_SLICE_SECONDS:g}]")
    return value


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size {batch_size!r} is invalid: expected an integer >= 1")
    return batch_size


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}: expected one of {', '.join(SIZES)}")
    return size
