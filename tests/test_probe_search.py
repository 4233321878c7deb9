"""Batch search: exact answers on known curves, real OOMs on the emulated backend,
and the physical orderings (longer slices, DPO, less VRAM never allow more)."""

import pytest
import torch

from probe.memory import emulated_peak, probe_batch, run_step
from probe.runner import Probe, ProbeConfig
from probe.search import MAX_BATCH, Trials, largest_batch, search_tiers
from trainer.workloads import get_workload

MIB = 1024**2


def affine(base, per_sample, noise=0):
    return lambda b: base + per_sample * b + (noise * (b * 7919 % 13) // 13)


@pytest.mark.parametrize("budget", [1000, 1099, 1100, 1101, 5000, 123_456, 399_999])
def test_the_answer_is_exact_and_the_gap_is_one(budget):
    peak = affine(1000, 100)
    trials = Trials(peak)
    best = largest_batch(trials, budget)
    expected = max(0, (budget - 1000) // 100)
    assert best == expected < MAX_BATCH
    if best:
        assert trials.results[best] <= budget
    assert trials.results[best + 1] > budget  # batch + 1 was tried and failed


def test_out_of_memory_trials_count_as_not_fitting_and_do_not_stop_the_search():
    def peak(b):
        return None if b > 37 else 100 * b  # the "device" OOMs past 37 before any peak is read

    trials = Trials(peak)
    assert largest_batch(trials, budget=10**9) == 37
    assert trials.results[38] is None


def test_a_budget_below_batch_one_gives_zero():
    trials = Trials(affine(5000, 100))
    assert largest_batch(trials, 4000) == 0
    assert list(trials.results) == [1]


def test_the_limit_caps_the_answer():
    assert largest_batch(Trials(affine(0, 1)), 10**12, limit=64) == 64


def test_tiers_share_trials_and_take_about_two_each():
    calls = []

    def peak(b):
        return 1_500_000_000 + 250_000_000 * b + (b * 7919 % 13) * 1_000_000  # affine + a few MiB of rounding

    budgets = [g * 1024**3 * 9 // 10 for g in (6, 8, 12, 16, 24, 32, 40, 80)]
    answers = search_tiers(Trials(lambda b: calls.append(b) or peak(b)), budgets)
    assert answers == sorted(answers)
    for budget, best in zip(budgets, answers):
        assert peak(best) <= budget < peak(best + 1)
    assert len(calls) <= 2 + 2 * len(budgets) + 4


def test_emulated_search_answer_fits_and_one_more_raises_out_of_memory():
    workload = get_workload("s1", "tiny")
    models = workload.build("cpu")
    optimizers = workload.make_optimizers(models)
    run_step(workload, models, optimizers, probe_batch(workload, 1, 3.0, False, "cpu"), "fp32")  # optimiser state

    def trial(budget):
        def run(b):
            try:
                return emulated_peak(workload, models, optimizers, probe_batch(workload, b, 3.0, False, "cpu"), "fp32", budget)
            except torch.OutOfMemoryError:
                return None
            finally:
                optimizers.zero_grad()

        return lambda b: (lambda p: None if p is None else p.peak_bytes)(run(b))

    budget = 14 * MIB
    best = largest_batch(Trials(trial(budget)), budget)
    assert best >= 1
    emulated_peak(workload, models, optimizers, probe_batch(workload, best, 3.0, False, "cpu"), "fp32", budget)  # fits
    with pytest.raises(torch.OutOfMemoryError):
        emulated_peak(workload, models, optimizers, probe_batch(workload, best + 1, 3.0, False, "cpu"), "fp32", budget)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    config = ProbeConfig(
        precision="fp16",
        backend="estimated",
        workloads=("s1",),
        slice_seconds=(2.0, 4.0, 8.0),
        tiers_bytes=(24 * MIB, 32 * MIB, 48 * MIB, 96 * MIB),
        size="tiny",
        context_bytes=0,
        workspace_bytes=0,
    )
    return Probe(config, tmp_path_factory.mktemp("t") / "tiny.yaml").run().tables[0]


def test_max_batch_never_grows_with_slice_length(tiny_table):
    for dpo in (False, True):
        for tier in {r.vram_bytes for r in tiny_table.rows}:
            by_slice = sorted((r.slice_seconds, r.max_batch_size) for r in tiny_table.rows if r.vram_bytes == tier and r.dpo == dpo)
            batches = [b for _, b in by_slice]
            assert batches == sorted(batches, reverse=True)


def test_max_batch_is_never_larger_with_dpo(tiny_table):
    for r in tiny_table.rows:
        if r.dpo:
            assert r.max_batch_size <= tiny_table.row(r.vram_bytes, r.slice_seconds, False).max_batch_size


def test_max_batch_never_shrinks_with_more_vram(tiny_table):
    for dpo in (False, True):
        for s in (2.0, 4.0, 8.0):
            batches = [r.max_batch_size for r in sorted(tiny_table.rows, key=lambda r: r.vram_bytes) if r.dpo == dpo and r.slice_seconds == s]
            assert batches == sorted(batches)
            assert batches[-1] > batches[0]  # the tiers are far enough apart to differ


def test_estimated_rows_fit_their_tier_less_the_margin_and_say_they_are_estimates(tiny_table):
    for r in tiny_table.rows:
        assert r.source == "estimated" and r.samples_per_second is None
        assert r.recommended_batch_size == r.max_batch_size
        if r.max_batch_size:
            assert r.peak_bytes <= r.vram_bytes * 0.9
            assert "estimate" in r.note
