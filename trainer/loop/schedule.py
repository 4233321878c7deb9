"""Learning-rate schedule: linear warm-up, then cosine (optionally with warm restarts).

The LR is a pure function of the optimiser step, so a resumed run needs no
scheduler state beyond the watchdog's LR scale:

    lr(group, step) = group["initial_lr"] * scale * lr_factor(step, ...)

`step` counts optimiser steps already taken (0 for the first step). Warm-up
gives (step + 1) / warmup_steps, reaching 1.0 on its last step. After it, at
t = step - warmup_steps, cosine annealing from 1 down to eta_min over a cycle
of T steps: eta_min + (1 - eta_min) * (1 + cos(pi * t_cur / T)) / 2. Without
`t_0` there is one cycle over the rest of the run (T = total - warm-up) and the
factor stays at eta_min past its end; with `t_0` the cycle restarts at 1.0
after t_0 steps, the next cycle lasting t_0 * t_mult steps, and so on (SGDR,
Loshchilov & Hutter 2017, with eta_min relative to the peak).

Re-plan (a resume with another --epochs / --max-steps, or an OOM shrink of the
effective batch, changes `total_steps` mid-run): only the one-cycle cosine
depends on the length, so only it is re-planned, continuously: at step s0 with
factor f0 (the old plan's), the rest is a cosine from f0 down to eta_min over
the new remaining steps, eta_min + (f0 - eta_min) * (1 + cos(pi * (step - s0) /
(total - s0))) / 2. The LR never jumps; a later re-plan anchors again. The
anchor is part of the state a checkpoint carries.

`epoch_decay = (gamma, steps_per_epoch)` replaces all of that by GPT-SoVITS's
s2 ExponentialLR: gamma ** (epoch + 1) during epoch `epoch` (upstream steps
its scheduler once before the first epoch); the s2 "gpt-sovits" recipe sets it.
"""

from __future__ import annotations

import math

from trainer.config import ScheduleConfig
from trainer.optim import OptimizerSet


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    kind: str = "cosine",
    t_0: int | None = None,
    t_mult: int = 1,
    eta_min: float = 0.0,
) -> float:
    """Multiplier on every group's peak LR for optimiser step `step` (0-based)."""
    if step < 0:
        raise ValueError(f"step {step} is negative")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    t = step - warmup_steps
    if t_0 is None:
        period = max(1, total_steps - warmup_steps)
        if t >= period:
            return eta_min
        t_cur = t
    else:
        t_cur, period = cycle_position(t, t_0, t_mult)
    return eta_min + (1.0 - eta_min) * (1.0 + math.cos(math.pi * t_cur / period)) / 2.0


def cycle_position(t: int, t_0: int, t_mult: int) -> tuple[int, int]:
    """(steps into the current cycle, that cycle's length) for step t after warm-up.

    Walks the cycles with integers (t_0, t_0*t_mult, ...): exact, and only
    log(t) iterations when t_mult > 1."""
    period = t_0
    while t >= period:
        t -= period
        period *= t_mult
    return t, period


class Schedule:
    """Sets every param group's LR from the step; `scale` is the watchdog's running LR cut."""

    def __init__(self, cfg: ScheduleConfig, total_steps: int, first_step_factor: float | None = None) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.scale = 1.0
        self.first_step_factor = first_step_factor  # GPT-SoVITS's s1: step 0 at 5x the LR
        self.epoch_decay: tuple[float, int] | None = None  # GPT-SoVITS's s2: (gamma, steps per epoch)
        self.anchor: tuple[int, float] | None = None  # a re-plan's (step, factor) the cosine continues from
        self.saved_total: int | None = None  # total_steps of the checkpoint a resume loaded (None: older checkpoint)

    def factor(self, step: int) -> float:
        c = self.cfg
        if step == 0 and self.first_step_factor is not None:
            return self.first_step_factor
        if self.epoch_decay is not None:
            gamma, per_epoch = self.epoch_decay
            return gamma ** (step // max(1, per_epoch) + 1)
        if self.anchor is not None and step >= self.anchor[0] and self.length_dependent(step):
            s0, f0 = self.anchor
            period = max(1, self.total_steps - s0)
            if step - s0 >= period:
                return min(f0, c.eta_min)
            return c.eta_min + (f0 - c.eta_min) * (1.0 + math.cos(math.pi * (step - s0) / period)) / 2.0
        return lr_factor(step, self.total_steps, c.warmup_steps, c.kind, c.t_0, c.t_mult, c.eta_min)

    def length_dependent(self, step: int) -> bool:
        """Whether the factor at `step` depends on total_steps (the one-cycle cosine after warm-up)."""
        c = self.cfg
        return self.epoch_decay is None and c.kind == "cosine" and c.t_0 is None and step >= c.warmup_steps

    def replan(self, total_steps: int, step: int) -> dict | None:
        """A new length from `step` on, the LR continuing from its value there. Returns what
        changed ({"total_steps": (old, new), "lr_factor": f0}) or None if nothing did."""
        if total_steps == self.total_steps:
            return None
        before = self.factor(step)
        old, self.total_steps = self.total_steps, total_steps
        if self.length_dependent(step):
            self.anchor = (step, before)
        return {"total_steps": [old, total_steps], "lr_factor": before}

    def apply(self, optimizers: OptimizerSet, step: int) -> None:
        """Set the LR of every group for the optimiser step about to be taken."""
        f = self.scale * self.factor(step)
        for _, opt in optimizers.items():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * f

    def state_dict(self) -> dict:
        return {"scale": self.scale, "total_steps": self.total_steps, "anchor": list(self.anchor) if self.anchor else None}

    def load_state_dict(self, state: dict) -> None:
        """The scale, the re-plan anchor and (as `saved_total`) the length the checkpoint's
        run had; older checkpoints carry only the scale."""
        self.scale = float(state["scale"])
        anchor = state.get("anchor")
        self.anchor = (int(anchor[0]), float(anchor[1])) if anchor else None
        self.saved_total = int(state["total_steps"]) if state.get("total_steps") is not None else None
