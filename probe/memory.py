"""Memory backends: how much a training step needs, and which backend said so.

measured   CUDA: reset the allocator's peak stats, one warm-up step and a few
           timed steps, synchronise, read the peak reserved/allocated bytes,
           add what the allocator does not see (CUDA context, measured once
           per process). Also yields the step time for throughput.
estimated  the same step traced on the meta device (`MetaEstimator`): live
           storages of parameters, gradients, optimiser state (after its
           first step), activations and autocast copies, with CUDA's autocast,
           attention kernel and foreach AdamW modelled (`probe.meta`); then the
           caching allocator's rounding (`probe.tracker`) and the context and
           cuBLAS workspace (`CardOverhead`) are added.
emulated   real tensors on the CPU under an `EmulatedBudget`: the allocation
           that crosses the budget raises torch.OutOfMemoryError.

Every result is a `Peak` naming its backend. Two numbers are kept apart:
`raw_bytes` (live tensor bytes, what the emulated budget also sees) and
`peak_bytes` (what a card needs: the figure a table row stores).
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass

import torch
from torch import nn

from probe.sizes import CUBLAS_WORKSPACE_BYTES, CUDA_CONTEXT_BYTES
from probe.meta import LOW_PRECISION, CudaOnMeta, autocast_regions, use_foreach
from probe.tracker import EmulatedBudget, ShapeCache, StorageTracker
from trainer.optim import OptimizerSet
from trainer.workload import Batch, Workload, make_scaler

PROBE_SEED = 0  # synthetic batches are seeded: the same cell always traces the same shapes


@dataclass(frozen=True)
class CardOverhead:
    """What a real card needs beyond the caching allocator's blocks: the CUDA
    context and cuBLAS workspace (defaults: `probe.sizes`, from anchors.md)."""

    context_bytes: int = CUDA_CONTEXT_BYTES
    workspace_bytes: int = CUBLAS_WORKSPACE_BYTES

    def __post_init__(self) -> None:
        if self.context_bytes < 0 or self.workspace_bytes < 0:
            raise ValueError(f"card overheads must be >= 0 bytes, got {self}")

    @property
    def total(self) -> int:
        return self.context_bytes + self.workspace_bytes


@dataclass(frozen=True)
class Peak:
    """One step's peak memory from one backend."""

    backend: str  # "measured" | "estimated" | "emulated"
    peak_bytes: int  # what a card needs (table rows store this)
    raw_bytes: int  # live tensor bytes at the peak (measured: allocator's allocated peak)
    reserved_bytes: int  # caching allocator's reserved peak (estimated: its model)
    step_seconds: float | None = None  # mean timed-step time (measured only)


# --- batches and steps -------------------------------------------------------------------


def probe_batch(workload: Workload, batch_size: int, slice_seconds: float, dpo: bool, device: torch.device | str) -> Batch:
    """The synthetic batch the probe runs: seeded, and for s1 DPO with every rejected
    sequence padded to twice the chosen length, the longest GPT-SoVITS's rule makes,
    so a row holds for any batch of that slice length."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    batch = workload.synthetic_batch(batch_size, slice_seconds, dpo, device="cpu", generator=generator)  # s1 DPO: rejected padded to 2T there
    return {k: v.to(device) for k, v in batch.items()}


def meta_batch(template: Batch, batch_size: int) -> Batch:
    """`template`'s tensors with batch dimension `batch_size`, on meta (no data)."""
    return {k: torch.empty((batch_size, *v.shape[1:]), dtype=v.dtype, device="meta") for k, v in template.items()}


def run_step(workload: Workload, models: nn.ModuleDict, optimizers: OptimizerSet, batch: Batch, precision: str, scaler=None) -> None:
    """One training step: `workload.train_step` (no GradScaler on meta: it reads values)."""
    meta = next(iter(batch.values())).device.type == "meta"
    workload.train_step(models, optimizers, batch, precision, None if meta else scaler)


# --- estimated ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """One traced step at one batch size (estimate backend)."""

    batch_size: int
    raw_bytes: int  # peak live tensor bytes
    allocator_bytes: int  # peak of the caching-allocator model


class MetaEstimator:
    """Traces a workload's training step on the meta device, for any cell and batch size.

    Built once per (workload, precision): models and optimisers live on meta,
    and one untracked warm-up step creates the optimiser state, so every trace
    sees the steady state (parameters + state at entry, gradients and
    activations during the step). The optimiser step allocates the same
    whatever the batch, so it is traced once (the first trace) and replayed
    on top of each later trace's state (`StorageTracker.replay_peak`): exact,
    and it halves the cost of s2's 885-tensor step.

    `target="cuda"` models CUDA (autocast, attention kernel, foreach AdamW:
    `probe.meta`); `target="cpu"` runs torch's own meta path, which is what
    the CPU does (fp32 only: torch has no autocast on meta), for comparing
    with the emulated backend."""

    def __init__(self, workload: Workload, precision: str, target: str = "cuda", overhead: CardOverhead | None = None, cuda_dropout: bool = True) -> None:
        if target not in ("cuda", "cpu"):
            raise ValueError(f"unknown estimate target {target!r}: expected cuda or cpu")
        if target == "cpu" and precision != "fp32":
            raise ValueError(f"the cpu estimate target supports fp32 only, not {precision}")
        self.workload, self.precision, self.target = workload, precision, target
        self.cuda_dropout = cuda_dropout  # cuda target: CUDA's bool-mask dropout (False: the CPU's fp32 noise)
        self.overhead = overhead or CardOverhead()
        self.cache = ShapeCache()
        self.models = workload.build("meta")
        self.optimizers = workload.make_optimizers(self.models)
        if target == "cuda":
            use_foreach(self.optimizers)
        self.traces: dict[tuple[float, bool, int], Trace] = {}
        self._templates: dict[tuple[float, bool], Batch] = {}
        self._optimizer_events: tuple[tuple, list] | None = None  # (start state, events) of one optimiser step
        self._step(StorageTracker(shape_cache=self.cache), 1, 1.0, False, warmup=True)  # creates the optimiser state

    def trace(self, batch_size: int, slice_seconds: float, dpo: bool = False) -> Trace:
        """Peak of one step at `batch_size` for one cell (cached)."""
        key = (float(slice_seconds), bool(dpo), int(batch_size))
        cached = self.traces.get(key)
        if cached is None:
            tracker = StorageTracker(shape_cache=self.cache)
            tracker.count(self.models, self.optimizers)
            self._step(tracker, batch_size, slice_seconds, dpo)
            cached = self.traces[key] = Trace(batch_size, tracker.peak_bytes, tracker.peak_allocator_bytes)
        return cached

    def peak(self, batch_size: int, slice_seconds: float, dpo: bool = False) -> Peak:
        t = self.trace(batch_size, slice_seconds, dpo)
        return Peak("estimated", self.card_bytes(t.allocator_bytes), t.raw_bytes, t.allocator_bytes)

    def card_bytes(self, allocator_bytes: int) -> int:
        """Predicted card peak: allocator model + context + workspace."""
        return allocator_bytes + self.overhead.total

    def _template(self, slice_seconds: float, dpo: bool) -> Batch:
        key = (float(slice_seconds), bool(dpo))
        if key not in self._templates:
            self._templates[key] = probe_batch(self.workload, 2 if dpo else 1, slice_seconds, dpo, "cpu")
        return self._templates[key]

    def _step(self, tracker: StorageTracker, batch_size: int, slice_seconds: float, dpo: bool, warmup: bool = False) -> None:
        template = self._template(slice_seconds, dpo)  # built on the CPU, before tracking starts
        cuda = CudaOnMeta(LOW_PRECISION.get(self.precision), self.cuda_dropout) if self.target == "cuda" else None
        for module in self.models.modules():  # gradient checkpointing (s2 v3/v4's DiT): recompute as traced
            if hasattr(module, "checkpoint_context"):
                module.checkpoint_context = cuda.recompute_contexts if cuda else None
        with cuda or contextlib.nullcontext(), autocast_regions(cuda) if cuda else contextlib.nullcontext(), tracker:
            batch = meta_batch(template, batch_size)  # allocated inside: counted
            self.zero_grad(warmup)
            self.forward_backward(batch, warmup)
            if warmup:
                self.optimizers.step(drop_grads=self.drop_grads)
            elif self._optimizer_events is None:
                start, tracker.events = tracker.state, []
                self.optimizer_step()
                self._optimizer_events, tracker.events = (start, tracker.events), None
            else:
                tracker.replay_peak(*self._optimizer_events)
            del batch

    # --- what a trainer does around the workload's step (overridden by probe.upstream) ------
    def zero_grad(self, warmup: bool) -> None:
        """Our loop frees every gradient before the step (set_to_none)."""
        self.optimizers.zero_grad()

    def forward_backward(self, batch: Batch, warmup: bool) -> None:
        self.workload.forward_backward(self.models, batch, self.precision, None)  # no GradScaler: it reads values

    drop_grads = True  # our loop drops the gradients after the step (GPT-SoVITS's keep them: probe/upstream.py)

    def optimizer_step(self) -> None:
        """The traced optimiser step (recorded once, replayed on later traces): `OptimizerSet.step`,
        the loop's own (trainer/optim.py)."""
        self.optimizers.step(drop_grads=self.drop_grads)


# --- emulated ----------------------------------------------------------------------------


def emulated_peak(workload: Workload, models: nn.ModuleDict, optimizers: OptimizerSet, batch: Batch, precision: str, budget_bytes: int | None = None, steps: int = 2) -> Peak:
    """Run `steps` training steps on real tensors under an EmulatedBudget (no limit
    when `budget_bytes` is None) and return the live-bytes peak. Parameters,
    gradients, optimiser state and the batch count from the start. Raises
    torch.OutOfMemoryError from the op that crosses the budget."""
    budget = EmulatedBudget(budget_bytes if budget_bytes is not None else 1 << 62)
    budget.count(models, optimizers, batch)
    scaler = make_scaler(precision, next(iter(batch.values())).device)
    with budget:
        for _ in range(steps):
            run_step(workload, models, optimizers, batch, precision, scaler)
    return Peak("emulated", budget.peak_bytes, budget.peak_bytes, budget.peak_allocator_bytes)


# --- measured (CUDA) ---------------------------------------------------------------------


def measured_peak(workload: Workload, models: nn.ModuleDict, optimizers: OptimizerSet, batch: Batch, precision: str, scaler=None, warmup: int = 1, steps: int = 3) -> Peak:
    """Peak of a real CUDA step: reset peak stats, `warmup` steps, `steps` timed steps,
    synchronise, read the allocator's peaks and add the CUDA context
    (`probe.device.cuda_context_bytes`). Raises torch.OutOfMemoryError like CUDA does."""
    from probe.device import cuda_context_bytes

    device = next(iter(batch.values())).device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        run_step(workload, models, optimizers, batch, precision, scaler)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        run_step(workload, models, optimizers, batch, precision, scaler)
    torch.cuda.synchronize(device)
    step_seconds = (time.perf_counter() - start) / steps
    reserved = torch.cuda.max_memory_reserved(device)
    allocated = torch.cuda.max_memory_allocated(device)
    context = cuda_context_bytes(device.index or 0)
    return Peak("measured", reserved + context, allocated, reserved, step_seconds)


def release_memory(device: torch.device | str) -> None:
    """Between trials: drop garbage and, on CUDA, return cached blocks to the driver."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
