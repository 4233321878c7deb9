"""The s1 optimiser step alone, full size (77.6 M parameters), CPU: AdamW (recipe advisor)
against ScaledAdam (recipe gpt-sovits), same random gradients, paired: each round times one
AdamW step, then one ScaledAdam step (A B A B ...), so both see the same machine load.

    python -m pytest benchmarks/bench_scaled_adam.py --benchmark-only -q
Results: benchmarks/results/scaled_adam.md
"""

import statistics
import time

import torch

from trainer.workloads.s1 import S1Workload

ROUNDS = 5


def optimizer(recipe: str):
    torch.manual_seed(0)
    w = S1Workload(recipe=recipe)
    models = w.build("cpu")
    opt = w.make_optimizers(models)["gpt"]
    for p in models.parameters():
        p.grad = 1e-3 * torch.randn_like(p)
    opt.step()  # warm-up: creates the state
    return opt


def timed(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def test_optimizer_steps_paired(benchmark):
    adamw, scaled = optimizer("advisor"), optimizer("gpt-sovits")
    pairs: list[tuple[float, float]] = []
    benchmark.pedantic(lambda: pairs.append((timed(adamw.step), timed(scaled.step))), rounds=ROUNDS, iterations=1)
    ratios = [b / a for a, b in pairs]
    benchmark.extra_info.update(
        threads=torch.get_num_threads(),
        adamw_s=[round(a, 3) for a, _ in pairs],
        scaled_adam_s=[round(b, 3) for _, b in pairs],
        adamw_min_median=(round(min(a for a, _ in pairs), 3), round(statistics.median(a for a, _ in pairs), 3)),
        scaled_adam_min_median=(round(min(b for _, b in pairs), 3), round(statistics.median(b for _, b in pairs), 3)),
        ratio_each=[round(r, 2) for r in ratios],
        ratio_median=round(statistics.median(ratios), 2),
    )
