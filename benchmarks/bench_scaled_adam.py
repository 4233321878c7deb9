"""The s1 optimiser step alone, full size (77.6 M parameters), CPU: AdamW (recipe advisor)
against ScaledAdam (recipe gpt-sovits), same random gradients.

    python -m pytest benchmarks/bench_scaled_adam.py --benchmark-only
Results: benchmarks/results/scaled_adam.md
"""

import pytest
import torch

from trainer.workloads.s1 import S1Workload


@pytest.mark.parametrize("recipe", ["advisor", "gpt-sovits"])
def test_optimizer_step(benchmark, recipe):
    torch.manual_seed(0)
    w = S1Workload(recipe=recipe)
    models = w.build("cpu")
    opt = w.make_optimizers(models)["gpt"]
    for p in models.parameters():
        p.grad = 1e-3 * torch.randn_like(p)
    opt.step()  # warm-up: creates the state
    benchmark.pedantic(opt.step, rounds=3, iterations=1)
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor))
    benchmark.extra_info["state_MiB"] = round(state_bytes / 2**20, 1)
