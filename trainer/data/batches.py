"""Batches for the loop: the epoch's plan of effective batches, this rank's share, validation.

    data = Batches(workload, "DS", slice_seconds=8.0, dpo=False, effective=8, seed=0, dist=dist)
    plan = data.plan(epoch)                  # effective batches: lists of sample indices
    batch, parts = data.load(epoch, k, device)   # this rank's samples of batch k, collated by the workload

The plan is `bucketed_batches` of the training split for (seed, epoch): a pure
function, so a resumed run recomputes it and continues at batch k. Under DDP
rank r takes samples r, r+W, r+2W... of each effective batch; a last batch
with fewer samples than ranks is dropped so that every rank always has work.
Random choices made while collating (s1 DPO's rejected sequences) come from a
generator seeded by (seed, epoch, k, rank): a retried or resumed batch is the
same batch. The loop splits a loaded batch into micro-batches with
`split_batch`, so the micro-batch size never changes what a batch holds.

GPT-SoVITS's s1 step rule (`upstream_groups=4`, the gpt-sovits recipe without
batch.effective, one process): upstream's batches of `upstream_batch` samples
(bucketed_batches of the epoch), grouped as its trainer steps: after batch_idx 4,
8, ... (the first step of an epoch after 5 batches), and the batches after an
epoch's last step carried into the next epoch's first step (the last epoch's
are never stepped, as upstream). Each step's `parts` are its batches' sizes, so
no micro-batch straddles two of them. The carry makes an epoch's plan depend on
the ones before; it is still a pure function of (seed, epoch).

The effective batch can change mid-run (the OOM policy's "shrink" mode, or a
resume whose config asks for another): `resize(epoch, k, n)` re-plans the
rest of the epoch, batches k.. cut again into batches of n from the same
samples in the same order (the last one shorter; dropped if some rank would
get none), and later epochs are planned with n. The changes are the state
(`state_dict`: [epoch, batch, effective] each, the first at [0, 0]), so every
plan stays a pure function and a resumed run finds the same batch k.

    data.resize(0, 3, 4)                     # from batch 3 of epoch 0 on: 4 samples a step
    data.batches_in(0)                       # len(plan(0)): the loop's end of epoch
"""

from __future__ import annotations

import os
import zlib
from typing import Iterator

import torch

from trainer.data.buckets import BucketPlan, epoch_plan, share
from trainer.data.loader import PreparedDataset, bucketed_batches
from trainer.distributed import Dist
from trainer.workload import Batch, Workload


class Batches:
    def __init__(
        self,
        workload: Workload,
        dataset: str | os.PathLike,
        slice_seconds: float,
        dpo: bool,
        effective: int,
        seed: int,
        dist: Dist,
        upstream_groups: int | None = None,
        upstream_batch: int = 1,
        buckets: BucketPlan | None = None,
    ) -> None:
        self.workload, self.dpo, self.seed, self.dist = workload, dpo, seed, dist
        self.train = PreparedDataset(dataset, "train")
        self.val = PreparedDataset(dataset, "val")
        if len(self.train) == 0:
            raise ValueError(f"{dataset}: the training split is empty")
        if upstream_groups is not None and dist.world > 1:
            upstream_groups = None  # under torchrun: plain effective batches (GPT-SoVITS's DDP sampler is its own)
        self.upstream_groups, self.upstream_batch = upstream_groups, upstream_batch
        self._carry: dict[int, list[list[int]]] = {}  # upstream rule: epoch -> batches carried into epoch + 1
        self.slice_seconds = float(slice_seconds)
        if self.slice_seconds < self.train.slice_seconds:
            raise ValueError(
                f"slice_seconds: {self.slice_seconds:g} s is shorter than the {self.train.slice_seconds:g} s the dataset was prepared with"
            )
        self._lengths = self.train.lengths
        n, world = len(self.train), dist.world
        if n < world:
            raise ValueError(f"{dataset}: {n} training clips cannot feed {world} processes")
        self.buckets = self._checked_buckets(buckets, dataset)  # length buckets: each step one bucket's clips
        effective = self.buckets.effective if self.buckets is not None else effective
        self._check(effective)
        self.changes: list[tuple[int, int, int]] = [(0, 0, effective)]  # (epoch, batch, effective), in the order made
        self._plans: dict[int, tuple[list[list[int]], list[list[int]] | None]] = {}  # the current epoch's (plan, parts)
        self._bucket_of: list[int] = []  # with buckets: the current epoch's bucket of each step
        self._ahead = None  # the Prefetcher of this epoch's next steps (fetch)
        self._ahead_at: tuple[int, int] | None = None  # the (epoch, step) it delivers next
        self.last_wait_s = 0.0  # seconds the last fetch waited for its batch

    @property
    def effective(self) -> int:
        """Samples per optimiser step (all ranks) from now on."""
        return self.changes[-1][2]

    @property
    def steps_per_epoch(self) -> int:
        """Batches in a whole epoch planned with the current effective batch."""
        return self._fresh_length(self.effective)

    def plan(self, epoch: int) -> list[list[int]]:
        """Effective batches of training-sample indices for `epoch` (all ranks' samples).

        The changes in the order they were made: one in an earlier epoch plans this
        epoch afresh with its size; one in this epoch re-cuts the batches from its index."""
        return self._planned(epoch)[0]

    def parts(self, epoch: int, k: int) -> list[int] | None:
        """The sizes of the batches step k is made of (the upstream s1 rule), or None (one batch)."""
        parts = self._planned(epoch)[1]
        return parts[k] if parts is not None else None

    def bucket(self, epoch: int, k: int) -> int | None:
        """The length bucket step k of `epoch` draws from (None without buckets)."""
        if self.buckets is None:
            return None
        self._planned(epoch)
        return self._bucket_of[k]

    def _planned(self, epoch: int) -> tuple[list[list[int]], list[list[int]] | None]:
        if self.buckets is not None:
            if epoch not in self._plans:
                steps = epoch_plan(self.buckets, self.seed, epoch)  # depends on the buckets' clips, not their micro-batches
                self._plans, self._bucket_of = {epoch: ([list(s.clips) for s in steps], None)}, [s.bucket for s in steps]
            return self._plans[epoch]
        if epoch not in self._plans:
            plan, parts = self._first_plan(epoch)
            for e, k, effective in self.changes[1:]:
                if e < epoch:
                    plan, parts = self._fresh_plan(epoch, effective), None
                elif e == epoch:
                    plan = plan[:k] + self._recut(plan[k:], effective)
                    parts = None if parts is None else parts[:k] + [None] * (len(plan) - k)
            if parts is not None:
                parts = [p if p is not None else [len(b)] for p, b in zip(parts, plan)]
            self._plans = {epoch: (plan, parts)}
        return self._plans[epoch]

    def _first_plan(self, epoch: int) -> tuple[list[list[int]], list[list[int]] | None]:
        """The plan before any change: effective batches, or GPT-SoVITS's s1 step groups."""
        if self.upstream_groups is None:
            return self._fresh_plan(epoch, self.changes[0][2]), None
        groups = self._upstream_groups(epoch)
        return [[i for b in g for i in b] for g in groups], [[len(b) for b in g] for g in groups]

    def _upstream_groups(self, epoch: int) -> list[list[list[int]]]:
        """GPT-SoVITS's s1 steps of `epoch`: each a list of its batches (index lists). Upstream
        steps after batch_idx > 0 with batch_idx % 4 == 0 (its first after 5 batches), and the
        batches after an epoch's last step accumulate into the next epoch's first step."""
        every = self.upstream_groups
        carry = self._carried_into(epoch)
        batches = bucketed_batches(self._lengths, self.upstream_batch, self.seed, epoch, shuffle=True)
        ends = list(range(every, len(batches), every))  # batch_idx after which it steps
        groups = [batches[a + 1 if a else 0 : b + 1] for a, b in zip([0] + ends, ends)]
        if groups:
            groups[0] = carry + groups[0]
        return groups

    def _carried_into(self, epoch: int) -> list[list[int]]:
        """Batches of earlier epochs not yet stepped when `epoch` starts (upstream rule)."""
        every = self.upstream_groups
        for e in range(epoch):
            if e in self._carry:
                continue
            before = self._carry.get(e - 1, [])
            batches = bucketed_batches(self._lengths, self.upstream_batch, self.seed, e, shuffle=True)
            ends = list(range(every, len(batches), every))
            self._carry[e] = batches[ends[-1] + 1 :] if ends else before + batches
        return self._carry.get(epoch - 1, [])

    def batches_in(self, epoch: int) -> int:
        return len(self.plan(epoch))

    def total_batches(self, epochs: int) -> int:
        """Batches in epochs 0..epochs-1 (the schedule's length); plans only the epochs a change cuts into."""
        total = 0
        for epoch in range(epochs):
            if any(e == epoch for e, _, _ in self.changes[1:]):
                total += self.batches_in(epoch)
            else:
                effective = next((f for e, _, f in reversed(self.changes) if e < epoch), self.changes[0][2])
                total += self._fresh_length(effective)
        return total

    def resize(self, epoch: int, k: int, effective: int) -> None:
        """From batch k of `epoch` on, `effective` samples per step (the rest of the epoch re-cut).
        A bucketed run keeps its effective batch (every bucket is planned for it): ValueError."""
        if effective == self.effective:
            return
        if self.buckets is not None:
            raise ValueError("batch.effective: a run with length buckets keeps its effective batch (the OOM policy's accumulate mode)")
        self._check(effective)
        self.changes.append((epoch, k, effective))
        self._plans = {}
        self.close()  # the steps loaded ahead were cut for the old effective batch

    def state_dict(self) -> dict:
        state: dict = {"changes": [list(c) for c in self.changes]}
        if self.buckets is not None:
            state["buckets"] = self.buckets.to_json()  # each bucket's micro-batch as the watchdog left it
        return state

    def largest_micro(self) -> int | None:
        """With buckets, the largest bucket's micro-batch (the checkpoint's `micro_batch`); else None."""
        return max(b.micro for b in self.buckets.buckets) if self.buckets is not None else None

    def with_bucket_micro(self, i: int, micro: int) -> None:
        """Bucket i's micro-batch from now on (an OOM in it); the other buckets keep theirs."""
        self.buckets = self.buckets.with_micro(i, micro)

    def load_state_dict(self, state: dict) -> None:
        changes = [(int(e), int(k), int(n)) for e, k, n in state["changes"]]
        if not changes or changes[0][:2] != (0, 0):
            raise ValueError(f"batch plan state: expected changes starting at [0, 0, n], got {state['changes']!r}")
        for _, _, n in changes:
            self._check(n)
        self.changes, self._plans = changes, {}
        self.close()
        saved = state.get("buckets")
        if self.buckets is not None and saved is not None:  # per bucket, never back above what ran out of memory
            old = BucketPlan.from_json(saved, "checkpoint bucket plan")
            if [b.bound for b in old.buckets] == [b.bound for b in self.buckets.buckets]:
                for i, b in enumerate(old.buckets):
                    self.buckets = self.buckets.with_micro(i, min(b.micro, self.buckets.micro(i)))

    def _checked_buckets(self, plan: BucketPlan | None, dataset) -> BucketPlan | None:
        """The plan for this dataset and world (ValueError naming what does not match)."""
        if plan is None:
            return None
        if plan.clips != len(self.train) or max(i for b in plan.buckets for i in b.clips) >= len(self.train):
            raise ValueError(f"bucket plan: made for {plan.clips} training clips, {dataset} has {len(self.train)} (run `advisor train` to plan again)")
        if plan.world != self.dist.world:
            plan = BucketPlan(plan.buckets, plan.effective, self.dist.world)  # ValueError if the effective batch cannot be shared
        return plan

    def _check(self, effective: int) -> None:
        if effective < self.dist.world:
            raise ValueError(f"batch.effective: {effective} samples cannot be shared by {self.dist.world} processes")

    def _drops_last(self, effective: int) -> bool:
        """Drop a short last batch only when some rank would get no sample of it."""
        return 0 < len(self.train) % effective < self.dist.world

    def _fresh_plan(self, epoch: int, effective: int) -> list[list[int]]:
        return bucketed_batches(self._lengths, effective, self.seed, epoch, shuffle=True, drop_last=self._drops_last(effective))

    def _fresh_length(self, effective: int) -> int:
        n = len(self.train)
        if self.buckets is not None:  # every bucket's last step is filled from its own clips
            return sum(-(-len(b.clips) // self.buckets.effective) for b in self.buckets.buckets)
        if self.upstream_groups is not None and len(self.changes) == 1:
            batches = -(-n // self.upstream_batch)
            return len(range(self.upstream_groups, batches, self.upstream_groups))
        return n // effective + (1 if n % effective and not self._drops_last(effective) else 0)

    def _recut(self, batches: list[list[int]], effective: int) -> list[list[int]]:
        """The same samples in the same order, `effective` a batch; a last batch some rank would miss is dropped."""
        order = [i for batch in batches for i in batch]
        cut = [order[k : k + effective] for k in range(0, len(order), effective)]
        if cut and len(cut[-1]) < self.dist.world:
            cut.pop()
        return cut

    def load(self, epoch: int, k: int, device: torch.device) -> tuple[Batch, list[int] | None]:
        """This rank's share of effective batch k of `epoch`, collated by the workload and on
        `device`, and the sizes of the batches it is made of (`parts`)."""
        batch = self.collated(epoch, k)
        return {name: t.to(device, non_blocking=True) for name, t in batch.items()}, self.parts(epoch, k)

    def fetch(self, epoch: int, k: int, device: torch.device) -> tuple[Batch, list[int] | None]:
        """`load`, with the steps after it loaded ahead in background threads (trainer/data/prefetch.py):
        step k of `epoch` on `device`. Asking for any other step than the next one (a retry after an
        OOM, a rollback, a new epoch, a re-plan) starts the threads again from it. `last_wait_s`: the
        seconds this call waited for its batch (0 when loading keeps up)."""
        from trainer.data.prefetch import Prefetcher

        if self._ahead is None or self._ahead_at != (epoch, k) or str(self._ahead.device) != str(torch.device(device)):
            self.close()
            steps = range(k, self.batches_in(epoch))
            later = torch.device(device).type == "cuda" and self.buckets is not None  # the device makes the s2 spectrogram
            finish = self.workload.finish if later else None
            self._ahead = Prefetcher(steps, lambda j: self.collated(epoch, j, later), device, finish=finish)
        batch = next(self._ahead)
        self._ahead_at = (epoch, k + 1)
        self.last_wait_s = self._ahead.last_wait_s
        return batch, self.parts(epoch, k)

    def close(self) -> None:
        """Stop the loader threads (the end of a run; safe to call twice)."""
        if self._ahead is not None:
            self._ahead.close()
        self._ahead, self._ahead_at = None, None

    def collated(self, epoch: int, k: int, later: bool = False) -> Batch:
        """This rank's share of step k of `epoch`, collated on the CPU (what the prefetcher runs):
        padded to the slice, or with buckets to the share's own longest clip (each micro-batch
        is then cut to its own: trainer/data/padding.py `split`)."""
        plan = self.plan(epoch)[k]
        mine = share(plan, self.dist.rank, self.dist.world) if self.buckets is not None else plan[self.dist.rank :: self.dist.world]
        generator = torch.Generator().manual_seed(_seed(self.seed, epoch, k, self.dist.rank))
        slice_seconds = None if self.buckets is not None else self.slice_seconds
        return self.workload.collate([self.train[i] for i in mine], slice_seconds, self.dpo, generator, later=later)

    def val_batches(self, batch_size: int, device: torch.device, max_batches: int | None = None) -> Iterator[Batch]:
        """This rank's validation batches: the val split in length order, batch i on rank i % W."""
        order = bucketed_batches(self.val.lengths, batch_size, self.seed, 0, shuffle=False) if len(self.val) else []
        order = order[:max_batches] if max_batches is not None else order
        for i, indices in enumerate(order):
            if i % self.dist.world != self.dist.rank:
                continue
            batch = self.workload.collate([self.val[j] for j in indices], self.slice_seconds)  # no DPO: the metric is the CE
            yield {name: t.to(device, non_blocking=True) for name, t in batch.items()}


def _seed(*parts: int) -> int:
    """A 32-bit seed from integers, the same in every process and Python version."""
    return zlib.crc32(",".join(map(str, parts)).encode())
