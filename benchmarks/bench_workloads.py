"""One training step of each workload on CPU: batch 1, 5 s slices, fp32, tiny and full size.

    python -m pytest benchmarks/bench_workloads.py --benchmark-only
Results: benchmarks/results/workloads.md
"""

import pytest
import torch

from trainer.workloads import get_workload

SLICE_SECONDS = 5.0


@pytest.mark.parametrize("size", ["tiny", "full"])
@pytest.mark.parametrize("name", ["s1", "s2"])
def test_train_step(benchmark, name, size):
    torch.manual_seed(0)
    workload = get_workload(name, size=size)
    models = workload.build("cpu")
    optimizers = workload.make_optimizers(models)
    batch = workload.synthetic_batch(1, SLICE_SECONDS, generator=torch.Generator().manual_seed(0))
    workload.train_step(models, optimizers, batch, "fp32")  # warm-up: optimiser state, kernels
    rounds = 5 if size == "tiny" else 3
    losses = benchmark.pedantic(workload.train_step, args=(models, optimizers, batch, "fp32"), rounds=rounds, iterations=1)
    assert torch.isfinite(torch.tensor(losses["total"]))
