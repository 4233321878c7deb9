"""s2 v3 / v4 memory against the CPU anchor of GPT-SoVITS's own LoRA step (INTEROP-v3v4.md section 11).

    python -m pytest benchmarks/bench_v3v4.py --benchmark-only -q -s -p no:cacheprovider

1. Estimate: `UpstreamEstimator` (the `--for gpt-sovits` trace) of the full-size
   model, fp32, 10 s clips, batch 1 and 2, with CUDA's attention kernel choice
   (it saves what the CPU's flash kernel saves) and the CPU's fp32 dropout noise,
   against upstream's steady-state live bytes (v4 4632.0 MiB at B=1, +2596.0 per
   sample; v3 4390.3, +2355.8). Target: within 5 %.
2. Real: two training steps of our full-size v4 model on CPU (gpt-sovits recipe:
   upstream's order, zero_grad after the forward), 2 s clip, batch 1, no extra
   passes, peak live storage bytes counted by `probe.tracker` (the emulated backend
   without a limit), against upstream's measured step-2 peak (2324.3 MiB).
Results: benchmarks/results/v3v4.md.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from probe.memory import CardOverhead, emulated_peak, probe_batch
from probe.upstream import UpstreamEstimator, upstream_workload

MIB = 2**20
COUNTS = json.loads((Path(__file__).parents[1] / "tests" / "data" / "gpt-sovits" / "s2_v3v4_lora_counts.json").read_text())


def anchor(version: str, batch: int, seconds: float) -> float:
    cell = next(m for m in COUNTS["memory_cpu_fp32"].values()
                if (m["version"], m["B"], m["seconds"], m["grad_ckpt"], m["extra_passes"]) == (version, batch, seconds, False, "never"))
    return cell["steady_state_peak_MiB"]


@pytest.mark.parametrize("version", ["v4", "v3"])
def test_upstream_estimate_against_the_cpu_anchor(benchmark, version):
    workload = upstream_workload(f"s2-{version}", "full")

    def trace() -> tuple[float, float]:
        est = UpstreamEstimator(workload, "fp32", overhead=CardOverhead(0, 0), cuda_dropout=False)
        return est.trace(1, 10.0).raw_bytes / MIB, est.trace(2, 10.0).raw_bytes / MIB

    one, two = benchmark.pedantic(trace, rounds=1, iterations=1)
    b1, per = anchor(version, 1, 10.0), COUNTS["memory_per_extra_10s_sample_MiB"][version]
    benchmark.extra_info.update(estimate_b1=one, estimate_per_sample=two - one, anchor_b1=b1, anchor_per_sample=per)
    print(f"\n{version} B=1 {one:.1f} MiB vs {b1} ({100 * (one / b1 - 1):+.2f} %); per sample {two - one:.1f} vs {per} ({100 * ((two - one) / per - 1):+.2f} %)")
    assert one == pytest.approx(b1, rel=0.05) and two - one == pytest.approx(per, rel=0.05)


def test_real_cpu_step_against_the_cpu_anchor(benchmark, monkeypatch):
    monkeypatch.setattr(random, "random", lambda: 1.0)  # no extra passes (the anchor's "never")
    torch.set_num_threads(1)
    workload = upstream_workload("s2-v4", "full")
    torch.manual_seed(0)
    models = workload.build("cpu")
    optimizers = workload.make_optimizers(models)
    batch = probe_batch(workload, 1, 2.0, False, "cpu")
    peak = benchmark.pedantic(lambda: emulated_peak(workload, models, optimizers, batch, "fp32", steps=2), rounds=1, iterations=1)
    real, upstream = peak.raw_bytes / MIB, anchor("v4", 1, 2.0)
    est = UpstreamEstimator(workload, "fp32", overhead=CardOverhead(0, 0), cuda_dropout=False).trace(1, 2.0).raw_bytes / MIB
    benchmark.extra_info.update(real=real, anchor=upstream, estimate=est)
    print(f"\nv4 2 s B=1: ours real {real:.1f} MiB, upstream {upstream} ({100 * (real / upstream - 1):+.2f} %), estimate {est:.1f} ({100 * (est / real - 1):+.2f} % of real)")
    assert real == pytest.approx(upstream, rel=0.05)
