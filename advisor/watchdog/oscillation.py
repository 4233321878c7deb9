"""Oscillation policy: cut the LR when the training loss stops going down.

The rule is dlib's (dnn_trainer, running_gradient.h), written from its
description:

- Fit an ordinary-least-squares line to the last n losses (x = 0..n-1).
  The slope's standard error is sqrt(RSS / (n - 2) / Sxx) with
  Sxx = (n^3 - n) / 12, and P(loss decreasing) = P(slope < 0) =
  Phi(-slope / se) (normal CDF).
- "Steps without decrease" is the longest recent stretch whose
  P(decreasing) is below `probability` (0.51): walking back from the newest
  loss, every suffix of 3 or more losses is tested and the longest failing
  one counts.
- The robust variant first discards the losses above the upper
  `discard` quantile (top 10 %), so a few bad batches cannot fake a plateau.
- Heavy-tailed noise (single-step outliers both ways, e.g. Student-t with 2-3
  degrees of freedom) can still tilt a least-squares line: a third, rank-based
  test (Mann-Kendall: S = sum of sign(y_j - y_i) over pairs i < j, variance
  n(n-1)(2n+5)/18, P(decreasing) = Phi(-S / sd)) over the same stretch must
  agree. Ranks ignore how far an outlier lies, so a healthy decay under such
  noise reads "decreasing" and keeps its LR (tests: a Student-t curve).
- The LR is cut by `factor` only when all three say "not decreasing" over
  `window` steps (both counts reach `window`, the rank test below `probability`); then
  the history is emptied, so the next cut needs a fresh `window` of evidence
  (and at least `cooldown` steps), and it never takes the LR below
  `min_lr_fraction` x the peak LR.

An oscillating loss (up and down with no trend, or drifting up) has
P(decreasing) near or under 0.5 and is cut about one window after it starts;
a smooth or noisy loss that is still going down has P near 1 and is left
alone. A noisy plateau is cut too, as dlib and ReduceLROnPlateau would.

The history holds at most 2 x `window` losses; both counts are vectorised
(numpy), tens of microseconds per step; the rank test, O(n^2) in int8, runs
only once both counts have reached the window (benchmarks/results/watchdog.md).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from advisor.watchdog.checks import check_int, check_number
from advisor.watchdog.lr_floor import LRFloor
from trainer.policy import Decision, Policy, StepInfo


def probability_decreasing(values) -> float:
    """P(slope < 0) of the OLS line through `values` (oldest first); needs 3+ values."""
    y = np.asarray(values, dtype=float)
    n = y.size
    if n < 3:
        raise ValueError(f"probability_decreasing needs at least 3 values, got {n}")
    x = np.arange(n, dtype=float) - (n - 1) / 2
    sxx = (n**3 - n) / 12.0  # sum of (x - mean x)^2 for x = 0..n-1
    slope = float(np.dot(x, y - y.mean()) / sxx)
    rss = float(np.sum((y - y.mean() - slope * x) ** 2))
    se = math.sqrt(rss / (n - 2) / sxx)
    if se == 0.0:
        return 1.0 if slope < 0 else 0.0 if slope > 0 else 0.5
    return NormalDist().cdf(-slope / se)


def rank_probability_decreasing(values) -> float:
    """Mann-Kendall P(decreasing) of `values` (oldest first; 3+ values): Phi(-S / sd(S)), where S
    counts rising pairs minus falling pairs; outliers weigh no more than any other point."""
    y = np.asarray(values, dtype=float)
    n = y.size
    if n < 3:
        raise ValueError(f"rank_probability_decreasing needs at least 3 values, got {n}")
    rises = (y[None, :] > y[:, None]).view(np.int8) - (y[None, :] < y[:, None]).view(np.int8)  # [i, j]: sign(y_j - y_i)
    s = float(np.triu(rises, 1).sum(dtype=np.int64))  # pairs j > i; int8 (n, n): ~0.3 ms at n = 400
    sd = math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    return NormalDist().cdf(-s / sd)


def steps_without_decrease(values, probability: float = 0.51, discard: float = 0.0) -> int:
    """dlib's count_steps_without_decrease (discard=0) and ..._robust (discard=0.1).

    `values` oldest first. Returns the length of the longest recent stretch in
    which P(decreasing) < `probability` (0 when the loss is confidently going down)."""
    y = np.asarray(values, dtype=float)[::-1]  # newest first, as dlib walks it
    n = y.size
    if n < 3:
        return 0
    keep = np.ones(n, dtype=bool)
    if discard > 0:
        index = int(math.floor((n - 1) * (1 - discard) + 0.5))  # C's round(): halves away from zero
        keep = y <= np.partition(y, index)[index]
    kept = y[keep]
    m = kept.size
    if m < 3:
        return 0
    kept = kept - kept.mean()  # centring keeps the running sums well conditioned
    k = np.arange(1, m + 1, dtype=float)  # points in each prefix
    x = k - 1.0
    sy = np.cumsum(kept)
    sxy_c = np.cumsum(x * kept) - (k * (k - 1) / 2) * sy / k
    syy_c = np.cumsum(kept * kept) - sy * sy / k
    sxx_c = (k**3 - k) / 12.0
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = sxy_c / sxx_c  # slope in newest-first order: > 0 means decreasing in time
        rss = np.maximum(syy_c - sxy_c * slope, 0.0)
        se = np.sqrt(rss / (k - 2) / sxx_c)
    z = NormalDist().inv_cdf(probability)
    # P(decreasing) = Phi(slope / se) < probability  <=>  slope < z * se (and se = 0: slope <= 0)
    not_decreasing = (slope < z * se) | (slope <= 0)
    not_decreasing[:2] = False  # dlib tests only prefixes of 3 or more points
    held = np.cumsum(keep)  # points in the regression after walking j values
    hits = np.nonzero(not_decreasing[held - 1] & (held >= 3))[0]
    return int(hits[-1]) + 1 if hits.size else 0


@dataclass
class OscillationConfig:
    window: int = 200  # steps without a decrease before a cut (dlib's iter_without_progress_thresh)
    probability: float = 0.51  # "not decreasing": P(slope < 0) below this (dlib's default)
    discard: float = 0.10  # the robust test drops this upper fraction of the losses (dlib's default)
    factor: float = 0.5  # LR multiplier per cut
    cooldown: int = 200  # at least this many steps between two cuts
    min_lr_fraction: float = 0.1  # never cut below this fraction of the peak LR
    loss: str = ""  # loss component to watch (a key of the step's losses; "" = the total loss)

    def __post_init__(self) -> None:
        check_int("watchdog.oscillation.window", self.window, 3)
        check_number("watchdog.oscillation.probability", self.probability, 0.5, 1.0, low_open=True, high_open=True)
        check_number("watchdog.oscillation.discard", self.discard, 0.0, 0.5, high_open=True)
        check_number("watchdog.oscillation.factor", self.factor, 0.0, 1.0, low_open=True, high_open=True)
        check_int("watchdog.oscillation.cooldown", self.cooldown, 0)
        check_number("watchdog.oscillation.min_lr_fraction", self.min_lr_fraction, 0.0, 1.0)
        if not isinstance(self.loss, str):
            raise ValueError(f"watchdog.oscillation.loss: expected a loss name or \"\", got {self.loss!r}")


class OscillationPolicy(Policy):
    name = "oscillation"

    def __init__(self, config: OscillationConfig | None = None) -> None:
        self.config = config or OscillationConfig()
        self.history: deque[float] = deque(maxlen=2 * self.config.window)
        self.floor = LRFloor(self.config.min_lr_fraction)
        self.calls = 0  # on_step calls (batches; skipped steps keep the same `step`)
        self.last_cut_call: int | None = None
        self.cuts = 0

    def on_step(self, info: StepInfo) -> list[Decision]:
        self.calls += 1
        self.floor.observe(info.lr)
        value = info.losses.get(self.config.loss, math.nan) if self.config.loss else info.loss
        if not math.isfinite(value):
            return []  # non-finite losses are the spike policy's business
        self.history.append(float(value))
        if not self._due():
            return []
        w = self.config.window
        plain = steps_without_decrease(self.history, self.config.probability)
        if plain < w:
            return []
        robust = steps_without_decrease(self.history, self.config.probability, self.config.discard)
        if robust < w:
            return []
        steps = min(plain, robust)
        if rank_probability_decreasing(list(self.history)[-steps:]) >= self.config.probability:
            return []  # the ranks still see a decrease: outliers tilted the least-squares lines
        return self._cut(info, steps)

    def _due(self) -> bool:
        if len(self.history) < self.config.window:
            return False
        return self.last_cut_call is None or self.calls - self.last_cut_call >= self.config.cooldown

    def _cut(self, info: StepInfo, steps: int) -> list[Decision]:
        p = probability_decreasing(list(self.history)[-steps:])
        self.history.clear()  # fresh evidence for the next cut, as dlib does
        self.last_cut_call = self.calls
        factor = self.floor.factor(info.lr, self.config.factor)
        if factor is None:
            return []  # already at the floor: nothing left to cut
        self.cuts += 1
        what = self.config.loss or "training loss"
        return [
            Decision(
                "scale_lr",
                f"{what} has not decreased over the last {steps} steps "
                f"(P(decreasing) = {p:.2f} < {self.config.probability:g}, also with the top "
                f"{self.config.discard:.0%} discarded): LR x {factor:.3g} "
                f"({info.lr:.3g} -> {info.lr * factor:.3g})",
                policy=self.name,
                factor=factor,
                details={"steps": steps, "p_decreasing": p, "floor_lr": self.floor.floor_lr},
            )
        ]

    def state_dict(self) -> dict:
        return {
            "history": list(self.history),
            "calls": self.calls,
            "last_cut_call": self.last_cut_call,
            "cuts": self.cuts,
            "floor": self.floor.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"history", "calls", "last_cut_call", "cuts", "floor"} - set(state)
        if missing:
            raise ValueError(f"oscillation policy state lacks {', '.join(sorted(missing))}")
        self.history = deque((float(v) for v in state["history"]), maxlen=2 * self.config.window)
        self.calls = int(state["calls"])
        self.last_cut_call = state["last_cut_call"]
        self.cuts = int(state["cuts"])
        self.floor.load_state_dict(state["floor"])
