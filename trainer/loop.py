"""The training loop: `train(cfg, run)` reads top to bottom; heavy parts live elsewhere.

    restore the newest verified checkpoint (resume event), or start fresh and save step 0
    start event
    until the epochs are done, max_steps is reached or a policy says stop:
        at an epoch end: validate (every N epochs, if there is a val split) -> val
                         event, policies.on_val; checkpoint (carrying the metric; best -> export/)
        load this rank's share of the next effective batch
        micro-steps: forward/backward per micro-batch, gradients accumulate locally
            OOM on any rank -> every rank drops the partial step, policies.on_oom
            -> a smaller micro-batch, and the SAME samples again (in "shrink" mode a
               smaller effective batch too: the rest of the epoch is re-planned)
        average gradients over ranks; unscale (fp16); clip
        policies.on_step -> skip_step / scale_lr / rollback / stop
        LR from the schedule; optimiser step; step event; checkpoint every N steps
        (a rollback: reload, skip the bad batches, apply what came with it, checkpoint)
    final validation and checkpoint; export the best weights; end event

Components come from `build` (workload, models, optimisers, scaler, schedule,
batches: batches.py); what a checkpoint holds and how it is saved, restored
and exported from state.py (format and rotation: checkpoint.py); the
policies' decisions from decisions.py; collectives from distributed.py. Only
rank 0 writes events and checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import random
import resource
import time
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from trainer.batches import Batches
from trainer.checkpoint import Checkpointer
from trainer.config import OptimConfig, TrainConfig
from trainer.decisions import Watch, apply_decisions
from trainer.distributed import Dist, resolve_device
from trainer.events import EventLog
from trainer.optim import OptimizerSet, grad_norm
from trainer.policy import OOMInfo, Policy, StepInfo, ValInfo
from trainer.rundir import RunDir
from trainer.schedule import Schedule
from trainer.sinks import make_sinks
from trainer.state import Position, export_best, resume, roll_back, save
from trainer.workload import Workload, batch_size_of, make_scaler, split_batch
from trainer.workloads import get_workload


@dataclass
class Parts:
    """What the loop works with, made by `build`."""

    cfg: TrainConfig
    dist: Dist
    device: torch.device
    workload: Workload
    models: nn.ModuleDict
    optimizers: OptimizerSet
    scaler: torch.amp.GradScaler | None
    schedule: Schedule
    data: Batches
    micro_batch: int
    init_notes: list[str] = field(default_factory=list)  # what --init / --init-d loaded (start event)
    early: dict[str, float] = field(default_factory=dict)  # optimisers stepped inside the micro-step -> grad norm

    @property
    def effective_batch(self) -> int:
        """Samples per optimiser step, all ranks (the batch plan's current size)."""
        return self.data.effective

    @property
    def validating(self) -> bool:
        """Whether validation runs: every N epochs, and only with a non-empty val split."""
        return self.cfg.validation.every_epochs > 0 and len(self.data.val) > 0

    @property
    def accumulation(self) -> int:
        """Micro-steps per optimiser step on each rank (the largest share)."""
        return math.ceil(math.ceil(self.effective_batch / self.dist.world) / self.micro_batch)

    def planned_steps(self) -> int:
        """The schedule's length: every planned batch of every epoch, at most max_steps."""
        total = self.data.total_batches(self.cfg.epochs)
        return total if self.cfg.max_steps is None else min(total, self.cfg.max_steps)


@dataclass
class StepOutput:
    losses: dict[str, float]  # sample-weighted means over the effective batch (all ranks)
    samples: int  # samples in the effective batch (all ranks)
    audio_seconds: float




def train(
    cfg: TrainConfig,
    run: RunDir,
    *,
    policies: Sequence[Policy] = (),
    memory_guard: contextlib.AbstractContextManager | None = None,
    dist: Dist | None = None,
    on_event: Callable[[dict], None] | None = None,
    is_oom: Callable[[BaseException], bool] | None = None,
) -> str:
    """Train until done; returns the end reason: "epochs", "max_steps" or "stopped".

    `policies` are watchdog objects (trainer/policy.py), the same on every rank;
    `memory_guard` is a reusable context manager entered around every micro-step
    (the probe's emulated VRAM budget); `on_event` sees every event written
    (progress displays); `is_oom` says which exceptions of a micro-step count as
    out of memory (default: torch.OutOfMemoryError; the advisor also passes the
    cuDNN/cuFFT errors that mean it)."""
    dist = dist or Dist()
    p = build(cfg, run.root, dist)
    if dist.is_main:
        run.make()
    log = Log(EventLog(run.events if dist.is_main else None), on_event)
    if dist.is_main:
        log.sinks = make_sinks(p, run, log)  # TensorBoard, samples at each validation (trainer/sinks.py)
    watch = Watch(policies, log, dist, is_oom or (lambda exc: isinstance(exc, torch.OutOfMemoryError)))
    ckpt = Checkpointer(run, cfg.checkpoint.keep_last, p.workload.metric_name, enabled=dist.is_main)
    pos = Position()
    try:
        pos, restored = resume(p, ckpt, watch, log)
        log("start", pos.step, **start_summary(p, restored))
        saved = astuple(pos) if restored else save(p, ckpt, pos, watch, log, metric=None)  # step 0: a rollback target
        reason, detail = None, ""
        while reason is None:
            if pos.epoch >= cfg.epochs:
                reason = "epochs"
                break
            if pos.batch >= p.data.batches_in(pos.epoch):  # epoch end
                pos.epoch, pos.batch = pos.epoch + 1, 0
                metric = None
                if p.validating and pos.epoch % cfg.validation.every_epochs == 0:
                    metric = validate(p, pos, log)
                    applied = apply_decisions(p, watch.ask("on_val", ValInfo(pos.step, pos.epoch, p.workload.metric_name, metric)), watch, pos)
                    reason, detail = ("stopped", applied.stop) if applied.stop else (None, "")
                saved = save(p, ckpt, pos, watch, log, metric)
                continue
            if cfg.max_steps is not None and pos.step >= cfg.max_steps:
                reason = "max_steps"
                break

            started = time.perf_counter()
            out, stop = accumulate(p, pos, watch, memory_guard)  # OOM -> smaller micro-batch, same samples
            if stop:
                reason, detail = "stopped", stop
                break
            pos.batch += 1
            dist.average_gradients(p.models.parameters())
            norms = unscale_and_clip(p)
            p.schedule.apply(p.optimizers, pos.step)
            info = StepInfo(pos.step, pos.epoch, out.losses.get("total", math.nan), out.losses, worst(norms), first_lr(p.optimizers))
            applied = apply_decisions(p, watch.ask("on_step", info), watch, pos, finite=math.isfinite(info.loss) and math.isfinite(info.grad_norm))
            optimizer_step(p, skip=not applied.taken)
            if applied.rollback:
                pos = roll_back(p, ckpt, applied.rollback, watch, pos)  # weights back, the bad batches skipped
                applied = apply_decisions(p, applied.after_rollback, watch, pos)  # e.g. the LR cut that came with it
                saved = save(p, ckpt, pos, watch, log, metric=None)  # a restart keeps the skip and the cut
            elif applied.taken:
                pos.step, pos.samples = pos.step + 1, pos.samples + out.samples
                if pos.step % cfg.log_every_steps == 0:
                    log("step", pos.step, **step_fields(p, pos, out, norms, time.perf_counter() - started, memory_guard))
                every = cfg.checkpoint.every_steps
                if every and pos.step % every == 0 and pos.batch < p.data.batches_in(pos.epoch):
                    saved = save(p, ckpt, pos, watch, log, metric=None)  # the epoch's last batch is saved at its end
            if applied.stop:  # after the step in flight (unless skipped): a resume continues exactly
                reason, detail = "stopped", applied.stop
                break

        metric = None
        if p.validating and pos.validated_step != pos.step:
            metric = validate(p, pos, log)
        if metric is not None or saved != astuple(pos):
            save(p, ckpt, pos, watch, log, metric)
        export_best(p, ckpt, log, pos)
        log("end", pos.step, reason=reason, detail=detail, epoch=pos.epoch, samples=pos.samples)
        dist.barrier()  # leave together: a rank tearing down while another still writes can abort it
        return reason
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        log("end", pos.step, reason=reason, detail=f"{type(exc).__name__}: {exc}"[:500], epoch=pos.epoch)
        raise
    finally:
        log.close()


# --- building --------------------------------------------------------------------------------


def build(cfg: TrainConfig, root: Path, dist: Dist) -> Parts:
    """Workload, models (same initial weights on every rank), optimisers, scaler, schedule, batches."""
    if cfg.dataset is None:
        raise ValueError("dataset: no prepared dataset given (run `advisor prepare`, then set dataset: or pass --data)")
    device = resolve_device(cfg.device, dist)
    seed_everything(cfg.seed)  # identical initial weights on every rank
    workload = get_workload(cfg.workload, size=cfg.size, **workload_options(cfg))
    models = workload.build(device)
    init_notes: list[str] = []
    if cfg.workload == "s1" and cfg.init is not None and (Path(cfg.init).exists() or not RunDir(root).manifest.exists()):
        from trainer.gptsovits.s1_files import load_init

        # GPT-SoVITS's weights, before the broadcast; a resumed run whose init file has
        # moved since goes on from its checkpoints (the resume replaces these weights anyway)
        load_init(models["gpt"], cfg.init)
    elif cfg.workload == "s2" and (cfg.init or cfg.init_d):
        init_notes = workload.load_init(models, cfg.init, cfg.init_d)
    dist.broadcast_parameters(models)
    dist.broadcast_buffers(models)
    seed_everything(cfg.seed + dist.rank)  # each rank its own dropout / segment stream
    optimizers = make_optimizers(workload, models, cfg.optim)
    effective = cfg.batch.effective or cfg.batch.micro * dist.world * upstream_accumulation(cfg)
    dataset = Path(cfg.dataset) if Path(cfg.dataset).is_absolute() else root / cfg.dataset
    data = Batches(cfg.workload, dataset, cfg.slice_seconds, cfg.dpo, effective, cfg.seed, dist)
    p = Parts(
        cfg=cfg,
        dist=dist,
        device=device,
        workload=workload,
        models=models,
        optimizers=optimizers,
        scaler=make_scaler(cfg.precision, device),
        schedule=make_schedule(cfg),  # total steps set below, from the plan
        data=data,
        micro_batch=cfg.batch.micro,
        init_notes=init_notes,
    )
    p.schedule.total_steps = p.planned_steps()
    if cfg.workload == "s2" and cfg.recipe == "gpt-sovits":
        p.schedule.epoch_decay = (GPT_SOVITS_LR_DECAY, p.data.steps_per_epoch)  # replaces schedule:
    return p


UPSTREAM_BATCHES_PER_STEP = 4  # GPT-SoVITS's s1 steps its optimiser every 4 batches
UPSTREAM_FIRST_STEP_FACTOR = 5.0  # its first step runs at 0.01 = 5 x 0.002
GPT_SOVITS_LR_DECAY = 0.999875  # s2 ExponentialLR gamma per epoch (configs/s2*.json lr_decay)


def upstream_s1(cfg: TrainConfig) -> bool:
    return cfg.workload == "s1" and cfg.recipe == "gpt-sovits"


def workload_options(cfg: TrainConfig) -> dict:
    """Keyword arguments of `get_workload` that come from the config (s1: recipe; s2: version, recipe)."""
    return {"version": cfg.version, "recipe": cfg.recipe} if cfg.workload == "s2" else {"recipe": cfg.recipe}


def upstream_accumulation(cfg: TrainConfig) -> int:
    """Batches per optimiser step when batch.effective is not set: 4 for GPT-SoVITS's s1 recipe."""
    return UPSTREAM_BATCHES_PER_STEP if upstream_s1(cfg) else 1


def make_schedule(cfg: TrainConfig) -> Schedule:
    """The config's schedule; GPT-SoVITS's s1 recipe fixes its own (constant LR, 5x on the first step)."""
    if upstream_s1(cfg):
        return Schedule(dataclasses.replace(cfg.schedule, kind="constant", warmup_steps=0), 0, first_step_factor=UPSTREAM_FIRST_STEP_FACTOR)
    return Schedule(cfg.schedule, total_steps=0)


def make_optimizers(workload: Workload, models: nn.ModuleDict, optim: OptimConfig) -> OptimizerSet:
    """The workload's AdamW optimisers with the config's base LRs and per-group LR scales."""
    base = {**workload.default_lr(), **optim.lr}
    unknown = sorted(set(optim.lr) - set(workload.default_lr()))
    if unknown:
        raise ValueError(f"optim.lr.{unknown[0]}: workload {workload.name} has optimisers {', '.join(workload.default_lr())}")
    optimizers = workload.make_optimizers(models, base)
    groups = {f"{name}/{g['name']}": (name, g) for name, opt in optimizers.items() for g in opt.param_groups}
    for key, scale in optim.lr_scale.items():
        if key not in groups:
            raise ValueError(f"optim.lr_scale.{key}: no such group in workload {workload.name} (groups: {', '.join(groups)})")
        name, g = groups[key]
        g["lr_scale"], g["initial_lr"], g["lr"] = scale, base[name] * scale, base[name] * scale
    return optimizers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


# --- one optimiser step ------------------------------------------------------------------------


def accumulate(p: Parts, pos: Position, watch: Watch, memory_guard) -> tuple[StepOutput | None, str | None]:
    """Forward/backward this rank's share of batch `pos.batch`; returns (output, None) or (None, stop reason).

    On OOM anywhere, every rank drops the partial step, asks the policies, and
    retries with the micro-batch they set: the same samples, or with a smaller
    effective batch ("shrink") the first samples of the same batch, the rest of
    the epoch re-planned."""
    while True:
        batch = p.data.load(pos.epoch, pos.batch, p.device)
        total = len(p.data.plan(pos.epoch)[pos.batch])  # samples in the effective batch, all ranks
        sums, error = micro_steps(p, batch, total, watch, memory_guard)
        if not p.dist.any(error is not None):  # every rank votes, so a rank without OOM joins the retry
            return reduce_output(p, batch, sums, total), None
        del batch  # freed before the drop and the retry
        stop = after_oom(p, pos, watch, error)
        if stop:
            return None, stop


def micro_steps(p: Parts, batch: dict, total: int, watch: Watch, memory_guard) -> tuple[dict[str, float], str | None]:
    """Forward/backward `batch` in micro-batches; returns (sample-weighted loss sums, None) or ({}, OOM error).

    Each micro-batch's loss is weighted by its share of the effective batch
    (n * world / total: the gradient average over ranks then gives the mean over
    all samples)."""
    p.optimizers.zero_grad()
    if hasattr(memory_guard, "count"):  # an emulated card holds the weights and optimiser state too
        memory_guard.count(p.models, p.optimizers)
    sums: dict[str, float] = {}
    try:
        for micro in split_batch(batch, p.micro_batch):
            n = batch_size_of(micro)
            with memory_guard if memory_guard is not None else contextlib.nullcontext():
                weight = 1.0 if getattr(p.workload, "sums_losses", False) else n * p.dist.world / total
                extra = {"step_discriminator": lambda: early_step(p, "discriminator")} if discriminator_first(p) else {}
                result = p.workload.forward_backward(p.models, micro, p.cfg.precision, p.scaler, weight, **extra)
            for name, value in result.losses.items():
                sums[name] = sums.get(name, 0.0) + value * n
    except Exception as exc:  # the traceback (and the activations its frames hold) goes with it
        if not watch.is_oom(exc):
            raise
        return {}, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else 'out of memory'}"
    return sums, None


def after_oom(p: Parts, pos: Position, watch: Watch, error: str | None) -> str | None:
    """Every rank: drop the partial step, log the OOM, apply the policies' decisions; returns a stop reason or None."""
    drop_partial_step(p)
    errors = p.dist.gather_objects(error)
    ranks = [rank for rank, e in enumerate(errors) if e is not None]
    info = OOMInfo(pos.step, p.micro_batch, p.accumulation, p.effective_batch, errors[ranks[0]])
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
    """Free what a failed step holds: gradients to None, cached blocks back to CUDA.

    The GradScaler keeps per-step state only from unscale_ on, which has not run
    yet, so its scale and growth tracker are still those of the last step."""
    if p.early and p.scaler is not None:
        p.scaler.update()  # an optimiser stepped inside the failed step: close the scaler's step state
    p.early.clear()
    p.optimizers.zero_grad()
    gc.collect()
    if p.device.type == "cuda":
        torch.cuda.empty_cache()


def unscale_and_clip(p: Parts) -> dict[str, float]:
    """Unscale fp16 gradients, clip each optimiser's to cfg.optim.grad_clip; norms before clipping."""
    norms = {}
    max_norm = p.cfg.optim.grad_clip
    if p.cfg.recipe == "gpt-sovits":
        max_norm = None  # GPT-SoVITS clips neither s1 (ScaledAdam's own clipping only) nor s2 (norms only measured)
    norms.update(p.early)
    for name, opt in p.optimizers.items():
        if name in p.early:
            continue  # stepped already (gpt-sovits recipe: D before the G pass)
        if p.scaler is not None:
            p.scaler.unscale_(opt)
        params = [q for g in opt.param_groups for q in g["params"] if q.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if max_norm is not None and params else grad_norm(params)
        norms[name] = float(norm)
    return norms


def optimizer_step(p: Parts, skip: bool) -> None:
    """Step every optimiser (unless skipped) and update the loss scale; gradients are dropped after."""
    if not skip:
        for name, opt in p.optimizers.items():
            if name in p.early:
                continue
            if p.scaler is not None:
                p.scaler.step(opt)  # skips the update itself if fp16 gradients overflowed
            else:
                opt.step()
    if p.scaler is not None:
        p.scaler.update()  # also clears the per-step unscale state when the step was skipped
    p.early.clear()
    p.optimizers.zero_grad()
    p.dist.broadcast_buffers(p.models)  # rank 0's buffers (s2's EMA codebook) everywhere, as DDP does


def discriminator_first(p: Parts) -> bool:
    """s2 with recipe gpt-sovits: D steps inside the micro-step, before the G pass (as upstream).

    Only with one micro-step per step on one process: with accumulation D would step
    per micro-batch (and the fp16 scaler would change scale under G's accumulated
    gradients); under torchrun the D average would be a collective inside a
    micro-step, which an OOM on another rank never joins. Otherwise our order runs
    (the start event's `discriminator_first` says which)."""
    return p.cfg.workload == "s2" and p.cfg.recipe == "gpt-sovits" and p.accumulation == 1 and p.dist.world == 1


def early_step(p: Parts, name: str) -> None:
    """Step optimiser `name` now, on the gradients accumulated so far (no clipping: the
    gpt-sovits recipe), and drop them; its norm goes into the step's grad norms."""
    opt = p.optimizers[name]
    if p.scaler is not None:
        p.scaler.unscale_(opt)
    params = [q for g in opt.param_groups for q in g["params"] if q.grad is not None]
    p.early[name] = float(grad_norm(params))
    if p.scaler is not None:
        p.scaler.step(opt)  # skipped by the scaler itself on an fp16 overflow; update() at the step's end
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)


def first_lr(optimizers: OptimizerSet) -> float:
    return next(iter(optimizers.lrs().values()))


def worst(norms: dict[str, float]) -> float:
    """The largest gradient norm, or the non-finite one (max() would hide a NaN)."""
    bad = [v for v in norms.values() if not math.isfinite(v)]
    return bad[0] if bad else max(norms.values())


# --- events ----------------------------------------------------------------------------------


class Log:
    """Writes events (rank 0) and shows each one to `on_event` (a progress display)."""

    def __init__(self, events: EventLog, on_event: Callable[[dict], None] | None) -> None:
        self.events, self.on_event = events, on_event
        self.sinks: list = []  # each has write(event) and close(): trainer/sinks.py

    def __call__(self, kind: str, step: int, **fields: Any) -> None:
        event = self.events.write(kind, step, **fields)
        if self.on_event is not None and self.events.path is not None:
            self.on_event(event)
        for sink in self.sinks:
            sink.write(event)

    def close(self) -> None:
        self.events.close()
        for sink in self.sinks:
            sink.close()


def start_summary(p: Parts, restored: bool) -> dict:
    c = p.cfg
    return {
        "workload": c.workload,
        "size": c.size,
        "dataset": c.dataset,
        "slice_seconds": p.data.slice_seconds,
        "dpo": c.dpo,
        "precision": c.precision,
        "device": str(p.device),
        "world_size": p.dist.world,
        "seed": c.seed,
        "epochs": c.epochs,
        "max_steps": c.max_steps,
        "steps_per_epoch": p.data.steps_per_epoch,
        "total_steps": p.schedule.total_steps,
        "train_clips": len(p.data.train),
        "val_clips": len(p.data.val),
        "micro_batch": p.micro_batch,
        "effective_batch": p.effective_batch,
        "accumulation": p.accumulation,
        "batch_source": c.batch.source,
        "batch_table": c.batch.table,
        "metric_name": p.workload.metric_name,
        "lr": p.optimizers.lrs(),
        "schedule": asdict(c.schedule) if p.schedule.epoch_decay is None else {"kind": "exponential_per_epoch", "gamma": p.schedule.epoch_decay[0]},
        "grad_clip": c.optim.grad_clip,
        "parameters": sum(q.numel() for q in p.models.parameters()),
        "resumed": restored,
        "validation": p.validating,
        **({"version": c.version, "recipe": c.recipe, "init": p.init_notes, "discriminator_first": discriminator_first(p)} if c.workload == "s2" else {}),
    }


def step_fields(p: Parts, pos: Position, out: StepOutput, norms: dict[str, float], seconds: float, memory_guard=None) -> dict:
    return {
        "epoch": pos.epoch,
        "batch": pos.batch,
        "losses": out.losses,
        "lr": p.optimizers.lrs(),
        "grad_norm": norms,
        "samples": out.samples,
        "step_seconds": seconds,
        "samples_per_s": out.samples / seconds,
        "audio_seconds_per_s": out.audio_seconds / seconds,
        "micro_batch": p.micro_batch,
        "accumulation": p.accumulation,
        **peak_memory(p.device),
        "memory": memory_now(p.device, memory_guard),
    }


def peak_memory(device: torch.device) -> dict:
    """Peak memory since the last call: CUDA allocator peak, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return {"peak_memory_bytes": int(peak), "memory_kind": "cuda_allocated"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "memory_kind": "cpu_max_rss"}


def memory_now(device: torch.device, guard: Any = None) -> dict:
    """Used and peak memory against the budget, for the dashboard (bytes; peak since the last step).

    The emulated budget when one is entered around the micro-steps (it has `budget_bytes`),
    else the CUDA allocator against the card, else this process's RSS against the host RAM."""
    if guard is not None and hasattr(guard, "budget_bytes"):
        memory = {"used_bytes": guard.live_bytes, "peak_bytes": guard.peak_bytes, "budget_bytes": guard.budget_bytes, "source": "emulated"}
        guard.reset_peak()
        return memory
    if device.type == "cuda":
        return {
            "used_bytes": torch.cuda.memory_reserved(device),
            "peak_bytes": torch.cuda.max_memory_reserved(device),
            "budget_bytes": torch.cuda.get_device_properties(device).total_memory,
            "source": "cuda_allocator",
        }
    import psutil

    rss = psutil.Process().memory_info().rss
    return {"used_bytes": rss, "peak_bytes": rss, "budget_bytes": psutil.virtual_memory().total, "source": "cpu_rss"}


def validate(p: Parts, pos: Position, log: Log) -> float:
    """The workload's metric over the val split (sample-weighted mean over all ranks)."""
    total = count = 0.0
    for batch in p.data.val_batches(p.micro_batch, p.device, p.cfg.validation.max_batches):
        n = batch_size_of(batch)
        total += p.workload.validation_step(p.models, batch, p.cfg.precision) * n
        count += n
    total, count = p.dist.sum([total, count])
    value = total / count if count else math.nan
    pos.validated_step = pos.step
    log("val", pos.step, epoch=pos.epoch, metric=p.workload.metric_name, value=value, samples=int(count))
    return value
