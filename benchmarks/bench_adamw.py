"""AdamW's step on the CPU, full-size s1 (77.6 M parameters): the per-tensor loop (torch's CPU
default before) against foreach (`trainer.optim.adamw_kernel` off CUDA), paired A B A B.

    python -m pytest benchmarks/bench_adamw.py --benchmark-only -q

Results: benchmarks/results/buckets.md. On CUDA the workloads use fused AdamW
(one kernel for all parameters), not measurable on this machine.
"""

import statistics
import time

import torch

from trainer.workloads.s1 import S1Workload

ROUNDS = 3


def test_adamw_step_loop_vs_foreach(benchmark):
    torch.manual_seed(0)
    w = S1Workload()
    models = w.build("cpu")
    groups = w.param_groups(models)["gpt"]
    params = [p for g in groups for p in g["params"]]
    for p in params:
        p.grad = 1e-3 * torch.randn_like(p)
    opts = {name: torch.optim.AdamW([{"params": params}], lr=1e-4, foreach=flag) for name, flag in (("loop", False), ("foreach", True))}
    for opt in opts.values():
        opt.step()  # warm-up: creates the state
    times: dict[str, list[float]] = {name: [] for name in opts}

    def one_round():
        for name, opt in opts.items():  # A then B, every round
            start = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - start)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    for name, values in times.items():
        benchmark.extra_info[f"{name}_min_s"] = round(min(values), 3)
        benchmark.extra_info[f"{name}_median_s"] = round(statistics.median(values), 3)
