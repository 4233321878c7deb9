"""Samples per second of one epoch: length buckets vs every batch padded to the slice, same data,
same memory budget, paired (A B A B), tiny s1, tiny s2 and full-size s1 on CPU.

    /work/venv/bin/python -m pytest benchmarks/bench_epoch_buckets.py --benchmark-only -q -s

Data: `length_mix` (4-12 s lognormal, median 6 s, plus 2 % at 20-30 s), 48 clips (tiny); the
full-size s1 takes 12 clips of the same mix (one of 20-30 s), an effective batch of 4 and the budget of micro-batch 1 of
the longest clip (its steps take seconds each, and micro-batch 4 of 22 s does not fit a 24 GiB host).
Budget: what micro-batch 4 of the slice (the longest clip) needs under the probe's
emulated accounting (`emulated_peak`): the slice-padded run plans micro-batch 4 for every
batch (what `advisor train` did before buckets); the bucketed run gives each bucket the
largest micro-batch (up to 16) whose emulated peak at its bound fits the same budget. The
effective batch is 16 in both (the loss scale and LR see the same batch). The figure is
training samples per second of wall time over the epoch (the loop's own step events),
and the ratio bucketed / slice-padded per pair.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import pytest
import torch
from length_mix import length_mix, write_prepared

from probe.memory import emulated_peak
from trainer.config import TrainConfig, apply_overrides
from trainer.data.buckets import choose_bounds, make_plan
from trainer.data.loader import PreparedDataset
from trainer.loop import train
from trainer.rundir import RunDir
from trainer.workloads import get_workload

CLIPS, EFFECTIVE, SLICE_MICRO, MAX_MICRO = 48, 16, 4, 16
# full-size s1: 12 clips of the same mix (one of them 20-30 s), effective batch 4, the budget of micro-batch 1 of the
# longest clip (micro-batch 4 of it passed 21 GB of host memory on the 24 GiB development VM)
FULL_CLIPS, FULL_EFFECTIVE, FULL_SLICE_MICRO = 12, 4, 1


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    mix = length_mix(CLIPS, seed=1)
    root = tmp_path_factory.mktemp("mix")
    yield {"tiny": write_prepared(root / "ds", mix), "full": write_prepared(root / "ds12", length_mix(FULL_CLIPS, seed=1))}
    torch.set_num_threads(before)


def peak(workload_name: str, size: str, micro: int, seconds: float) -> int:
    workload = get_workload(workload_name, size=size)
    torch.manual_seed(0)
    models = workload.build("cpu")
    return emulated_peak(workload, models, workload.make_optimizers(models), workload.synthetic_batch(micro, seconds), "fp32", steps=1).peak_bytes


def bucket_plan(workload: str, size: str, dataset: Path, budget: int, effective: int):
    frames = PreparedDataset(dataset, "train").lengths
    bounds = choose_bounds(frames, 8, min_clips=effective)
    micro = []
    for b in bounds:
        fits = [m for m in (1, 2, 4, 8, 16) if m <= min(MAX_MICRO, effective) and peak(workload, size, m, b / 50) <= budget]
        micro.append(max(fits or [1]))
    return make_plan(frames, bounds, micro, effective)


def epoch(workload: str, size: str, dataset: Path, run: Path, buckets, effective: int, slice_micro: int) -> float:
    """One epoch; training samples per second of the loop's wall time."""
    shutil.rmtree(run, ignore_errors=True)
    cfg = apply_overrides(TrainConfig(), {"workload": workload, "size": size, "dataset": str(dataset), "device": "cpu", "epochs": 1,
                                          "batch.micro": slice_micro, "batch.effective": effective, "validation.every_epochs": 0,
                                          "checkpoint.every_steps": 0})
    started = time.perf_counter()
    train(cfg, RunDir(run), buckets=buckets)
    seconds = time.perf_counter() - started
    samples = len(PreparedDataset(dataset, "train")) if buckets is None else sum(-(-len(b.clips) // effective) * effective for b in buckets.buckets)
    return samples / seconds


@pytest.mark.parametrize("workload, size", [("s1", "tiny"), ("s2", "tiny"), ("s1", "full")])
def test_epoch_samples_per_second_bucketed_vs_slice_padded(benchmark, datasets, workload, size, tmp_path):
    dataset = datasets[size]
    effective, slice_micro = (EFFECTIVE, SLICE_MICRO) if size == "tiny" else (FULL_EFFECTIVE, FULL_SLICE_MICRO)
    longest = max(PreparedDataset(dataset, "train").lengths) / 50
    budget = peak(workload, size, slice_micro, longest)
    plan = bucket_plan(workload, size, dataset, budget, effective)
    pairs: list[tuple[float, float]] = []

    def paired() -> None:
        pairs.append((epoch(workload, size, dataset, tmp_path / "slice", None, effective, slice_micro),
                      epoch(workload, size, dataset, tmp_path / "buckets", plan, effective, slice_micro)))

    benchmark.pedantic(paired, rounds=2, iterations=1)
    benchmark.extra_info.update(
        budget_mib=round(budget / 2**20, 1),
        buckets=[(round(b.seconds, 1), len(b.clips), b.micro) for b in plan.buckets],
        slice_samples_per_s=[round(a, 3) for a, _ in pairs],
        bucket_samples_per_s=[round(b, 3) for _, b in pairs],
        speedup_each=[round(b / a, 2) for a, b in pairs],
        speedup_median=round(statistics.median(b / a for a, b in pairs), 2),
    )
