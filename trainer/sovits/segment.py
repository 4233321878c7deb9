"""Random fixed-length windows per sample, chosen and cut with tensor ops only.

No `.item()` and no Python loop over samples: the same code runs on CUDA, the
CPU and the meta device (where the probe traces the step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segment_starts(lengths: torch.Tensor, frames: int, uniform: torch.Tensor) -> torch.Tensor:
    """(B,) valid lengths, window size, (B,) draws in [0, 1) -> (B,) int64 starts.

    Start is uniform over [0, length - frames]; 0 when a sample is shorter."""
    last_start = (lengths - frames).clamp(min=0)
    starts = torch.floor(uniform.float() * (last_start + 1).float()).long()
    return torch.minimum(starts, last_start)  # guards uniform == 1 - eps rounding up


def cut_segments(x: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """x (B, C, T), starts (B,) in x's time units -> (B, C, length).

    Right-pads x with zeros first when it is shorter than the window."""
    if x.shape[-1] < length:  # static shape check, not data-dependent
        x = F.pad(x, (0, length - x.shape[-1]))
    offsets = torch.arange(length, device=x.device)
    index = (starts[:, None] + offsets[None, :]).clamp(max=x.shape[-1] - 1)  # (B, length)
    return torch.gather(x, 2, index[:, None, :].expand(-1, x.shape[1], -1))
