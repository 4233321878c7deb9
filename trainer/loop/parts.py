"""What the loop works with: `Parts` (made by `build`) and `Position` (where the run is).

`build(cfg, root, dist)` makes the workload, its models (the same initial
weights on every rank), the optimisers, the GradScaler, the LR schedule and
the batch plan (batches.py). The watchdog's decisions change the parts only
through `Parts`' named methods (`scale_lr`, `set_micro_batch`; decisions.py
calls them), and a resume through `restore` (state.py).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.data.batches import Batches
from trainer.data.buckets import BucketPlan
from trainer.data.manifest import run_slice_seconds
from trainer.distributed import Dist, resolve_device
from trainer.loop.schedule import Schedule
from trainer.optim import OptimizerSet
from trainer.recipe import (
    SCHEDULE_CONSTANT_FIRST_X5,
    SCHEDULE_EXPONENTIAL_PER_EPOCH,
    STEP_UPSTREAM_BATCH_IDX,
    UPSTREAM_S1_FIRST_STEP_FACTOR,
    UPSTREAM_S2_LR_DECAY,
    Recipe,
)
from trainer.rundir import RunDir
from trainer.sizing import accumulation, effective_batch
from trainer.workload import Workload, configured_optimizers, make_scaler
from trainer.workloads import workload_for_config


@dataclass
class Position:
    """Where the run is; saved in every checkpoint."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # effective batches of this epoch consumed
    samples: int = 0  # training samples consumed (all ranks)
    validated_step: int = -1  # step of the last validation


@dataclass
class Parts:
    """What the loop works with, made by `build`."""

    cfg: TrainConfig
    recipe: Recipe  # built once from cfg (trainer/recipe.py); the workload holds the same one
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
    bucket: int | None = None  # the length bucket of the step in flight (None without buckets)

    @property
    def effective_batch(self) -> int:
        """Samples per optimiser step, all ranks (the batch plan's current size)."""
        return self.data.effective

    @property
    def accumulation(self) -> int:
        """Micro-steps per optimiser step on each rank (the largest share)."""
        return accumulation(self.effective_batch, self.micro_batch, self.dist.world)

    @property
    def validating(self) -> bool:
        """Whether validation runs: every N epochs, and only with a non-empty val split."""
        return self.cfg.validation.every_epochs > 0 and len(self.data.val) > 0

    @property
    def discriminator_first(self) -> bool:
        """s2 with recipe gpt-sovits: D steps inside the micro-step, before the G pass (as upstream).

        Only with one micro-step per step on one process: with accumulation D would step
        per micro-batch (and the fp16 scaler would change scale under G's accumulated
        gradients); under torchrun the D average would be a collective inside a
        micro-step, which an OOM on another rank never joins. Otherwise our order runs
        (the start event's `discriminator_first` says which)."""
        return self.recipe.discriminator_first and self.accumulation == 1 and self.dist.world == 1

    @property
    def max_grad_norm(self) -> float | None:
        """The loop's clipping: optim.grad_clip, or None where the recipe clips nothing."""
        return self.cfg.optim.grad_clip if self.recipe.clip else None

    def planned_steps(self) -> int:
        """The schedule's length: every planned batch of every epoch, at most max_steps."""
        total = self.data.total_batches(self.cfg.epochs)
        return total if self.cfg.max_steps is None else min(total, self.cfg.max_steps)

    def replan(self, step: int | None = None) -> dict | None:
        """Stretch (or shrink) the LR schedule over the run's planned length: from `step` on, the
        LR continuing from its value there (schedule.py, "Re-plan"); None: before any step."""
        if step is None:
            self.schedule.total_steps = self.planned_steps()
            return None
        return self.schedule.replan(self.planned_steps(), step)

    def enter_step(self, pos: Position) -> None:
        """The step at `pos`: with length buckets, its bucket and that bucket's micro-batch."""
        self.bucket = self.data.bucket(pos.epoch, pos.batch)
        if self.bucket is not None:
            self.micro_batch = self.data.buckets.micro(self.bucket)

    # --- the watchdog's decisions (decisions.py) and a resume's settings (state.py) ---------

    def scale_lr(self, factor: float, step: int) -> float:
        """Multiply every LR by `factor` from step `step` on (this step included); returns the new scale."""
        self.schedule.scale *= factor
        self.schedule.apply(self.optimizers, step)
        return self.schedule.scale

    def set_micro_batch(self, micro: int, effective: int | None, pos: Position) -> dict[str, Any]:
        """Adopt a new micro-batch; a new effective batch re-plans the rest of the epoch
        from the current batch and stretches the LR schedule over the run's new length.
        Returns the fields of its event (previous and new sizes). ValueError from the
        batch plan if `effective` cannot be planned."""
        fields: dict[str, Any] = {"previous": self.micro_batch, "micro_batch": micro}
        self.micro_batch = micro
        if self.bucket is not None:  # length buckets: only this bucket's micro-batch; the effective batch stays
            self.data.with_bucket_micro(self.bucket, micro)
            fields["bucket"] = self.bucket
            effective = None
        if effective is not None and effective != self.effective_batch:
            fields["previous_effective_batch"] = self.effective_batch
            self.data.resize(pos.epoch, pos.batch, effective)
            self.replan(pos.step)
            fields["total_steps"] = self.schedule.total_steps
        fields.update(effective_batch=self.effective_batch, accumulation=self.accumulation)
        return fields

    def restore(self, state: dict, pos: Position) -> dict | None:
        """The run's settings from a checkpoint, for a resumed process: LR scale, micro-batch
        and batch plan (so `pos.batch` names the same samples).

        The micro-batch becomes the smaller of the config's and the checkpoint's (the
        watchdog may have halved it; a smaller --micro-batch on resume still wins). The
        effective batch stays the checkpoint's (the OOM policy may have shrunk it) unless
        the config sets a batch.effective other than the run was started with: then the
        rest of the epoch is re-planned with it, from the checkpoint's position. A length other
        than the checkpoint's (another --epochs / --max-steps) re-plans the LR from its value at
        the checkpoint; returns what changed (None: nothing)."""
        self.schedule.load_state_dict(state["schedule"])
        self.micro_batch = min(self.micro_batch, int(state["micro_batch"]))  # never back to one that ran out of memory (buckets: each its own)
        saved = state.get("batches")  # absent in checkpoints written before the plan could change
        if saved is not None:
            self.data.load_state_dict(saved)
            wanted = self.cfg.batch.effective
            if wanted is not None and wanted != saved["configured"]:
                self.data.resize(pos.epoch, pos.batch, wanted)
        if self.schedule.saved_total is None:  # a checkpoint from before re-plans were saved
            self.replan()
            return None
        self.schedule.total_steps = self.schedule.saved_total
        return self.replan(pos.step)


# --- building --------------------------------------------------------------------------------


def build(cfg: TrainConfig, root: Path, dist: Dist, buckets: BucketPlan | None = None) -> Parts:
    """Workload, models (same initial weights on every rank), optimisers, scaler, schedule, batches
    (with `buckets`, the run spec's length buckets, each capped at cfg.batch.micro)."""
    if cfg.dataset is None:
        raise ValueError("dataset: no prepared dataset given (run `advisor prepare`, then set dataset: or pass --data)")
    device = resolve_device(cfg.device, dist)
    seed_everything(cfg.seed)  # identical initial weights on every rank
    workload = workload_for_config(cfg)
    recipe = workload.recipe
    models = workload.build(device)
    init_notes: list[str] = []
    # GPT-SoVITS's weights, before the broadcast. The init files are needed only to start: a
    # resumed run whose init file has moved since goes on from its checkpoints (the resume
    # replaces these weights anyway)
    started = RunDir(root).manifest.exists()
    if cfg.workload == "s1" and cfg.init is not None and (Path(cfg.init).exists() or not started):
        from trainer.gptsovits.s1_files import load_init

        init_notes = [load_init(models["gpt"], cfg.init)]
    elif cfg.workload == "s2" and (cfg.init or cfg.init_d) and (not started or all(Path(f).exists() for f in (cfg.init, cfg.init_d) if f)):
        init_notes = workload.load_init(models, cfg.init, cfg.init_d)
    dist.broadcast_parameters(models)
    dist.broadcast_buffers(models)
    seed_everything(cfg.seed + dist.rank)  # each rank its own dropout / segment stream
    optimizers = configured_optimizers(workload, models, cfg.optim)
    dataset = Path(cfg.dataset) if Path(cfg.dataset).is_absolute() else root / cfg.dataset
    upstream_groups = recipe.batches_per_step if recipe.step_rule == STEP_UPSTREAM_BATCH_IDX and cfg.batch.effective is None else None
    data = Batches(
        workload, dataset, run_slice_seconds(cfg.slice_seconds, dataset), cfg.dpo, effective_batch(cfg, dist.world), cfg.seed, dist,
        upstream_groups=upstream_groups, upstream_batch=cfg.batch.micro,
        buckets=bucket_plan_for(buckets, cfg, dist.world),
    )
    p = Parts(
        cfg=cfg,
        recipe=recipe,
        dist=dist,
        device=device,
        workload=workload,
        models=models,
        optimizers=optimizers,
        scaler=make_scaler(cfg.precision, device),
        schedule=make_schedule(cfg, recipe),  # total steps set below, from the plan
        data=data,
        micro_batch=cfg.batch.micro,
        init_notes=init_notes,
    )
    p.replan()
    if recipe.schedule == SCHEDULE_EXPONENTIAL_PER_EPOCH:
        p.schedule.epoch_decay = (UPSTREAM_S2_LR_DECAY, p.data.steps_per_epoch)  # replaces schedule:
    return p


def bucket_plan_for(plan: BucketPlan | None, cfg: TrainConfig, world: int) -> BucketPlan | None:
    """The run spec's bucket plan for this run: the effective batch `batch.effective`, else the
    plan's times the processes (as micro x processes without buckets), every bucket capped at
    `batch.micro` (an OOM restart's cap reaches every bucket)."""
    if plan is None:
        return None
    want = cfg.batch.effective or plan.effective * world
    return (plan if want == plan.effective else plan.with_effective(want)).capped(cfg.batch.micro)


def make_schedule(cfg: TrainConfig, recipe: Recipe) -> Schedule:
    """The config's schedule; GPT-SoVITS's s1 recipe fixes its own (constant LR, 5x on the first step)."""
    if recipe.schedule == SCHEDULE_CONSTANT_FIRST_X5:
        return Schedule(dataclasses.replace(cfg.schedule, kind="constant", warmup_steps=0), 0, first_step_factor=UPSTREAM_S1_FIRST_STEP_FACTOR)
    return Schedule(cfg.schedule, total_steps=0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device
