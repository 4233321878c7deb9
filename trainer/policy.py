"""What the loop hands to watchdog policies and what it accepts back.

Policies are plain objects (implemented in `advisor/watchdog/`); the loop
calls them at named moments and applies the `Decision`s they return, then
logs each decision as an event (kind = decision.action, with its reason).
The trainer defines only this contract, so it imports nothing from `advisor`.

Loop moments (pseudocode):
    for each effective batch:
        try: forward/backward every micro-batch
        except OOM: decisions = policy.on_oom(OOMInfo)        -> retry the same samples
        decisions = policy.on_step(StepInfo)  (before optimiser.step; may skip)
        optimiser.step(); scheduler.step()
        at validation: decisions = policy.on_val(ValInfo)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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
    lr: float  # current base LR of the first group


@dataclass(frozen=True)
class ValInfo:
    step: int
    epoch: int
    metric_name: str
    value: float


@dataclass(frozen=True)
class OOMInfo:
    step: int
    micro_batch: int
    accumulation: int
    effective_batch: int
    error: str


class Policy(Protocol):
    name: str

    def on_step(self, info: StepInfo) -> list[Decision]: ...

    def on_val(self, info: ValInfo) -> list[Decision]: ...

    def on_oom(self, info: OOMInfo) -> list[Decision]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
