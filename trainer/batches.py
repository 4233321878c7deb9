"""Batches for the loop: the epoch's plan of effective batches, this rank's share, validation.

    data = Batches("s2", "DS", slice_seconds=None, dpo=False, effective=8, seed=0, dist=dist)
    plan = data.plan(epoch)                  # effective batches: lists of sample indices
    batch = data.load(epoch, k, device)      # this rank's samples of batch k, one collated Batch

The plan is `bucketed_batches` of the training split for (seed, epoch): a pure
function, so a resumed run recomputes it and continues at batch k. Under DDP
rank r takes samples r, r+W, r+2W... of each effective batch; a last batch
with fewer samples than ranks is dropped so that every rank always has work.
Random choices made while collating (s1 DPO's rejected sequences) come from a
generator seeded by (seed, epoch, k, rank): a retried or resumed batch is the
same batch. The loop splits a loaded batch into micro-batches with
`split_batch`, so the micro-batch size never changes what a batch holds.
"""

from __future__ import annotations

import os
import zlib
from typing import Iterator

import torch

from trainer.data.loader import PreparedDataset, bucketed_batches, collate
from trainer.distributed import Dist
from trainer.workload import Batch


class Batches:
    def __init__(
        self,
        workload_name: str,
        dataset: str | os.PathLike,
        slice_seconds: float | None,
        dpo: bool,
        effective: int,
        seed: int,
        dist: Dist,
    ) -> None:
        self.workload_name, self.dpo, self.effective, self.seed, self.dist = workload_name, dpo, effective, seed, dist
        self.train = PreparedDataset(dataset, "train")
        self.val = PreparedDataset(dataset, "val")
        if len(self.train) == 0:
            raise ValueError(f"{dataset}: the training split is empty")
        self.slice_seconds = self.train.slice_seconds if slice_seconds is None else float(slice_seconds)
        if self.slice_seconds < self.train.slice_seconds:
            raise ValueError(
                f"slice_seconds: {self.slice_seconds:g} s is shorter than the {self.train.slice_seconds:g} s the dataset was prepared with"
            )
        self._lengths = self.train.lengths
        n, world = len(self.train), dist.world
        if n < world:
            raise ValueError(f"{dataset}: {n} training clips cannot feed {world} processes")
        # Drop a short last batch only when some rank would get no sample of it.
        self._drop_last = 0 < n % effective < world
        self._plans: dict[int, list[list[int]]] = {}  # the current epoch's plan
        self.steps_per_epoch = len(self.plan(0))  # the same every epoch: only the order changes

    def plan(self, epoch: int) -> list[list[int]]:
        """Effective batches of training-sample indices for `epoch` (all ranks' samples)."""
        if epoch not in self._plans:
            self._plans = {epoch: bucketed_batches(self._lengths, self.effective, self.seed, epoch, shuffle=True, drop_last=self._drop_last)}
        return self._plans[epoch]

    def load(self, epoch: int, k: int, device: torch.device) -> Batch:
        """This rank's share of effective batch k of `epoch`, collated and on `device`."""
        mine = self.plan(epoch)[k][self.dist.rank :: self.dist.world]
        generator = torch.Generator().manual_seed(_seed(self.seed, epoch, k, self.dist.rank))
        batch = collate(self.workload_name, [self.train[i] for i in mine], self.slice_seconds, self.dpo, generator)
        return {name: t.to(device, non_blocking=True) for name, t in batch.items()}

    def val_batches(self, batch_size: int, device: torch.device, max_batches: int | None = None) -> Iterator[Batch]:
        """This rank's validation batches: the val split in length order, batch i on rank i % W."""
        order = bucketed_batches(self.val.lengths, batch_size, self.seed, 0, shuffle=False) if len(self.val) else []
        order = order[:max_batches] if max_batches is not None else order
        for i, indices in enumerate(order):
            if i % self.dist.world != self.dist.rank:
                continue
            batch = collate(self.workload_name, [self.val[j] for j in indices], self.slice_seconds)  # no DPO: the metric is the CE
            yield {name: t.to(device, non_blocking=True) for name, t in batch.items()}


def _seed(*parts: int) -> int:
    """A 32-bit seed from integers, the same in every process and Python version."""
    return zlib.crc32(",".join(map(str, parts)).encode())
