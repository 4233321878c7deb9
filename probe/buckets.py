"""The bucket plan for a prepared dataset on a card: `advisor plan --data` for `advisor train`.

    report = plan_buckets(8 * 2**30, "s2", "DS", precision="fp16")
    report.plan                 # trainer.data.buckets.BucketPlan (to_json for the run spec)
    report.rows[i].result       # the PlanResult bucket i's micro-batch came from

Each bucket's micro-batch is `probe.plan.plan()`'s recommended batch for the
bucket's bound, so it is exactly `advisor plan --slice-seconds BOUND`'s answer:
a table row for this card and length (measured > estimated), else an estimate
on the fly (imports torch, seconds per bound), else, with estimating off, the
nearest row for a smaller card or a longer slice (never more than fits;
torch-free). The lookups are memoised per bound.

The effective batch (samples per optimiser step, every bucket) is the
caller's, or by default the micro-batch of the bucket holding the median clip
(one pass with buckets of at least 8 clips): the common lengths then run
without accumulation, shorter buckets use at most that many samples a step,
longer ones accumulate. The bounds are then chosen with at least an
effective batch of clips per bucket (trainer/data/buckets.py explains the
programme).

`useful_fraction` is the share of computed frames that are real under this
plan (each micro-batch padded to its own longest, epoch 0);
`slice_useful_fraction` the same when every batch is padded to the dataset's
slice (`advisor train` before buckets). Token positions (s1) scale with
frames (25 tokens a second, 50 frames), so one figure serves both.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

from probe.plan import PlanResult, plan
from trainer.audio_constants import FRAME_RATE
from trainer.data.buckets import MAX_BUCKETS, BucketPlan, choose_bounds, epoch_padding, make_plan, seconds_to_frames

FIRST_PASS_MIN_CLIPS = 8  # buckets of the pass that picks the default effective batch


@dataclass(frozen=True)
class BucketRow:
    seconds: float  # the bound: no batch of this bucket is longer
    clips: int
    micro: int  # micro-batch (at most one process's share of a step)
    accumulation: int
    result: PlanResult  # what `advisor plan` answers for the bound

    def to_json(self) -> dict:
        r = self.result
        return {
            "bound_seconds": self.seconds,
            "clips": self.clips,
            "micro_batch": self.micro,
            "accumulation": self.accumulation,
            "max_batch_size": r.max_batch_size,
            "predicted_peak_bytes": r.predicted_peak_bytes,  # at max_batch_size
            "source": r.source,
            "table": r.table,
            "note": r.note,
        }


@dataclass(frozen=True)
class BucketReport:
    plan: BucketPlan
    rows: tuple[BucketRow, ...]
    vram_bytes: int
    slice_seconds: float
    useful_fraction: float
    slice_useful_fraction: float

    @property
    def fits(self) -> bool:
        return all(r.result.fits for r in self.rows)

    def to_json(self) -> dict:
        return {
            "effective_batch": self.plan.effective,
            "world": self.plan.world,
            "useful_fraction": round(self.useful_fraction, 4),
            "slice_useful_fraction": round(self.slice_useful_fraction, 4),
            "buckets": [r.to_json() for r in self.rows],
            "plan": self.plan.to_json(),
        }


def plan_buckets(
    vram_bytes: int,
    workload: str,
    root,
    dpo: bool = False,
    precision: str = "fp16",
    effective: int | None = None,
    world: int = 1,
    max_buckets: int = MAX_BUCKETS,
    progress: Callable[[str], None] | None = None,
    min_clips: int | None = None,
    **options,
) -> BucketReport:
    """The bucket plan for the training split of the dataset at `root` (see the module docstring);
    buckets of at least `min_clips` clips (default: the effective batch); `options` go to
    `probe.plan.plan` (device_name, attention, tables, allow_estimate, margin)."""
    from probe.longest import train_frames

    slice_seconds, frames = train_frames(root)
    if options.get("tables") is None:
        from probe.table import load_tables

        options["tables"] = load_tables()[0]  # once, not per bound
    lookups: dict[int, PlanResult] = {}

    def ask(bound: int) -> PlanResult:
        if bound not in lookups:
            if progress and options.get("allow_estimate", True):
                progress(f"bucket of {bound / FRAME_RATE:g} s: looking up its micro-batch")
            lookups[bound] = plan(vram_bytes, workload, bound / FRAME_RATE, dpo, precision, **options)
        return lookups[bound]

    if effective is None:
        effective = default_effective(frames, ask, max_buckets, world)
    if effective % world:
        raise ValueError(f"effective batch {effective}: expected a multiple of the {world} processes (equal shares)")
    bounds = choose_bounds(frames, max_buckets, min_clips=effective if min_clips is None else min_clips)
    results = [ask(b) for b in bounds]
    bucket_plan = make_plan(frames, bounds, [max(1, r.recommended_batch_size) for r in results], effective, world)
    rows = tuple(
        BucketRow(b.seconds, len(b.clips), b.micro, bucket_plan.accumulation(i), lookups[b.bound]) for i, b in enumerate(bucket_plan.buckets)
    )
    slice_frames = seconds_to_frames(slice_seconds)
    return BucketReport(
        plan=bucket_plan,
        rows=rows,
        vram_bytes=vram_bytes,
        slice_seconds=slice_seconds,
        useful_fraction=epoch_padding(bucket_plan).useful_fraction,
        slice_useful_fraction=sum(frames) / (len(frames) * max(slice_frames, max(frames))),
    )


def default_effective(frames: list[int], ask: Callable[[int], PlanResult], max_buckets: int, world: int = 1) -> int:
    """The micro-batch of the bucket holding the median clip (buckets of at least 8 clips),
    times the processes: the common lengths run without accumulation."""
    bounds = choose_bounds(frames, max_buckets, min_clips=FIRST_PASS_MIN_CLIPS)
    median = statistics.median_low(frames)
    home = next(b for b in bounds if b >= median)
    return max(1, ask(home).recommended_batch_size) * world


def outlier_cost(report: BucketReport, few: int) -> str:
    """What the `few` longest clips cost under the plan: their bucket(s), micro-batch and
    accumulation, and their share of the epoch's computed frames against their share of clips."""
    plan = report.plan
    frames = sorted(((f, i) for b in plan.buckets for i, f in zip(b.clips, b.frames)), reverse=True)
    homes = sorted({plan.bucket_of(i) for _, i in frames[:few]})
    computed = epoch_padding(plan).by_bucket
    total = sum(computed)
    held = sum(computed[k] for k in homes)
    clips = sum(len(plan.buckets[k].clips) for k in homes)
    where = ", ".join(f"<= {plan.buckets[k].seconds:g} s at micro-batch {plan.micro(k)} x {plan.accumulation(k)}" for k in homes)
    others = sorted({plan.micro(k) for k in range(len(plan)) if k not in homes})
    rest = ""
    if others:
        rest = f"; the other buckets keep micro-batch {others[0]}" + (f"-{others[-1]}" if len(others) > 1 else "")
    their = "their bucket" if len(homes) == 1 else f"their {len(homes)} buckets"
    return (
        f"under the bucket plan {their} ({where}) compute {held / total:.0%} of the epoch's frames "
        f"for {clips / plan.clips:.0%} of its clips{rest}"
    )


def fraction_line(report: BucketReport) -> str:
    return (
        f"computed frames that are real: {report.useful_fraction:.0%} "
        f"(every batch padded to the {report.slice_seconds:g} s slice: {report.slice_useful_fraction:.0%})"
    )


def describe(report: BucketReport) -> list[str]:
    """Lines for `advisor plan --data`: one per bucket, then the padding."""
    from probe.sizes import format_size

    p = report.plan
    lines = [f"bucket plan: {len(p)} length bucket(s), {p.effective} samples per optimiser step in every bucket"]
    for row in report.rows:
        r = row.result
        if not r.fits:
            peak = "batch 1 does not fit"
        elif r.predicted_peak_bytes:
            at = "" if row.micro == r.max_batch_size else f" at batch {r.max_batch_size}"
            peak = f"peak {format_size(r.predicted_peak_bytes)}{at} of {format_size(report.vram_bytes)}"
        else:
            peak = "peak not recorded"
        acc = f" x {row.accumulation}" if row.accumulation > 1 else ""
        lines.append(f"  <= {row.seconds:6.2f} s  {row.clips:5d} clips  micro-batch {row.micro:3d}{acc:5s} {peak} ({r.source})")
    lines.append(fraction_line(report))
    return lines

