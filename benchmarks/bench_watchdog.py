"""Watchdog overhead: all default policies' on_step per call, against a tiny-model step.

    /work/venv/bin/python -m pytest benchmarks/bench_watchdog.py --benchmark-only -q

Target: the policies cost <= 1 % of a training step. The policies are warmed
up first, so every window is full (the oscillation test runs on 400 losses).
Results: benchmarks/results/watchdog.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advisor.watchdog import default_policies
from trainer.policy import StepInfo
from trainer.workloads import get_workload


def step_infos(kind: str, n: int = 21_000) -> list[StepInfo]:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    if kind == "decreasing":  # typical: no cut, so dlib's plain count runs on 400 losses every step
        loss = 3.0 - 1e-4 * t + rng.normal(0, 0.02, n)
    elif kind == "heavy-tailed":  # Student-t noise on a decay: both counts can fire, the rank test then runs too
        loss = 0.5 + 3.0 * np.exp(-t / n) + 0.05 * rng.standard_t(2.0, n)
    else:  # worst case: bad batches make the plain count fire, so the robust count runs too
        loss = 0.5 + 3.0 * np.exp(-t / n) + rng.normal(0, 0.03, n)
        loss = np.where(rng.random(n) < 0.03, loss * 1.6, loss)
    grad = 1.0 + rng.normal(0, 0.1, n)
    return [
        StepInfo(step=i, epoch=0, loss=float(v), losses={"total": float(v)}, grad_norm=float(g), lr=1e-4)
        for i, (v, g) in enumerate(zip(loss, grad))
    ]


@pytest.mark.parametrize("kind", ["decreasing", "bad-batches", "heavy-tailed"])
def test_on_step_all_default_policies(benchmark, kind):
    policies = default_policies()
    infos = step_infos(kind)
    for info in infos[:600]:  # fill every window
        for p in policies:
            p.on_step(info)
    stream = iter(infos[600:])  # 20 400 fresh steps: the benchmark never wraps around
    decisions = []

    def one_step():
        info = next(stream)
        for p in policies:
            decisions.extend(p.on_step(info))

    benchmark.pedantic(one_step, rounds=20_000, iterations=1)
    benchmark.extra_info["policies"] = [p.name for p in policies]
    benchmark.extra_info["decisions"] = len(decisions)


@pytest.mark.parametrize("n", [100, 400])
def test_rank_test(benchmark, n):
    """The oscillation policy's Mann-Kendall test alone, on n losses (the policy's history is at
    most 2 x window = 400): its worst case per step, when both counts have fired and it vetoes."""
    from advisor.watchdog.oscillation import rank_probability_decreasing

    values = np.random.default_rng(0).normal(size=n)
    benchmark.pedantic(rank_probability_decreasing, args=(values,), rounds=200, iterations=1)


def test_tiny_s1_train_step(benchmark):
    """The step the overhead is compared with: tiny s1, batch 2, 2 s slices, fp32, CPU."""
    torch.manual_seed(0)
    w = get_workload("s1", size="tiny")
    models = w.build("cpu")
    optimizers = w.make_optimizers(models)
    batch = w.synthetic_batch(2, 2.0, generator=torch.Generator().manual_seed(0))
    w.train_step(models, optimizers, batch, "fp32")  # warm-up (allocator, kernels)
    benchmark.pedantic(w.train_step, args=(models, optimizers, batch, "fp32"), rounds=10, warmup_rounds=1)
