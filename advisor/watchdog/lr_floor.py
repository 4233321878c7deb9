"""LRFloor: how far a policy may still cut the learning rate.

Both LR-cutting policies (oscillation, spike) keep one. The floor is a
fraction of the highest LR the policy has seen (the peak, so a warm-up that
starts near zero does not drag the floor down with it). A cut that would go
below the floor is shortened to land on it; at the floor there is no cut.
"""

from __future__ import annotations

import math


class LRFloor:
    def __init__(self, min_lr_fraction: float) -> None:
        self.min_lr_fraction = min_lr_fraction
        self.peak_lr = 0.0  # highest finite LR seen so far

    def observe(self, lr: float) -> None:
        if math.isfinite(lr) and lr > self.peak_lr:
            self.peak_lr = lr

    @property
    def floor_lr(self) -> float:
        return self.peak_lr * self.min_lr_fraction

    def factor(self, lr: float, wanted: float) -> float | None:
        """The factor to apply to `lr` (<= `wanted` cut, >= the floor), or None when at the floor."""
        if not (math.isfinite(lr) and lr > 0):
            return None
        factor = max(wanted, self.floor_lr / lr)
        # Within 0.1 % of the floor already: a cut that small is noise, not a decision.
        return factor if factor < 0.999 else None

    def state_dict(self) -> dict:
        return {"peak_lr": self.peak_lr}

    def load_state_dict(self, state: dict) -> None:
        self.peak_lr = float(state["peak_lr"])
