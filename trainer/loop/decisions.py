"""The loop's side of the watchdog: ask the policies, share their decisions, apply them.

Policies (trainer/policy.py) run on rank 0 only; their decisions are broadcast
so every rank applies the same ones. `apply_decisions` applies what takes
effect at once (an LR scale, a new micro-batch and effective batch) and
reports what the loop must act on (skip this step, stop, roll back). Every
applied decision is logged as an event named by its action, with its reason
and policy.

Decisions change the parts only through their named methods: `Parts.scale_lr`
(from this step on: the loop applies the schedule before it asks `on_step`, so
a cut decided at step n already sets step n's LR) and `Parts.set_micro_batch`.
Decisions apply in the order given. A rollback reloads a checkpoint, so what
follows it in the list (the spike policy's LR cut) is handed back in
`Applied.after_rollback`, for the loop to apply once the reload is done; the
watchdog's settings themselves (LR scale, micro-batch, batch plan) are the
run's and survive a rollback (state.py). A stop decided for a step whose loss
or gradient norm is not finite skips that step even if no policy said so: the
weights the run ends with are never the diverged ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from trainer.distributed import Dist
from trainer.loop.metrics import Log
from trainer.loop.parts import Parts, Position
from trainer.policy import Decision, Policy


@dataclass
class Applied:
    """What the decisions of one moment add up to."""

    skip: bool = False
    stop: str | None = None
    rollback: Decision | None = None
    after_rollback: list[Decision] = field(default_factory=list)  # applied by the loop after the reload

    @property
    def taken(self) -> bool:
        """Whether the optimiser step goes ahead. A stop alone still takes a finite step (the
        step in flight finishes, so a resumed run continues exactly); add skip_step to drop it."""
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

    def checkpoint_state(self) -> dict:
        """Tell every policy a checkpoint is being saved at this batch, then collect their states."""
        for policy in self.policies:
            policy.on_checkpoint()
        return self.state_dict()

    def state_dict(self) -> dict:
        return {policy.name: policy.state_dict() for policy in self.policies}

    def load_state_dict(self, states: dict) -> None:
        for policy in self.policies:
            if policy.name in states:
                policy.load_state_dict(states[policy.name])


def apply_decisions(p: Parts, decisions: list[Decision], watch: Watch, pos: Position, finite: bool = True) -> Applied:
    """Apply what can be applied at once (LR scale, micro-batch, effective batch); report
    skip/stop/rollback. `finite`: whether this step's loss and gradient norm are finite."""
    applied = Applied()
    for i, d in enumerate(decisions):
        if d.action == "rollback":
            applied.rollback, applied.after_rollback = d, list(decisions[i + 1 :])
            break  # logged by roll_back, with the checkpoint it went back to
        fields: dict[str, Any] = {"reason": d.reason, "policy": d.policy, **d.details}
        if d.action == "scale_lr":
            fields.update(factor=d.factor, lr_scale=p.scale_lr(d.factor, pos.step))
        elif d.action == "set_micro_batch":
            fields.update(set_micro_batch(p, d, pos))
        elif d.action == "skip_step":
            applied.skip = True
        elif d.action == "stop":
            applied.stop = applied.stop or (f"{d.policy}: {d.reason}" if d.policy else d.reason)
        watch.log_event(d.action, pos.step, **fields)
    if applied.stop and not finite and applied.taken:
        applied.skip = True
        watch.log_event("skip_step", pos.step, reason="the loss or gradient norm is not finite and the run stops: the step is not taken", policy="loop")
    return applied


def set_micro_batch(p: Parts, d: Decision, pos: Position) -> dict:
    """Check a set_micro_batch decision and hand it to `Parts.set_micro_batch`; errors name the policy."""
    if d.micro_batch is None or d.micro_batch < 1:
        raise ValueError(f"policy {d.policy!r}: set_micro_batch needs micro_batch >= 1, got {d.micro_batch!r}")
    try:
        return p.set_micro_batch(d.micro_batch, d.effective_batch, pos)
    except ValueError as exc:  # the batch plan cannot take that effective batch
        raise ValueError(f"policy {d.policy!r}: set_micro_batch effective_batch: {exc}") from None
