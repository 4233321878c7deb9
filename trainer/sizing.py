"""Batch and slice arithmetic, without torch: the one place each number is computed.

- `accumulation(effective, micro, world)`: micro-steps per optimiser step on
  each process (the loop, the OOM policy, `advisor train`'s batch line).
- `effective_batch(cfg, world)`: samples per optimiser step over all
  processes (`batch.effective`, else micro x processes x the recipe's batches
  per step: the loop, the run spec's out-of-memory cap, `advisor train`'s batch
  line).
- `slice_shape(slice_seconds)`: the lengths (T tokens, F frames, P phonemes)
  of a full-length slice: the workloads' synthetic batches and the loader's
  padding.

torch-free on purpose: `advisor train`'s plan path and `advisor/launch.py`
use it before torch is imported.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from trainer.audio_constants import FRAME_RATE, PHONEMES_PER_SECOND, TOKEN_RATE
from trainer.checks import check_slice_seconds
from trainer.recipe import recipe_for



def accumulation(effective: int, micro: int, world: int = 1) -> int:
    """Micro-steps per optimiser step on each process (the largest share).

    Rank r takes samples r, r + W, ... of the effective batch, so the largest
    share is ceil(effective / W); it runs in micro-batches of `micro`, the last
    one possibly smaller."""
    return math.ceil(math.ceil(effective / world) / micro)


def effective_batch(cfg: Any, world: int = 1) -> int:
    """Samples per optimiser step over all processes: `batch.effective`, else
    micro-batch x processes x the recipe's batches per step (4 for GPT-SoVITS's s1
    recipe, else 1: trainer/recipe.py). `cfg` is a TrainConfig."""
    return cfg.batch.effective or cfg.batch.micro * world * recipe_for(cfg.workload, cfg.recipe).batches_per_step


class SliceShape(NamedTuple):
    """Lengths of a full-length slice of S seconds (synthetic batches; real batches are padded to T and F)."""

    tokens: int  # T = 25 S semantic tokens (at least 1)
    frames: int  # F = 50 S spectrogram / SSL frames (at least 2: the SSL projection halves it)
    phonemes: int  # P = 12 S phonemes (at least 1; real batches: at least the longest)


def slice_shape(slice_seconds: float) -> SliceShape:
    """(T, F, P) for a slice of `slice_seconds` (checked: ValueError outside (0, 54])."""
    seconds = check_slice_seconds(slice_seconds)
    return SliceShape(
        tokens=max(1, round(TOKEN_RATE * seconds)),
        frames=max(2, round(FRAME_RATE * seconds)),
        phonemes=max(1, round(PHONEMES_PER_SECOND * seconds)),
    )
