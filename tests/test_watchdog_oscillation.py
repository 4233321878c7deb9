"""Oscillation policy: validated against dlib's rule, on generated loss curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advisor.watchdog.oscillation import (
    OscillationConfig,
    OscillationPolicy,
    probability_decreasing,
    rank_probability_decreasing,
    steps_without_decrease,
)
from trainer.policy import StepInfo

W = 50  # window used by the curve tests (the default is 200; the rule scales with it)


# --- dlib's rule, transcribed as a plain reference --------------------------------------
class RunningGradient:
    """dlib::running_gradient: recursive least squares on (x = n, y) with a 1e6 prior."""

    def __init__(self) -> None:
        self.n = 0
        self.R = np.eye(2) * 1e6
        self.w = np.zeros(2)
        self.residual_squared = 0.0

    def add(self, y: float) -> None:
        x = np.array([float(self.n), 1.0])
        temp = 1 + x @ self.R @ x
        tmp = self.R @ x
        self.R = self.R - np.outer(tmp, tmp) / temp
        self.R = 0.5 * (self.R + self.R.T)
        self.w = self.w + self.R @ x * (y - x @ self.w)
        self.residual_squared += (y - x @ self.w) ** 2 * temp
        self.n += 1

    def probability_gradient_greater_than_zero(self) -> float:
        se = math.sqrt(self.residual_squared / (self.n - 2) * 12.0 / (self.n**3 - self.n))
        slope = self.w[0]
        if se == 0:
            less = 0.0 if 0 < slope else 1.0 if 0 > slope else 0.5
        else:
            less = 0.5 * math.erfc(-((0 - slope) / se) / math.sqrt(2))
        return 1 - less


def dlib_count(values, probability=0.51, discard=None) -> int:
    """dlib's count_steps_without_decrease (discard None) / _robust (discard given)."""
    threshold = None
    if discard is not None:
        ordered = sorted(values)
        threshold = ordered[int(math.floor((len(values) - 1) * (1 - discard) + 0.5))]
    g = RunningGradient()
    count = 0
    for j, v in enumerate(reversed(list(values)), start=1):
        if threshold is None or v <= threshold:
            g.add(v)
        if g.n > 2 and g.probability_gradient_greater_than_zero() < probability:
            count = j
    return count


@pytest.mark.parametrize("seed", range(6))
def test_counts_equal_dlibs_rule(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(3, 150))
        t = np.arange(n)
        shape = rng.integers(4)
        if shape == 0:
            y = 1 + 0.3 * np.sin(t / rng.uniform(1, 8)) + rng.normal(0, 0.1, n)
        elif shape == 1:
            y = 2 - rng.uniform(0, 0.02) * t + rng.normal(0, 0.1, n)
        elif shape == 2:
            y = 1 + rng.uniform(0, 0.01) * t + rng.standard_cauchy(n) * 0.05  # outliers for the robust test
        else:
            y = rng.normal(1, 0.2, n)
        values = [float(v) for v in y]
        for probability in (0.51, 0.6, 0.9):
            assert steps_without_decrease(values, probability) == dlib_count(values, probability)
            assert steps_without_decrease(values, probability, 0.1) == dlib_count(values, probability, 0.1)


def test_probability_decreasing_matches_the_ols_formula():
    rng = np.random.default_rng(3)
    y = 1 - 0.002 * np.arange(80) + rng.normal(0, 0.05, 80)
    slope, intercept = np.polyfit(np.arange(80), y, 1)
    rss = float(np.sum((y - (slope * np.arange(80) + intercept)) ** 2))
    se = math.sqrt(rss / 78 / ((80**3 - 80) / 12))
    expected = 0.5 * math.erfc((slope / se) / math.sqrt(2))  # Phi(-slope / se)
    assert probability_decreasing(y) == pytest.approx(expected, rel=1e-9)
    assert probability_decreasing([3.0, 2.0, 1.0]) == 1.0  # exact line: se = 0
    assert probability_decreasing([1.0, 1.0, 1.0]) == 0.5
    with pytest.raises(ValueError, match="at least 3"):
        probability_decreasing([1.0, 2.0])


def test_constant_and_monotone_sequences_follow_dlibs_edge_cases():
    assert steps_without_decrease([1.0] * 10) == dlib_count([1.0] * 10) == 10  # flat: not decreasing
    down = [10.0 - i for i in range(10)]
    assert steps_without_decrease(down) == dlib_count(down) == 0
    assert steps_without_decrease([1.0, 2.0]) == 0  # fewer than 3 values


# --- the policy on generated curves ------------------------------------------------------
def feed(policy: OscillationPolicy, curve, lr: float = 1e-3, apply: bool = False) -> list[tuple[int, float]]:
    """Run the curve through on_step; return (index, factor) of each cut. `apply` lowers the LR like the loop."""
    cuts = []
    for i, v in enumerate(curve):
        for d in policy.on_step(StepInfo(step=i, epoch=0, loss=float(v), losses={"mel": float(v)}, grad_norm=1.0, lr=lr)):
            assert d.action == "scale_lr" and d.policy == "oscillation"
            cuts.append((i, d.factor))
            if apply:
                lr *= d.factor
    return cuts


def oscillating(kind: str, seed: int, n: int) -> tuple[np.ndarray, int]:
    """(curve, onset): the loss oscillates from `onset` on."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    noise = rng.normal(0, 0.03, n)
    if kind == "sine":
        return 1.0 + 0.3 * np.sin(2 * np.pi * t / rng.uniform(5, 25)) + noise, 0
    if kind == "alternating":  # LR far too high: every other step bounces up
        return 1.0 + 0.25 * (t % 2) + noise, 0
    if kind == "growing":  # bouncing higher and higher above a floor
        return 1.0 + (0.05 + 0.6 * t / n) * (1 + np.sin(2 * np.pi * t / 8)) / 2 + noise, 0
    onset = 2 * W  # decreasing first, then stuck bouncing
    down = 2.0 - 0.5 * t / onset
    bounce = 1.5 + 0.3 * np.sin(2 * np.pi * (t - onset) / rng.uniform(5, 20))
    return np.where(t < onset, down, bounce) + noise, onset


@pytest.mark.parametrize("kind", ["sine", "alternating", "growing", "decrease-then-bounce"])
@pytest.mark.parametrize("seed", range(4))
def test_cuts_an_oscillating_loss_about_one_window_after_it_starts(kind, seed):
    curve, onset = oscillating(kind, seed, 4 * W)
    cuts = feed(OscillationPolicy(OscillationConfig(window=W, cooldown=W)), curve)
    assert cuts, "no cut on an oscillating loss"
    first, factor = cuts[0]
    # a window of evidence (its start may overlap the end of a decrease that had flattened); a
    # trendless window reads P(decreasing) ~ uniform, so the cut can take up to half a window more
    assert max(onset, W - 1) <= first <= onset + W + W // 2
    assert factor == 0.5


def decreasing(kind: str, seed: int, n: int) -> np.ndarray:
    """Decreasing all the way: the drop over the last window is >= 2.8 noise sigmas
    (a loss whose drop per window is lost in its noise is a plateau, which the rule cuts by design)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    level = 0.5 + 3.0 * np.exp(-t / n)  # drop over the last window: 3 / 8 / e = 0.14 when n = 8 W
    if kind == "smooth":
        return level
    if kind == "noisy":
        return level + rng.normal(0, 0.05, n)
    if kind == "multiplicative":  # noise proportional to the level, like a minibatch loss
        return level * rng.lognormal(0, 0.03, n)
    # 3 % bad batches at +60 %: dlib's robust test must see through them (it discards the top 10 %)
    noisy = level + rng.normal(0, 0.03, n)
    return np.where(rng.random(n) < 0.03, noisy * 1.6, noisy)


@pytest.mark.parametrize("kind", ["smooth", "noisy", "multiplicative", "with-bad-batches"])
@pytest.mark.parametrize("seed", range(5))
def test_no_cut_while_the_loss_decreases(kind, seed):
    curve = decreasing(kind, seed, 8 * W)
    assert feed(OscillationPolicy(OscillationConfig(window=W, cooldown=W)), curve) == []


def test_the_robust_test_alone_would_not_be_enough():
    """With bad batches the plain count can read 'no decrease'; requiring both counts prevents the cut."""
    curve = decreasing("with-bad-batches", 0, 8 * W)
    plain = [steps_without_decrease(curve[i - 2 * W : i]) for i in range(2 * W, len(curve), 5)]
    robust = [steps_without_decrease(curve[i - 2 * W : i], 0.51, 0.1) for i in range(2 * W, len(curve), 5)]
    assert max(robust) < W  # the robust count keeps the policy quiet
    assert max(plain) >= W  # the plain count alone would have cut


def test_cooldown_and_floor():
    curve, _ = oscillating("sine", 0, 40 * W)
    policy = OscillationPolicy(OscillationConfig(window=W, cooldown=2 * W, min_lr_fraction=0.1))
    cuts = feed(policy, curve, lr=1e-3, apply=True)
    gaps = [b[0] - a[0] for a, b in zip(cuts, cuts[1:])]
    assert all(g >= 2 * W for g in gaps)
    factors = [f for _, f in cuts]
    # 1e-3 -> 5e-4 -> 2.5e-4 -> 1.25e-4 -> 1e-4 (the floor: 0.1 x the peak LR), then nothing more
    assert factors[:3] == [0.5, 0.5, 0.5] and factors[3] == pytest.approx(0.8)
    assert len(cuts) == 4 and policy.cuts == 4


def test_watches_a_named_loss_component_and_ignores_non_finite_values():
    policy = OscillationPolicy(OscillationConfig(window=W, loss="mel"))
    curve, _ = oscillating("sine", 1, 2 * W)
    cuts = []
    for i, v in enumerate(curve):
        total = 5.0 - 0.01 * i  # the total decreases; only the mel component oscillates
        loss = math.nan if i % 7 == 0 else float(v)
        info = StepInfo(step=i, epoch=0, loss=total, losses={"mel": loss}, grad_norm=1.0, lr=1e-3)
        cuts += policy.on_step(info)
    assert len(cuts) == 1 and "mel has not decreased" in cuts[0].reason
    assert all(math.isfinite(v) for v in policy.history)


def test_state_round_trip_gives_the_same_decisions():
    curve, _ = oscillating("sine", 2, 5 * W)
    config = OscillationConfig(window=W, cooldown=W)
    whole = OscillationPolicy(config)
    expected = feed(whole, curve)
    first = OscillationPolicy(config)
    head = feed(first, curve[: 2 * W + 7])
    resumed = OscillationPolicy(config)
    resumed.load_state_dict(first.state_dict())
    tail = [(i + 2 * W + 7, f) for i, f in feed(resumed, curve[2 * W + 7 :])]
    assert head + tail == expected and len(expected) >= 3
    with pytest.raises(ValueError, match="lacks"):
        resumed.load_state_dict({"history": []})


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"window": 2}, "window"),
        ({"probability": 0.5}, "probability"),
        ({"probability": 1.0}, "probability"),
        ({"discard": 0.5}, "discard"),
        ({"factor": 1.0}, "factor"),
        ({"factor": 0}, "factor"),
        ({"cooldown": -1}, "cooldown"),
        ({"min_lr_fraction": 1.5}, "min_lr_fraction"),
        ({"loss": None}, "loss"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"watchdog.oscillation.{field}"):
        OscillationConfig(**kwargs)


# --- heavy-tailed noise: single-step outliers both ways, no change of trend ----------------------
def heavy_tailed(seed: int, n: int, df: float) -> np.ndarray:
    """The healthy decay of `decreasing` plus Student-t noise (df 2-3: infinite or barely finite
    variance; a few steps far off either way, as a minibatch loss with rare odd batches)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 0.5 + 3.0 * np.exp(-t / n) + 0.05 * rng.standard_t(df, n)


@pytest.mark.parametrize("df", [2.0, 2.5, 3.0])
@pytest.mark.parametrize("seed", range(10))
def test_no_cut_on_a_healthy_decay_with_heavy_tailed_noise(df, seed):
    assert feed(OscillationPolicy(OscillationConfig(window=W, cooldown=W)), heavy_tailed(seed, 8 * W, df)) == []


def test_the_least_squares_counts_alone_would_cut_a_heavy_tailed_decay():
    """Seed 4 at df 2: both dlib counts read 'no decrease' over a window; the rank test does not."""
    curve = heavy_tailed(4, 8 * W, 2.0)
    stretches = [curve[max(0, i - 2 * W):i] for i in range(W, len(curve))]
    both = [s for s in stretches if min(steps_without_decrease(s), steps_without_decrease(s, 0.51, 0.1)) >= W]
    assert both, "the counts alone never reached a window: this curve tests nothing"
    for s in both:
        steps = min(steps_without_decrease(s), steps_without_decrease(s, 0.51, 0.1))
        assert rank_probability_decreasing(s[-steps:]) >= 0.51


def test_rank_probability_follows_mann_kendall():
    assert rank_probability_decreasing([3.0, 2.0, 1.0]) == pytest.approx(0.5 * math.erfc(-(3 / math.sqrt(3 * 2 * 11 / 18)) / math.sqrt(2)))  # S = -3: Phi(3 / sd)
    assert rank_probability_decreasing([1.0, 1.0, 1.0]) == 0.5
    up = list(range(30))
    assert rank_probability_decreasing(up) < 1e-6 and rank_probability_decreasing(up[::-1]) > 1 - 1e-6
    with_outlier = [10.0 - 0.1 * i for i in range(40)]
    with_outlier[-1] = 1e6  # one huge step: the ranks move by one pair per point
    assert rank_probability_decreasing(with_outlier) > 0.99
    with pytest.raises(ValueError, match="at least 3"):
        rank_probability_decreasing([1.0, 2.0])
