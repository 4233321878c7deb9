"""Estimate backend speed: one traced step, one cell, the whole default table.

    /work/venv/bin/python -m pytest benchmarks/bench_probe.py --benchmark-only -q

Targets (2-core CPU, no GPU): a full-size s1 step at 10 s slices and batch 8
traced in <= 2 s (median); the default estimated table (`advisor probe`: s1
and s2, 5/10/15/30 s, DPO off/on, 8 card tiers) in <= 2 minutes.
Results: benchmarks/results/probe.md.
"""

from __future__ import annotations

import pytest

from probe.memory import MetaEstimator
from probe.runner import DEFAULT_TIERS_GB, Probe, ProbeConfig
from probe.search import Trials, search_tiers
from trainer.workloads import get_workload

GIB = 1024**3


@pytest.fixture(scope="module")
def s1_estimator():
    return MetaEstimator(get_workload("s1", "full"), "fp16")


def test_trace_s1_full_10s_batch8_cold(benchmark):
    """A fresh estimator each round: build on meta, warm-up step, then the trace."""

    def cold():
        return MetaEstimator(get_workload("s1", "full"), "fp16").trace(8, 10.0)

    result = benchmark.pedantic(cold, rounds=5, iterations=1)
    assert result.raw_bytes > 0


def test_trace_s1_full_10s_batch8_warm(benchmark, s1_estimator):
    """The same estimator traced again (what the probe does per trial): shapes cached."""

    def warm():
        s1_estimator.traces.clear()
        return s1_estimator.trace(8, 10.0)

    result = benchmark.pedantic(warm, rounds=10, iterations=1, warmup_rounds=1)
    assert result.raw_bytes > 0


@pytest.mark.parametrize(("name", "dpo"), [("s1", False), ("s1", True), ("s2", False)])
def test_one_cell_10s_all_tiers(benchmark, name, dpo):
    """One cell (10 s slices), all 8 tiers, fresh estimator: what a cell costs in `advisor probe`."""
    budgets = [int(g * GIB * 0.9) for g in DEFAULT_TIERS_GB]
    traces = []

    def cell():
        est = MetaEstimator(get_workload(name, "full"), "fp16")
        trials = Trials(lambda b: est.card_bytes(est.trace(b, 10.0, dpo).allocator_bytes))
        answers = search_tiers(trials, budgets)
        traces.append(len(trials.results))
        return answers

    answers = benchmark.pedantic(cell, rounds=3, iterations=1)
    benchmark.extra_info["traces_per_cell"] = traces[-1]
    assert answers == sorted(answers)


def test_default_estimated_table(benchmark, tmp_path):
    """`advisor probe` on a CPU machine: the whole default table, once."""

    def whole():
        out = tmp_path / "t.yaml"
        out.unlink(missing_ok=True)
        return Probe(ProbeConfig(precision="fp16", backend="estimated"), out).run()

    table = benchmark.pedantic(whole, rounds=1, iterations=1)
    assert sum(len(t.rows) for t in table.tables) == 12 * 8
