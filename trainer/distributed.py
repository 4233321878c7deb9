"""Data-parallel training over torch.distributed: setup, rank gating, the collectives the loop needs.

Launch (one process per GPU; gloo on CPU, NCCL on CUDA):

    torchrun --nproc-per-node 2 -m advisor.child RUN_DIR

`setup()` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; without them it is
one process and every collective is the identity. Only rank 0 writes events,
checkpoints and exports (`is_main`).

How gradients are synchronised, and why not the DistributedDataParallel wrapper:
every micro-step runs locally with no communication at all (what DDP's
`no_sync()` gives on the non-final micro-steps), then the ranks agree on an OOM
flag (all-reduce MAX), and only then are the accumulated gradients averaged in
one bucketed all-reduce (`average_gradients`). DDP's wrapper instead starts its
all-reduces from hooks during the final micro-step's backward, so a rank that
runs out of memory in that micro-step would leave the other ranks waiting
inside an all-reduce it never joins: the watchdog's "halve the micro-batch and
retry the same batch" needs every rank to reach the OOM vote before any
gradient is exchanged. (The wrapper would also hide the workloads' own model
methods, such as s2's `generator.synthesize`, behind `.module`.) The cost is
the overlap of communication with the last backward. Parameters are broadcast
from rank 0 at start and buffers (s2's quantiser EMA codebook) after every
optimiser step, as DDP does with `broadcast_buffers`. The result equals DDP's:
the mean of the per-rank gradients, once per optimiser step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as td
from torch import nn

BUCKET_BYTES = 25 << 20  # gradients are all-reduced in flat buckets of ~25 MiB (DDP's default)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    comm_device: str = "cpu"  # where small collective tensors live: cuda:N under NCCL

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- agreement --------------------------------------------------------------------
    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is True on any rank (all-reduce MAX)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.comm_device)
        td.all_reduce(t, op=td.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        td.all_reduce(t, op=td.ReduceOp.SUM)
        return t.tolist()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (decisions, the checkpoint to load)."""
        if not self.enabled:
            return obj
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (RNG states for checkpoints)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            td.barrier()

    # --- tensors ----------------------------------------------------------------------
    def broadcast_parameters(self, models: nn.Module) -> None:
        """Make every rank start from rank 0's weights."""
        if self.enabled:
            for p in models.parameters():
                td.broadcast(p.data, src=0)

    def broadcast_buffers(self, models: nn.Module) -> None:
        if self.enabled:
            for b in models.buffers():
                td.broadcast(b, src=0)

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Replace every gradient with its mean over ranks, in flat buckets of one dtype.

        Parameters without a gradient are skipped; the loop runs the same code
        on every rank, so the set with gradients is the same everywhere."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        for bucket in _buckets(grads):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            td.all_reduce(flat, op=td.ReduceOp.SUM)
            flat /= self.world
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def _buckets(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive runs of same-dtype, same-device gradients, each about BUCKET_BYTES."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for g in grads:
        if not buckets or size + g.numel() * g.element_size() > BUCKET_BYTES or (buckets[-1][0].dtype, buckets[-1][0].device) != (g.dtype, g.device):
            buckets.append([])
            size = 0
        buckets[-1].append(g)
        size += g.numel() * g.element_size()
    return buckets


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA), or run alone."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local_rank, f"cuda:{local_rank}" if use_cuda else "cpu")


def teardown() -> None:
    """Leave the process group together: a rank that destroys its gloo context while a
    peer still talks to it can abort that peer at exit ("terminate called ...")."""
    if td.is_available() and td.is_initialized():
        try:
            td.barrier()
        except RuntimeError:
            pass  # a peer is already gone (it crashed): nothing to wait for
        td.destroy_process_group()


def resolve_device(preference: str, dist: Dist) -> torch.device:
    """The device this process trains on: cuda:LOCAL_RANK under torchrun with CUDA."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device: {preference!r} requested but CUDA is not available (use device: cpu)")
    if dist.enabled:
        return torch.device("cuda", dist.local_rank)
    return torch.device(preference if preference != "auto" else "cuda")
