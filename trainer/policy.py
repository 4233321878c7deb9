"""What the loop hands to watchdog policies and what it accepts back.

Policies subclass `Policy` (implemented in `advisor/watchdog/`); the loop
calls them at named moments and applies the `Decision`s they return, then
logs each decision as an event (kind = decision.action, with its reason).
The trainer defines only this contract, so it imports nothing from `advisor`.

Loop moments (pseudocode; trainer/loop/loop.py draws the whole loop):
    for each epoch:
        for each effective batch:
            try: forward/backward every micro-batch
            except OOM: decisions = policy.on_oom(OOMInfo)    -> retry the same samples
            average, unscale, clip the gradients
            schedule.apply(step)                   this step's LR (StepInfo.lr)
            decisions = policy.on_step(StepInfo)   after the schedule, before optimiser.step:
                                                   a scale_lr applies to this step; skip_step drops it
            optimiser.step()
        at the epoch end, when validating: decisions = policy.on_val(ValInfo)
        before a checkpoint is saved: policy.on_checkpoint(); then policy.state_dict() goes into it
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIONS = (
    "skip_step",  # drop this step's gradients (no optimiser step)
    "scale_lr",  # multiply every LR (and the schedule's base) by `factor`
    "set_micro_batch",  # retry with `micro_batch` (and `effective_batch`, if set: the rest of the epoch re-planned)
    "rollback",  # reload the latest good checkpoint, then skip `skip_batches` batches (later decisions apply after it)
    "stop",  # end the run cleanly (`reason` goes into the end event)
)


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    policy: str = ""
    factor: float | None = None  # scale_lr
    micro_batch: int | None = None  # set_micro_batch
    effective_batch: int | None = None  # set_micro_batch: the new effective batch (None: unchanged)
    skip_batches: int = 0  # rollback
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown decision action {self.action!r}: expected one of {', '.join(ACTIONS)}")


@dataclass(frozen=True)
class StepInfo:
    step: int  # optimiser steps done before this one
    epoch: int
    loss: float  # total loss of the effective batch (mean over micro-batches)
    losses: dict[str, float]
    grad_norm: float  # max over optimisers, before clipping; nan/inf if non-finite
    lr: float  # the first group's LR for this step (set by the schedule just before on_step)


@dataclass(frozen=True)
class ValInfo:
    step: int
    epoch: int
    metric_name: str
    value: float


@dataclass(frozen=True)
class OOMInfo:
    step: int
    micro_batch: int  # per process
    accumulation: int  # micro-steps per optimiser step on each process (trainer.sizing.accumulation)
    effective_batch: int  # samples per optimiser step, all processes
    error: str
    world: int = 1  # processes sharing the effective batch


class Policy:
    """Base class of the watchdog's policies: one no-op handler per loop moment.

    A policy overrides the moments it reacts to and returns its decisions; it reads
    the info it is handed and never reaches into the trainer. `on_checkpoint` is
    called just before the loop saves a checkpoint at the current batch (before
    `state_dict`), so a policy that counts "batches since the last checkpoint"
    resets its count there; `state_dict` itself has no side effect. State is plain
    JSON-able data; a policy without state keeps the empty defaults.
    """

    name = "policy"
    MOMENTS = ("on_step", "on_val", "on_oom", "on_checkpoint")  # every handler, in loop order

    def on_step(self, info: StepInfo) -> list[Decision]:
        return []

    def on_val(self, info: ValInfo) -> list[Decision]:
        return []

    def on_oom(self, info: OOMInfo) -> list[Decision]:
        return []

    def on_checkpoint(self) -> None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
