"""One optimiser step of the loop: micro-steps, the OOM retry, gradients, the update.

    accumulate (this rank's share of the effective batch, collated once):
        micro_steps: zero_grad; forward/backward per micro-batch, loss weighted by
                     n x W / total (or whole: the recipe's summed losses); gradients
                     accumulate locally (no collective)
        every rank votes on OOM (all-reduce MAX); on OOM: after_oom
            drop_partial_step; gather the errors; oom event; policies.on_oom
            -> a smaller micro-batch; the SAME samples again
        reduce_output: losses and audio seconds summed over ranks
    average_gradients over ranks (distributed.py); unscale_and_clip (fp16; per optimiser)
    [the loop: policies.on_step, at the LR the schedule set before the micro-steps]
    optimizer_step (unless skipped); GradScaler update; rank 0's buffers broadcast

The update itself is `OptimizerSet`'s (trainer/optim.py: `unscale_and_clip`, `finish`,
`step_early` for the gpt-sovits s2 recipe's discriminator inside the micro-step), the
same functions `Workload.train_step` and the probe run.
"""

from __future__ import annotations

import contextlib
import gc
import math

import torch

from trainer.data import padding
from trainer.guard import MemoryGuard
from trainer.loop.decisions import Watch, apply_decisions
from trainer.loop.metrics import StepOutput
from trainer.loop.parts import Parts, Position
from trainer.optim import OptimizerSet
from trainer.policy import OOMInfo, StepInfo
from trainer.workload import batch_size_of, split_batch


def is_torch_oom(exc: BaseException) -> bool:
    """The default of `train(is_oom=...)`: torch's own out-of-memory error only."""
    return isinstance(exc, torch.OutOfMemoryError)


def accumulate(p: Parts, pos: Position, watch: Watch, memory_guard: MemoryGuard | None) -> tuple[StepOutput | None, str | None]:
    """Forward/backward this rank's share of batch `pos.batch`; returns (output, None) or (None, stop reason).

    On OOM anywhere, every rank drops the partial step, asks the policies, and
    retries with the micro-batch they set: the same samples, or with a smaller
    effective batch ("shrink") the first samples of the same batch, the rest of
    the epoch re-planned."""
    while True:
        batch, parts = p.data.fetch(pos.epoch, pos.batch, p.device)  # loaded ahead in background threads
        total = len(p.data.plan(pos.epoch)[pos.batch])  # samples in the effective batch, all ranks
        sums, error = micro_steps(p, batch, total, watch, memory_guard, parts)
        if not p.dist.any(error is not None):  # every rank votes, so a rank without OOM joins the retry
            return reduce_output(p, batch, sums, total), None
        del batch  # freed before the drop and the retry
        stop = after_oom(p, pos, watch, error)
        if stop:
            return None, stop


def micro_steps(
    p: Parts, batch: dict, total: int, watch: Watch, memory_guard: MemoryGuard | None, parts: list[int] | None = None
) -> tuple[dict[str, float], str | None]:
    """Forward/backward `batch` in micro-batches; returns (sample-weighted loss sums, None) or ({}, OOM error).

    Each micro-batch's loss is weighted by its share of the effective batch
    (n * world / total: the gradient average over ranks then gives the mean over
    all samples), or counts whole where the recipe sums losses (gpt-sovits s1).
    `parts`: the sizes of the batches the step is made of (GPT-SoVITS's s1 batches;
    None: one), each cut into micro-batches of at most `p.micro_batch`."""
    p.optimizers.zero_grad()
    if memory_guard is not None:  # an emulated card holds the weights and optimiser state too
        memory_guard.count(p.models, p.optimizers)
    sums: dict[str, float] = {}
    extra = p.workload.early_steps(p.optimizers, p.scaler) if p.discriminator_first else {}
    try:
        for micro in micro_batches(p, batch, parts):
            n = batch_size_of(micro)
            with memory_guard if memory_guard is not None else contextlib.nullcontext():
                weight = 1.0 if p.recipe.sums_losses else n * p.dist.world / total
                result = p.workload.forward_backward(p.models, micro, p.cfg.precision, p.scaler, weight, **extra)
            for name, value in result.losses.items():
                sums[name] = sums.get(name, 0.0) + value * n
    except Exception as exc:  # the traceback (and the activations its frames hold) goes with it
        if not watch.is_oom(exc):
            raise
        return {}, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else 'out of memory'}"
    return sums, None


def micro_batches(p: Parts, batch: dict, parts: list[int] | None) -> list[dict]:
    """The micro-batches of this rank's share: with length buckets the fewest of at most the
    bucket's micro-batch, as equal as possible, each cut to its own longest clip
    (trainer/data/padding.py `split`); else slices of `p.micro_batch` within `parts`."""
    if p.bucket is not None:
        return padding.split(batch, p.micro_batch)
    return split_batch(batch, p.micro_batch, parts)


def after_oom(p: Parts, pos: Position, watch: Watch, error: str | None) -> str | None:
    """Every rank: drop the partial step, log the OOM, apply the policies' decisions; returns a stop reason or None."""
    drop_partial_step(p)
    errors = p.dist.gather_objects(error)
    ranks = [rank for rank, e in enumerate(errors) if e is not None]
    info = OOMInfo(pos.step, p.micro_batch, p.accumulation, p.effective_batch, errors[ranks[0]], world=p.dist.world)
    watch.log_event("oom", pos.step, micro_batch=p.micro_batch, accumulation=p.accumulation, effective_batch=p.effective_batch, error=info.error, ranks=ranks)
    before = p.micro_batch
    applied = apply_decisions(p, watch.ask("on_oom", info), watch, pos)
    if applied.stop:
        return applied.stop
    if p.micro_batch >= before:  # no policy made it smaller: nothing left to try
        raise torch.OutOfMemoryError(f"out of memory at micro-batch {before} and no watchdog policy reduced it: {info.error}")
    return None


def reduce_output(p: Parts, batch: dict, sums: dict[str, float], total: int) -> StepOutput:
    names = sorted(sums)  # the same keys on every rank (same workload, same code)
    values = p.dist.sum([sums[k] for k in names] + [p.workload.audio_seconds(batch)])
    return StepOutput({k: v / total for k, v in zip(names, values)}, total, values[-1])


def drop_partial_step(p: Parts) -> None:
    """Free what a failed step holds: gradients to None (`OptimizerSet.drop`), cached blocks back to CUDA."""
    p.optimizers.drop(p.scaler)
    gc.collect()
    if p.device.type == "cuda":
        torch.cuda.empty_cache()


def unscale_and_clip(p: Parts) -> dict[str, float]:
    """Unscale fp16 gradients, clip each optimiser's where the recipe clips; norms before clipping."""
    return p.optimizers.unscale_and_clip(p.scaler, p.max_grad_norm)


def optimizer_step(p: Parts, skip: bool) -> None:
    """Step every optimiser (unless skipped), update the loss scale, drop the gradients; then
    rank 0's buffers (s2's EMA codebook) everywhere, as DDP does."""
    p.optimizers.finish(p.scaler, skip)
    p.dist.broadcast_buffers(p.models)


def first_lr(optimizers: OptimizerSet) -> float:
    return next(iter(optimizers.lrs().values()))


def worst(norms: dict[str, float]) -> float:
    """The largest gradient norm, or the non-finite one (max() would hide a NaN)."""
    bad = [v for v in norms.values() if not math.isfinite(v)]
    return bad[0] if bad else max(norms.values())


def step_info(p: Parts, pos: Position, out: StepOutput, norms: dict[str, float]) -> StepInfo:
    """What `on_step` sees: the step's total loss, its worst gradient norm, the LR it will run at."""
    return StepInfo(pos.step, pos.epoch, out.losses.get("total", math.nan), out.losses, worst(norms), first_lr(p.optimizers))
