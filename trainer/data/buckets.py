"""Length buckets: which clips share a batch, each bucket with its own micro-batch.

    bounds = choose_bounds(frames, max_buckets=8, min_clips=16)    # frames: 50 Hz lengths
    plan = make_plan(frames, bounds, micro=[24, 14, 6], effective=16)
    steps = epoch_plan(plan, seed=0, epoch=3)           # [Step(bucket, clips), ...]
    mine = share(steps[k].clips, rank, plan.world)       # this rank's samples, longest first
    plan = plan.halved(2)                               # an OOM in bucket 2: only its micro halves

Why buckets. A batch costs what its longest clip costs: every clip in it is
padded to that length. Padding every batch to the dataset's slice (or to its
longest clip) computes 3x the real frames on a typical mix and plans the
micro-batch for the 2 % of long clips. Here every clip belongs to one bucket
(the first whose bound is at least its length), a batch holds clips of one
bucket only, and each micro-batch is padded to its own longest clip, never
beyond the bucket's bound. The bound is what the memory plan is made for, so
each bucket gets the micro-batch the tables give for its bound, and the
accumulation that keeps the SAME effective batch (samples per optimiser
step, all ranks) in every bucket: the optimiser, the LR and the loss scale
see one batch size whatever the lengths.

How the bounds are chosen (`choose_bounds`): a dynamic programme over the
sorted lengths. A bucket is a run of consecutive lengths and its bound the
longest of them; its cost is the padding it would compute if every one of its
batches were padded to the bound, sum(bound - length) frames (an upper bound:
real batches pad to their own longest, less). The programme minimises the
total over at most `max_buckets` buckets of at least `min_clips` clips each
(a bucket smaller than the effective batch would repeat clips to fill its one
step every epoch). Bounds are cut only between different lengths, so "the first
bound >= length" puts every clip where the programme did. Among the bucket
counts it then takes the fewest whose padding is within `tolerance` (1 %) of
the real frames of the best: every extra bucket is one more tensor shape for
the allocator and one more short step an epoch, worth it only if it saves
padding. Candidate bounds are the distinct lengths, or 256 quantiles of them
on large datasets (O(K x 256^2) work: milliseconds). The table's slice
lengths play no part: a bound is a real clip length, and the micro-batch for
it comes from the tables or an estimate by the same accounting as `advisor
plan` (probe/buckets.py).

The epoch's plan (`epoch_plan`) is a pure function of (plan, seed, epoch):
each bucket's clips shuffled, sorted by length inside pools of 4 steps' worth
(a step's clips are close in length, 94 % -> 98 % real frames on the
benchmark mix, while which clips share a step still changes every epoch),
cut into effective batches; all steps shuffled, and each step's clips
ordered longest first. A bucket's last batch
is filled up with the first clips of its shuffled order (a few clips seen
twice that epoch, as GPT-SoVITS's bucket sampler fills its last batches), so
every step holds exactly the effective batch: the same samples per update in
every step, and equal shares for DDP ranks (the effective batch is a multiple
of the world size). Rank r takes clips r, r + W, ... (`share`), so every rank gets clips of
the same lengths, and cuts its share in order into the fewest micro-batches
of at most its bucket's size, as equal as possible (`micro_batches`):
consecutive clips of similar length, each padded to its own longest. A resumed run recomputes the plan and
continues at step k.

The plan is a value: `halved(i)` (an OOM halves bucket i's micro-batch, the
others keep theirs), `shifted(n)` (n out-of-memory restarts: every bucket's
micro-batch halved n times) and `capped(m)` return new plans; `to_json` /
`from_json` carry it in the run spec and checkpoints as plain JSON.
Torch-free: `advisor plan` uses it before torch is imported.
"""

from __future__ import annotations

import bisect
import functools
import random
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from trainer.audio_constants import FRAME_RATE
from trainer.sizing import accumulation

VERSION = 1  # of the JSON form
MAX_BUCKETS = 8
TOLERANCE = 0.01  # padding within 1 % of the real frames of the best: fewer buckets win
CANDIDATES = 256  # candidate bounds at most (quantiles of the distinct lengths)
POOL_STEPS = 4  # a bucket's shuffled clips are sorted by length inside pools of this many steps


def seconds_to_frames(seconds: float) -> int:
    """A clip's length in 50 Hz frames (what the manifest's "frames" holds), at least 1."""
    return max(1, round(float(seconds) * FRAME_RATE))


# --- choosing bounds ------------------------------------------------------------------
def choose_bounds(frames: Sequence[int], max_buckets: int = MAX_BUCKETS, min_clips: int = 1, tolerance: float = TOLERANCE) -> list[int]:
    """Bucket bounds in frames, ascending (the last is the longest clip); see the module docstring.

    Fewer buckets than `max_buckets` when more would not cut the padding by more
    than `tolerance` of the real frames, or when `min_clips` allows no more."""
    lengths = sorted(_check_lengths(frames))
    if max_buckets < 1:
        raise ValueError(f"max_buckets: {max_buckets!r}, expected at least 1")
    min_clips = max(1, min(int(min_clips), len(lengths)))  # a dataset smaller than min_clips is one bucket
    cuts = _candidate_cuts(lengths)  # bucket ends: positions after which a bucket may stop
    prefix = [0]
    for x in lengths:
        prefix.append(prefix[-1] + x)

    def cost(i: int, j: int) -> int:  # padding of clips lengths[i:j] padded to lengths[j-1]
        return (j - i) * lengths[j - 1] - (prefix[j] - prefix[i])

    ends = [0] + cuts  # ends[0] = the start
    inf = float("inf")
    best = [[inf] * len(ends) for _ in range(max_buckets + 1)]  # best[k][e]: k buckets covering lengths[:ends[e]]
    back = [[-1] * len(ends) for _ in range(max_buckets + 1)]
    best[0][0] = 0
    for k in range(1, max_buckets + 1):
        for e in range(1, len(ends)):
            for s in range(e):
                if best[k - 1][s] == inf or ends[e] - ends[s] < min_clips:
                    continue
                c = best[k - 1][s] + cost(ends[s], ends[e])
                if c < best[k][e]:
                    best[k][e], back[k][e] = c, s
    last = len(ends) - 1
    feasible = [k for k in range(1, max_buckets + 1) if best[k][last] < inf]
    if not feasible:  # min_clips > len is clamped above, so one bucket is always feasible
        raise AssertionError("no bucket count is feasible")
    floor = min(best[k][last] for k in feasible)
    slack = tolerance * prefix[-1]
    k = next(k for k in feasible if best[k][last] <= floor + slack)
    bounds, e = [], last
    while k:
        bounds.append(lengths[ends[e] - 1])
        e, k = back[k][e], k - 1
    return sorted(bounds)


def _candidate_cuts(lengths: list[int]) -> list[int]:
    """Positions j (1..n) where a bucket may end: after the last of a run of equal lengths;
    on large datasets the CANDIDATES quantiles of those (the last always included)."""
    n = len(lengths)
    cuts = [j for j in range(1, n + 1) if j == n or lengths[j] != lengths[j - 1]]
    if len(cuts) > CANDIDATES:
        step = len(cuts) / CANDIDATES
        cuts = sorted({cuts[min(len(cuts) - 1, int((i + 1) * step) - 1)] for i in range(CANDIDATES)} | {n})
    return cuts


def assign(frames: Sequence[int], bounds: Sequence[int]) -> list[int]:
    """The bucket of each clip: the first whose bound is >= its length. ValueError for a
    clip longer than the last bound or bounds not strictly ascending."""
    bounds = list(bounds)
    if not bounds or any(b <= a for a, b in zip(bounds, bounds[1:])) or bounds[0] < 1:
        raise ValueError(f"bucket bounds {bounds!r}: expected positive frame counts, strictly ascending")
    out = []
    for i, f in enumerate(_check_lengths(frames)):
        b = bisect.bisect_left(bounds, f)
        if b == len(bounds):
            raise ValueError(f"clip {i} is {f} frames, longer than the last bucket bound ({bounds[-1]} frames)")
        out.append(b)
    return out


def _check_lengths(frames: Sequence[int]) -> list[int]:
    lengths = list(frames)
    if not lengths:
        raise ValueError("bucketing needs at least one clip")
    for i, f in enumerate(lengths):
        if isinstance(f, bool) or not isinstance(f, int) or f < 1:
            raise ValueError(f"clip {i}: length {f!r}, expected a positive number of frames")
    return lengths


# --- the plan -------------------------------------------------------------------------
@dataclass(frozen=True)
class Bucket:
    bound: int  # frames (50 Hz): no batch of this bucket is padded beyond it
    clips: tuple[int, ...]  # dataset indices, ascending
    frames: tuple[int, ...]  # their lengths, in the same order
    micro: int  # samples per forward/backward on each process

    @property
    def seconds(self) -> float:
        return self.bound / FRAME_RATE


@dataclass(frozen=True)
class BucketPlan:
    buckets: tuple[Bucket, ...]  # ascending bounds
    effective: int  # samples per optimiser step over all processes, the same in every bucket
    world: int = 1  # processes (DDP ranks)

    def __post_init__(self) -> None:
        if not self.buckets:
            raise ValueError("a bucket plan needs at least one bucket")
        for name, value in (("effective", self.effective), ("world", self.world)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"bucket plan {name}: {value!r}, expected an integer >= 1")
        if self.effective % self.world:
            raise ValueError(f"bucket plan effective: {self.effective} samples cannot be shared equally by {self.world} processes (expected a multiple)")
        seen: set[int] = set()
        for i, b in enumerate(self.buckets):
            if isinstance(b.micro, bool) or not isinstance(b.micro, int) or b.micro < 1:
                raise ValueError(f"buckets[{i}].micro: {b.micro!r}, expected an integer >= 1")
            if len(b.clips) != len(b.frames) or not b.clips:
                raise ValueError(f"buckets[{i}]: expected as many frame counts as clips, at least one")
            if i and b.bound <= self.buckets[i - 1].bound:
                raise ValueError(f"buckets[{i}].bound: {b.bound} frames, expected more than the previous bucket's {self.buckets[i - 1].bound}")
            if max(b.frames) > b.bound:
                raise ValueError(f"buckets[{i}]: a clip of {max(b.frames)} frames is longer than its bound {b.bound}")
            if seen & set(b.clips):
                raise ValueError(f"buckets[{i}]: clip {min(seen & set(b.clips))} is in two buckets")
            seen |= set(b.clips)

    def __len__(self) -> int:
        return len(self.buckets)

    @property
    def clips(self) -> int:
        return sum(len(b.clips) for b in self.buckets)

    def accumulation(self, i: int) -> int:
        """Micro-steps per optimiser step on each process in bucket i (`trainer.sizing.accumulation`)."""
        return accumulation(self.effective, self.buckets[i].micro, self.world)

    def micro(self, i: int) -> int:
        return self.buckets[i].micro

    def bucket_of(self, clip: int) -> int:
        """The bucket holding dataset clip `clip` (KeyError if none)."""
        if clip not in self._where:
            raise KeyError(f"clip {clip} is in no bucket")
        return self._where[clip]

    @functools.cached_property
    def _where(self) -> dict[int, int]:
        return {i: k for k, b in enumerate(self.buckets) for i in b.clips}

    # new plans: the plan itself never changes
    def with_micro(self, i: int, micro: int) -> "BucketPlan":
        """Bucket i at micro-batch `micro` (at most what one process's share of a step needs)."""
        micro = min(micro, self.effective // self.world)
        return replace(self, buckets=tuple(replace(b, micro=micro) if k == i else b for k, b in enumerate(self.buckets)))

    def halved(self, i: int) -> "BucketPlan":
        """An out-of-memory error in bucket i: its micro-batch halved (at least 1), the others unchanged.
        At micro-batch 1 the plan comes back equal: nothing left to halve."""
        return self.with_micro(i, max(1, self.buckets[i].micro // 2))

    def capped(self, micro: int) -> "BucketPlan":
        """Every bucket at micro-batch `micro` at most."""
        if micro < 1:
            raise ValueError(f"micro-batch cap {micro!r}: expected at least 1")
        return replace(self, buckets=tuple(replace(b, micro=min(b.micro, micro)) for b in self.buckets))

    def shifted(self, restarts: int) -> "BucketPlan":
        """After `restarts` out-of-memory restarts: every bucket's micro-batch halved that many
        times (`micro >> restarts`, at least 1), as the run spec caps a single micro-batch."""
        if restarts < 0:
            raise ValueError(f"restarts {restarts!r}: expected at least 0")
        return replace(self, buckets=tuple(replace(b, micro=max(1, b.micro >> restarts)) for b in self.buckets))

    def with_effective(self, effective: int) -> "BucketPlan":
        """The same buckets with another effective batch (micro-batches capped at the new share)."""
        share = max(1, effective // self.world)
        return BucketPlan(tuple(replace(b, micro=min(b.micro, share)) for b in self.buckets), effective, self.world)

    # plain JSON (run spec, checkpoints)
    def to_json(self) -> dict:
        return {
            "version": VERSION,
            "effective": self.effective,
            "world": self.world,
            "buckets": [{"bound_frames": b.bound, "micro": b.micro, "clips": list(b.clips), "frames": list(b.frames)} for b in self.buckets],
        }

    @classmethod
    def from_json(cls, data: object, where: str = "bucket plan") -> "BucketPlan":
        """The plan `to_json` wrote; ValueError naming the field for anything else."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        if data.get("version") != VERSION:
            raise ValueError(f"{where}.version: {data.get('version')!r}, expected {VERSION}")
        buckets = data.get("buckets")
        if not isinstance(buckets, list) or not buckets:
            raise ValueError(f"{where}.buckets: expected a non-empty list")
        made = []
        for i, b in enumerate(buckets):
            if not isinstance(b, dict):
                raise ValueError(f"{where}.buckets[{i}]: expected an object")
            for key in ("clips", "frames"):
                if not isinstance(b.get(key), list) or not all(_is_int(v) for v in b[key]):
                    raise ValueError(f"{where}.buckets[{i}].{key}: expected a list of integers")
            for key in ("bound_frames", "micro"):
                if not _is_int(b.get(key)):
                    raise ValueError(f"{where}.buckets[{i}].{key}: {b.get(key)!r}, expected an integer")
            made.append(Bucket(b["bound_frames"], tuple(b["clips"]), tuple(b["frames"]), b["micro"]))
        for key in ("effective", "world"):
            if not _is_int(data.get(key)):
                raise ValueError(f"{where}.{key}: {data.get(key)!r}, expected an integer")
        try:
            return cls(tuple(made), data["effective"], data["world"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def make_plan(frames: Sequence[int], bounds: Sequence[int], micro: Sequence[int], effective: int, world: int = 1) -> BucketPlan:
    """The plan for clips of `frames` (index i = dataset clip i) in buckets of `bounds`, with
    micro-batch micro[b] for bucket b (capped at one process's share of a step). Buckets
    no clip falls into are left out (with their micro-batch)."""
    if len(micro) != len(bounds):
        raise ValueError(f"{len(micro)} micro-batches for {len(bounds)} buckets: expected one per bucket")
    where = assign(frames, bounds)
    share = max(1, effective // world) if isinstance(effective, int) and isinstance(world, int) and world >= 1 else 1
    buckets = []
    for b, bound in enumerate(bounds):
        members = [i for i, w in enumerate(where) if w == b]
        if members:
            buckets.append(Bucket(int(bound), tuple(members), tuple(frames[i] for i in members), min(int(micro[b]), share)))
    return BucketPlan(tuple(buckets), effective, world)


# --- an epoch ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    bucket: int  # index into plan.buckets
    clips: tuple[int, ...]  # all ranks' samples (exactly the effective batch), longest first; a clip may repeat in a bucket's last step


def epoch_plan(plan: BucketPlan, seed: int, epoch: int) -> list[Step]:
    """The epoch's optimiser steps, the same for the same (plan, seed, epoch); see the module docstring."""
    rng = random.Random(f"buckets:{seed}:{epoch}")  # str seeds hash the same in every process and Python
    steps = []
    for b, bucket in enumerate(plan.buckets):
        length = dict(zip(bucket.clips, bucket.frames))
        order = list(bucket.clips)
        rng.shuffle(order)
        pool = POOL_STEPS * plan.effective
        order = [i for k in range(0, len(order), pool) for i in sorted(order[k : k + pool], key=lambda i: (length[i], i))]
        short = -len(order) % plan.effective
        order += (order * (short // len(order) + 1))[:short]  # fill the last step from the bucket's own clips
        for k in range(0, len(order), plan.effective):
            chunk = order[k : k + plan.effective]
            steps.append(Step(b, tuple(sorted(chunk, key=lambda i: (-length[i], i)))))
    rng.shuffle(steps)
    return steps


def share(clips: Sequence[int], rank: int, world: int) -> list[int]:
    """Rank `rank`'s samples of a step: clips rank, rank + W, ... (equal shares: a step holds
    the effective batch, a multiple of `world`; its clips are longest first, so every rank
    gets the same spread of lengths)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank!r} is outside 0..{world - 1}")
    return list(clips[rank::world])


def micro_batches(clips: Sequence[int], micro: int) -> list[list[int]]:
    """A share cut in order into the fewest micro-batches of at most `micro` clips, as equal as
    possible: 17 clips at micro 16 run as 9 + 8, not 16 + 1 (same memory bound, the same
    number of passes, less padding and no one-sample pass)."""
    if micro < 1:
        raise ValueError(f"micro-batch {micro!r}: expected at least 1")
    parts = -(-len(clips) // micro)
    sizes = [len(clips) // parts + (1 if k < len(clips) % parts else 0) for k in range(parts)]
    starts = [sum(sizes[:k]) for k in range(parts)]
    return [list(clips[a : a + n]) for a, n in zip(starts, sizes)]


@dataclass(frozen=True)
class Padding:
    useful: int  # real frames (or tokens) in the epoch
    computed: int  # frames (or tokens) computed: every micro-batch padded to its own longest
    by_bucket: tuple[int, ...] = ()  # computed, per bucket

    @property
    def useful_fraction(self) -> float:
        return self.useful / self.computed if self.computed else 1.0


def epoch_padding(plan: BucketPlan, seed: int = 0, epoch: int = 0, length: Callable[[int], int] = lambda frames: frames) -> Padding:
    """Useful and computed lengths of one epoch under `plan`, all ranks: each rank's micro-batches
    padded to their own longest. `length` maps frames to the unit counted (s1: tokens)."""
    frames = {i: f for b in plan.buckets for i, f in zip(b.clips, b.frames)}
    useful = 0
    computed = [0] * len(plan)
    for step in epoch_plan(plan, seed, epoch):
        for rank in range(plan.world):
            for mb in micro_batches(share(step.clips, rank, plan.world), plan.micro(step.bucket)):
                sizes = [length(frames[i]) for i in mb]
                useful += sum(sizes)
                computed[step.bucket] += len(sizes) * max(sizes)
    return Padding(useful, sum(computed), tuple(computed))
