"""Training throughput at several batch sizes, and the recommended batch.

Only a real device has a speed: the estimate backend leaves throughput null
and recommends the max batch. On a device, the probe times the batch sizes
its memory search already ran plus the powers of two up to the max; the
recommended batch is the fastest (samples/s) among those that fit within the
margin, where a speed within `TIE_TOLERANCE` of the best counts as a tie and
ties go to the smaller batch (less memory, same speed).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.workload import Batch, Workload

TIE_TOLERANCE = 0.02  # speeds within 2 % of the best are ties


@dataclass(frozen=True)
class Speed:
    batch_size: int
    step_seconds: float  # mean over the timed steps, warm-up excluded
    samples_per_second: float
    audio_seconds_per_second: float


def speed(workload: Workload, batch: Batch, step_seconds: float) -> Speed:
    n = next(iter(batch.values())).shape[0]
    return Speed(n, step_seconds, n / step_seconds, workload.audio_seconds(batch) / step_seconds)


def sizes_to_time(max_batch: int) -> list[int]:
    """Powers of two below `max_batch`, and `max_batch` itself."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch] if max_batch >= 1 else []


def recommend(speeds: dict[int, float], max_batch: int, tolerance: float = TIE_TOLERANCE) -> int:
    """Fastest batch (samples/s) of those <= `max_batch`; ties (within `tolerance`
    of the best) go to the smaller. 0 when nothing fits."""
    fitting = {b: s for b, s in speeds.items() if 1 <= b <= max_batch}
    if not fitting:
        return 0
    best = max(fitting.values())
    return min(b for b, s in fitting.items() if s >= best * (1 - tolerance))
