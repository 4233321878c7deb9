"""Length buckets on a realistic mix: the share of computed frames (s2) and token positions (s1) that are real.

    python -m pytest benchmarks/bench_buckets.py --benchmark-only -q

Results: benchmarks/results/buckets.md. The mix (benchmarks/length_mix.py): 1000
clips, 4-12 s lognormal with median 6 s plus 2 % at 20-30 s, prepared at a 30 s
slice. The bucket plan is `advisor plan --data`'s for an 8 GiB card from the
shipped tables (--no-estimate: torch-free, the nearest longer slice's row),
effective batch its default. "Useful" counts real frames (s2: 50 a second) or
token positions (s1: 25 a second) over what is computed, one epoch, all
micro-batches. Compared with what `advisor train` computes today:

- slice: every batch padded to the dataset's slice (s2, and s1's advisor recipe);
- pooled: today's `bucketed_batches` (length-sorted pools of 50 batches) with
  each micro-batch padded to its own longest: the gpt-sovits s1 recipe, which
  trims, and the best today's sampler can do.

The benchmark's timing is the planning itself (manifest, bounds twice, table
lookups, the padding of epoch 0), the tables already loaded.
"""

from __future__ import annotations

import pytest

from length_mix import length_mix
from probe.buckets import plan_buckets
from trainer.data.buckets import epoch_padding, micro_batches, seconds_to_frames
from trainer.data.loader import bucketed_batches
from trainer.data.manifest import FORMAT, VERSION, write_json

CLIPS, SLICE, VRAM = 1000, 30.0, 8 * 2**30
UNIT = {"s2": lambda frames: frames, "s1": lambda frames: frames // 2}  # s1: 25 tokens a second


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    seconds = length_mix(CLIPS, seed=0)
    clips = [
        {"id": f"c{i:04d}", "file": f"clips/c{i:04d}.pt", "seconds": s, "frames": seconds_to_frames(s), "splits": ["train"]}
        for i, s in enumerate(seconds)
    ]
    write_json(root / "manifest.json", {"format": FORMAT, "version": VERSION, "complete": True, "slice_seconds": SLICE, "clips": clips})
    from probe.table import load_tables

    return root, [c["frames"] for c in clips], load_tables()[0]


def pooled_fraction(frames: list[int], effective: int, micro: int, unit) -> float:
    """Today's sampler, each micro-batch of each batch trimmed to its own longest."""
    useful = computed = 0
    for batch in bucketed_batches(frames, effective, seed=0, epoch=0):
        for mb in micro_batches(batch, micro):
            sizes = [unit(frames[i]) for i in mb]
            useful, computed = useful + sum(sizes), computed + len(sizes) * max(sizes)
    return useful / computed


@pytest.mark.parametrize("workload", ["s2", "s1"])
def test_useful_fraction(benchmark, manifest, workload):
    root, frames, tables = manifest
    report = benchmark.pedantic(lambda: plan_buckets(VRAM, workload, root, precision="fp16", tables=tables, allow_estimate=False), rounds=3, iterations=1)
    unit = UNIT[workload]
    bucketed = epoch_padding(report.plan, 0, 0, unit).useful_fraction
    slice_padded = sum(unit(f) for f in frames) / (len(frames) * unit(seconds_to_frames(SLICE)))
    longest = report.rows[-1].micro  # today's micro-batch: planned for the longest batch
    pooled = pooled_fraction(frames, report.plan.effective, longest, unit)
    benchmark.extra_info.update(
        buckets=len(report.plan),
        bounds_s=[r.seconds for r in report.rows],
        micro=[r.micro for r in report.rows],
        accumulation=[r.accumulation for r in report.rows],
        effective=report.plan.effective,
        useful_bucketed=round(bucketed, 4),
        useful_slice_padded=round(slice_padded, 4),
        useful_pooled_trimmed=round(pooled, 4),
    )
    assert bucketed >= 0.9  # the target
