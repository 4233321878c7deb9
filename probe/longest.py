"""Plan for a prepared dataset's worst case: its longest clip, not the nominal slice.

Both trainers batch clips of different lengths. GPT-SoVITS pads each batch to
its longest clip (its bucket sampler groups similar lengths), so the batch
holding the dataset's longest clip is the one that runs out of memory
mid-epoch (its issues #1630, #1790): the plan is made for that clip's length.
`advisor train`'s loader pads every batch to the dataset's slice length, so
there the slice is the worst case (never shorter than the longest clip).

When a few clips are much longer than the rest, the batch they allow is
small for everyone: `plan_for_dataset` then names them and suggests cutting
them with `advisor slice`. Given the dataset's bucket plan
(probe/buckets.py: `advisor train` batches clips of similar length, each
bucket with its own micro-batch), it says instead what they cost under that
plan: their bucket's micro-batch and share of the epoch's computed frames;
cutting them is advised only when their bucket does not fit at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from probe.plan import PlanResult, plan

if TYPE_CHECKING:
    from probe.buckets import BucketReport

FEW_CLIPS = 0.05  # "a few": the longest 5 % of the clips (at least one)
SMALL_BATCH_RATIO = 1.5  # warn when the rest would allow this many times the batch
NAMED = 5  # clips named in the warning


@dataclass(frozen=True)
class Clip:
    id: str
    seconds: float
    audio: str | None


@dataclass(frozen=True)
class DatasetPlan:
    result: PlanResult  # the plan for `planned_seconds`
    dataset: str
    clips: int
    longest: Clip
    planned_seconds: float  # what the plan assumed (gpt-sovits: the longest clip; advisor: the slice)
    warning: str | None = None

    def to_json(self) -> dict:
        return {
            **self.result.to_json(),
            "dataset": self.dataset,
            "clips": self.clips,
            "longest_clip": {"id": self.longest.id, "seconds": self.longest.seconds, "audio": self.longest.audio},
            "planned_seconds": self.planned_seconds,
            "warning": self.warning,
        }


def train_clips(root: str | Path) -> tuple[float, list[Clip]]:
    """(slice seconds, training clips longest first) from a prepared dataset's manifest."""
    from trainer.data.manifest import read_manifest

    manifest = read_manifest(root)
    clips = []
    for i, c in enumerate(manifest.get("clips") or []):
        seconds = c.get("seconds") if isinstance(c, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"{Path(root) / 'manifest.json'}: clips[{i}].seconds: expected a positive number of seconds, got {seconds!r}")
        if "train" in (c.get("splits") or ["train"]):
            clips.append(Clip(str(c.get("id")), float(seconds), c.get("audio")))
    if not clips:
        raise ValueError(f"{Path(root) / 'manifest.json'}: no training clips to plan for")
    return float(manifest["slice_seconds"]), sorted(clips, key=lambda c: -c.seconds)


def train_frames(root: str | Path) -> tuple[float, list[int]]:
    """(slice seconds, each training clip's length in 50 Hz frames), in the order
    `PreparedDataset(root, "train")` indexes them (the bucket plan's clip indices)."""
    from trainer.data.manifest import read_manifest

    manifest = read_manifest(root)
    frames = [int(c["frames"]) for c in manifest["clips"] if "train" in c["splits"]]
    if not frames:
        raise ValueError(f"{Path(root) / 'manifest.json'}: no training clips to plan for")
    for i, f in enumerate(frames):
        if f < 1:
            raise ValueError(f"{Path(root) / 'manifest.json'}: training clip {i} has {f} frames, expected at least 1")
    return float(manifest["slice_seconds"]), frames


def planned_length(trainer: str, slice_seconds: float, longest: float) -> float:
    """The sequence length a batch can reach: GPT-SoVITS pads to the longest clip in
    the batch, our loader to the slice."""
    return longest if trainer == "gpt-sovits" else max(slice_seconds, longest)


def plan_for_dataset(
    vram_bytes: int, workload: str, root: str | Path, dpo: bool = False, precision: str = "fp16", trainer: str = "advisor",
    buckets: "BucketReport | None" = None, **options,
) -> DatasetPlan:
    """`plan()` for the dataset's worst batch, with a warning when its few longest
    clips force a small batch on all, or with `buckets`, what they cost under that
    bucket plan (see the module docstring)."""
    slice_seconds, clips = train_clips(root)
    return plan_for_clips(vram_bytes, workload, slice_seconds, clips, str(root), dpo, precision, trainer, buckets, **options)


def plan_for_clips(
    vram_bytes: int, workload: str, slice_seconds: float, clips: list[Clip], dataset: str, dpo: bool = False, precision: str = "fp16",
    trainer: str = "advisor", buckets: "BucketReport | None" = None, **options,
) -> DatasetPlan:
    """`plan_for_dataset` for clips already in hand (`clips` longest first; `advisor check`
    passes the clips of a .list or an experiment folder, which have no manifest)."""
    longest = clips[0]
    seconds = planned_length(trainer, slice_seconds, longest.seconds)
    result = plan(vram_bytes, workload, seconds, dpo, precision, trainer=trainer, **options)
    few = max(1, int(len(clips) * FEW_CLIPS))
    warning = None
    if len(clips) > few:
        rest = clips[few].seconds  # the longest clip once the few are cut
        if rest < seconds:
            alt = plan(vram_bytes, workload, planned_length(trainer, rest, rest), dpo, precision, trainer=trainer, **options)
            if alt.max_batch_size >= max(2, SMALL_BATCH_RATIO * result.max_batch_size):
                named = ", ".join(f"{c.audio or c.id} ({c.seconds:.1f} s)" for c in clips[: min(few, NAMED)])
                more = f" and {few - NAMED} more" if few > NAMED else ""
                warning = _bucket_warning(buckets, few, rest, named + more) if buckets is not None else (
                    f"{few} clip(s) longer than {rest:.1f} s hold every batch to {result.max_batch_size} "
                    f"(without them: {alt.max_batch_size}): {named}{more}; cut them with `advisor slice --seconds {math.floor(rest) or 1}` and prepare again"
                )
    return DatasetPlan(result, dataset, len(clips), longest, seconds, warning)


def _bucket_warning(buckets: "BucketReport", few: int, rest: float, named: str) -> str:
    """The long clips under the bucket plan: what they cost, and slicing only when their bucket cannot run."""
    from probe.buckets import outlier_cost

    line = f"{few} clip(s) longer than {rest:.1f} s: {named}; {outlier_cost(buckets, few)}"
    if not buckets.fits:
        line += f"; their bucket does not fit even at micro-batch 1: cut them with `advisor slice --seconds {math.floor(rest) or 1}` and prepare again"
    return line
