"""CPU cross-check: live bytes of one real training step beside the estimator's trace.

    python -m pytest benchmarks/bench_crosscheck.py --benchmark-only -q -s

For each cell (full-size models, 10 s slices, fp32, batch 1 and 2), one
training step runs on real CPU tensors under the emulated budget (no limit:
it only counts live storages, `probe.tracker`), after a warm-up step so the
optimiser state exists, and the estimator traces the same step on meta with
the same kernel choices (`MetaEstimator(target="cpu")`: the CPU's attention
kernel and dropout, not the CUDA ones). Error = (estimate - real) / real of
the peak live bytes; target within 2 %. The CUDA modelling on top (fused
attention, bool dropout masks, autocast, foreach AdamW) is what
benchmarks/gpu/validate.sh checks on a GPU. Printed per cell and kept in
each benchmark's extra_info; results: benchmarks/results/crosscheck.md.
"""

from __future__ import annotations

import pytest
import torch

from probe.memory import MetaEstimator, emulated_peak, probe_batch, run_step
from trainer.workloads import get_workload

MIB = 2**20
SECONDS = 10.0
CELLS = [
    ("s1", {"attention": "sdpa"}, False),
    ("s1", {"attention": "sdpa"}, True),
    ("s1", {"attention": "gpt_sovits"}, False),
    ("s2", {}, False),
]


def real_peak(workload, batch_size: int, dpo: bool) -> int:
    torch.manual_seed(0)
    models = workload.build("cpu")
    optimizers = workload.make_optimizers(models)
    batch = probe_batch(workload, batch_size, SECONDS, dpo, "cpu")
    run_step(workload, models, optimizers, batch, "fp32")  # optimiser state from here on
    return emulated_peak(workload, models, optimizers, batch, "fp32", steps=1).raw_bytes


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize(("name", "options", "dpo"), CELLS, ids=["s1", "s1-dpo", "s1-gpt_sovits", "s2"])
def test_live_bytes_real_cpu_step_vs_estimate(benchmark, name, options, dpo, batch_size):
    torch.set_num_threads(1)
    workload = get_workload(name, "full", **options)
    real = benchmark.pedantic(real_peak, args=(workload, batch_size, dpo), rounds=1, iterations=1)
    estimate = MetaEstimator(workload, "fp32", target="cpu").trace(batch_size, SECONDS, dpo).raw_bytes
    error = (estimate - real) / real
    benchmark.extra_info.update(real_mib=round(real / MIB, 1), estimate_mib=round(estimate / MIB, 1), error=round(error, 5))
    print(f"\n{name} {options.get('attention', '')} {'dpo ' if dpo else ''}B={batch_size}: real {real / MIB:.1f} MiB, estimate {estimate / MIB:.1f} MiB, error {error:+.3%}")
    assert abs(error) <= 0.02
