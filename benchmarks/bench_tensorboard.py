"""TensorBoard writer cost per step event (what rank 0 adds to every logged step).

    python -m pytest benchmarks/bench_tensorboard.py --benchmark-only -q

An s2 step event (8 losses, 3 LR groups, 2 gradient norms, memory, speed:
about 22 scalars) through `TensorBoardWriter.write`. Results:
benchmarks/results/startup.md (section "TensorBoard").
"""

from __future__ import annotations

import itertools

from trainer.tensorboard import TensorBoardWriter

GIB = 1024**3


def step_event(step: int) -> dict:
    losses = {k: 1.0 + step * 1e-4 for k in ("total", "d", "g", "g_adv", "g_fm", "mel", "commit", "kl")}
    return {
        "time": 1_795_000_000.0 + step, "kind": "step", "step": step, "epoch": 0, "losses": losses,
        "lr": {"generator/text_encoder": 4e-5, "generator/rest": 1e-4, "discriminator/discriminator": 1e-4},
        "grad_norm": {"generator": 3.0, "discriminator": 1.5}, "samples_per_s": 5.3, "audio_seconds_per_s": 53.0,
        "step_seconds": 1.5, "micro_batch": 4, "accumulation": 2, "peak_memory_bytes": 3 * GIB,
        "memory": {"used_bytes": 2 * GIB, "peak_bytes": 3 * GIB, "budget_bytes": 8 * GIB, "source": "cuda_allocator"},
    }


def test_tensorboard_step_event(benchmark, tmp_path):
    writer = TensorBoardWriter(tmp_path)
    steps = itertools.count(1)
    benchmark.pedantic(lambda: writer.write(step_event(next(steps))), rounds=2000, warmup_rounds=50, iterations=1)
    writer.close()
