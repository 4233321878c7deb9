"""The loop's side of the watchdog: ask the policies, share their decisions, apply them.

Policies (trainer/policy.py) run on rank 0 only; their decisions are broadcast
so every rank applies the same ones. `apply_decisions` applies what takes
effect at once (an LR scale, a new micro-batch) and reports what the loop
must act on (skip this step, stop, roll back). Every applied decision is
logged as an event named by its action, with its reason and policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from trainer.distributed import Dist
from trainer.policy import Decision, Policy

if TYPE_CHECKING:  # annotations only: the loop imports this module
    from trainer.loop import Log, Parts
    from trainer.state import Position


@dataclass
class Applied:
    """What the decisions of one moment add up to."""

    skip: bool = False
    stop: str | None = None
    rollback: Decision | None = None

    @property
    def taken(self) -> bool:
        """Whether the optimiser step goes ahead. A stop alone still takes it (the step in
        flight finishes, so a resumed run continues exactly); add skip_step to drop it."""
        return not (self.skip or self.rollback)


class Watch:
    """Runs the policies on rank 0 and hands their decisions to every rank."""

    def __init__(self, policies: Sequence[Policy], log: Log, dist: Dist, is_oom: Callable[[BaseException], bool]) -> None:
        self.policies, self.log_event, self.dist, self.is_oom = list(policies), log, dist, is_oom

    def ask(self, moment: str, info: Any) -> list[Decision]:
        decisions: list[Decision] = []
        if self.dist.is_main:
            for policy in self.policies:
                decisions.extend(getattr(policy, moment)(info) or [])
        return self.dist.broadcast_object(decisions) if self.policies else decisions

    def state_dict(self) -> dict:
        return {policy.name: policy.state_dict() for policy in self.policies}

    def load_state_dict(self, states: dict) -> None:
        for policy in self.policies:
            if policy.name in states:
                policy.load_state_dict(states[policy.name])


def apply_decisions(p: Parts, decisions: list[Decision], watch: Watch, pos: Position) -> Applied:
    """Apply what can be applied at once (LR scale, micro-batch); report skip/stop/rollback."""
    applied = Applied()
    for d in decisions:
        fields: dict[str, Any] = {"reason": d.reason, "policy": d.policy, **d.details}
        if d.action == "scale_lr":
            p.schedule.scale *= d.factor
            p.schedule.apply(p.optimizers, pos.step)
            fields.update(factor=d.factor, lr_scale=p.schedule.scale)
        elif d.action == "set_micro_batch":
            if d.micro_batch is None or d.micro_batch < 1:
                raise ValueError(f"policy {d.policy!r}: set_micro_batch needs micro_batch >= 1, got {d.micro_batch!r}")
            fields.update(previous=p.micro_batch, micro_batch=d.micro_batch)
            p.micro_batch = d.micro_batch
            fields["accumulation"] = p.accumulation
        elif d.action == "skip_step":
            applied.skip = True
        elif d.action == "stop":
            applied.stop = applied.stop or (f"{d.policy}: {d.reason}" if d.policy else d.reason)
        elif d.action == "rollback":
            applied.rollback = d
            continue  # logged by roll_back, with the checkpoint it went back to
        watch.log_event(d.action, pos.step, **fields)
    return applied
