"""NaN / spike policy: skip bad steps, cut the LR when they repeat, roll back
when they persist.

A step is *bad* when
- its loss is not finite, or its gradient norm is not finite (except under
  fp16 with a GradScaler: a non-finite gradient with a finite loss is the
  scaler's own overflow, which it skips and answers by lowering its scale;
  skipping it here would keep the scale from ever dropping), or
- it spikes: the loss (or gradient norm) is more than `sigmas` standard
  deviations AND `min_jump` (relative) above the mean of the last `window`
  accepted values, once `min_samples` values are in (OLMo-core's rule:
  6 sigma over a 128-step window, active after 64).

The ladder, counting bad steps in the last `memory` batches:
1. every bad step: skip_step (its gradients are dropped);
2. `cut_after` of them: also scale_lr by `factor` (at most one cut per
   `memory` batches, never below `min_lr_fraction` x the peak LR);
3. `rollback_after` of them: rollback to the latest good checkpoint and skip
   the offending batches, then scale_lr (in that order: the cut must apply
   to the reloaded optimiser); the bad-step memory starts afresh;
4. more than `max_rollbacks` rollbacks: skip_step and stop (the bad step is
   never taken: the run ends on the weights before it).

What a rollback skips: the loop reloads the latest good checkpoint and then
skips `skip_batches` batches, so the policy counts the batches consumed since
that checkpoint up to and including the current one, and the run resumes just
past the offending batches (PaLM skipped everything from its restart point
past the spike in the same way). The policy learns where checkpoints are from
`state_dict()`: the loop saves the policies' state into every checkpoint, so
each call marks one (and a loaded state starts at a checkpoint). Before any
mark, or if the span of bad batches is longer, the span is used. `details`
names the first and last bad step and the span.
Bad and spiking values never enter the rolling window.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from advisor.watchdog.checks import check_int, check_number
from advisor.watchdog.lr_floor import LRFloor
from trainer.policy import Decision, Policy, StepInfo


@dataclass
class SpikeConfig:
    window: int = 128  # accepted values in the rolling mean/std (OLMo-core)
    min_samples: int = 64  # the spike test starts once the window holds this many
    sigmas: float = 6.0  # a spike is more than this many standard deviations above the mean...
    min_jump: float = 0.1  # ...and more than this fraction above it (guards a near-constant loss)
    watch_grad_norm: bool = True  # test the gradient norm for spikes too
    memory: int = 100  # bad steps are counted over this many recent batches
    cut_after: int = 3  # bad steps in memory that also cut the LR
    rollback_after: int = 6  # bad steps in memory that roll back to the latest good checkpoint
    max_rollbacks: int = 3  # one more rollback than this stops the run
    factor: float = 0.5  # LR multiplier per cut
    min_lr_fraction: float = 0.1  # never cut below this fraction of the peak LR

    def __post_init__(self) -> None:
        check_int("watchdog.spike.window", self.window, 2)
        check_int("watchdog.spike.min_samples", self.min_samples, 2)
        if self.min_samples > self.window:
            raise ValueError(
                f"watchdog.spike.min_samples: expected at most window ({self.window}), got {self.min_samples}"
            )
        check_number("watchdog.spike.sigmas", self.sigmas, 0.0, math.inf, low_open=True, high_open=True)
        check_number("watchdog.spike.min_jump", self.min_jump, 0.0, math.inf, high_open=True)
        if not isinstance(self.watch_grad_norm, bool):
            raise ValueError(f"watchdog.spike.watch_grad_norm: expected true or false, got {self.watch_grad_norm!r}")
        check_int("watchdog.spike.memory", self.memory, 1)
        check_int("watchdog.spike.cut_after", self.cut_after, 1)
        check_int("watchdog.spike.rollback_after", self.rollback_after, self.cut_after)
        if self.rollback_after > self.memory:
            raise ValueError(
                f"watchdog.spike.rollback_after: expected at most memory ({self.memory}), got {self.rollback_after}"
            )
        check_int("watchdog.spike.max_rollbacks", self.max_rollbacks, 0)
        check_number("watchdog.spike.factor", self.factor, 0.0, 1.0, low_open=True, high_open=True)
        check_number("watchdog.spike.min_lr_fraction", self.min_lr_fraction, 0.0, 1.0)


class RollingStats:
    """Mean and standard deviation of the last `size` values, O(1) per value."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self._sum = 0.0
        self._sumsq = 0.0
        self._since_exact = 0

    def __len__(self) -> int:
        return len(self.values)

    def add(self, value: float) -> None:
        if len(self.values) == self.values.maxlen:
            old = self.values[0]
            self._sum -= old
            self._sumsq -= old * old
        self.values.append(value)
        self._sum += value
        self._sumsq += value * value
        self._since_exact += 1
        if self._since_exact >= self.values.maxlen:  # re-sum now and then: running sums drift
            self._sum = math.fsum(self.values)
            self._sumsq = math.fsum(v * v for v in self.values)
            self._since_exact = 0

    def mean_std(self) -> tuple[float, float]:
        n = len(self.values)
        mean = self._sum / n
        var = max(self._sumsq / n - mean * mean, 0.0)
        return mean, math.sqrt(var * n / (n - 1)) if n > 1 else 0.0

    def state_dict(self) -> list[float]:
        return list(self.values)

    def load_state_dict(self, values: list[float]) -> None:
        self.values.clear()
        self._sum = self._sumsq = 0.0
        self._since_exact = 0
        for v in values:
            self.add(float(v))


class SpikePolicy(Policy):
    name = "spike"

    def __init__(self, config: SpikeConfig | None = None, grad_scaler: bool = False) -> None:
        self.config = config or SpikeConfig()
        self.grad_scaler = grad_scaler  # fp16 with a GradScaler: gradient overflow is the scaler's business
        self.loss_stats = RollingStats(self.config.window)
        self.grad_stats = RollingStats(self.config.window)
        self.floor = LRFloor(self.config.min_lr_fraction)
        self.calls = 0  # on_step calls (batches; skipped steps keep the same `step`)
        self.bad: deque[tuple[int, int]] = deque()  # (call, step) of bad steps within memory
        self.last_cut_call: int | None = None
        self.since_checkpoint: int | None = None  # batches from the latest checkpoint's position to now
        self.rollbacks = 0
        self.skips = 0

    # --- detection -------------------------------------------------------------------
    def _problem(self, info: StepInfo) -> str | None:
        """Why this step is bad (None when it is fine); updates the rolling windows."""
        loss, grad = info.loss, info.grad_norm
        if not math.isfinite(loss):
            return f"loss is {loss}"
        if not math.isfinite(grad) and not self.grad_scaler:
            return f"gradient norm is {grad}"
        why = self._spike("loss", loss, self.loss_stats)
        if why is None and self.config.watch_grad_norm and math.isfinite(grad):
            why = self._spike("gradient norm", grad, self.grad_stats)
        if why is None:
            self.loss_stats.add(loss)
            if math.isfinite(grad):
                self.grad_stats.add(grad)
        return why

    def _spike(self, what: str, value: float, stats: RollingStats) -> str | None:
        if len(stats) < self.config.min_samples:
            return None
        mean, std = stats.mean_std()
        threshold = max(mean + self.config.sigmas * std, mean + self.config.min_jump * abs(mean))
        if value <= threshold:
            return None
        return (
            f"{what} {value:.4g} spiked above {threshold:.4g} "
            f"(mean {mean:.4g} + {self.config.sigmas:g} sigma {std:.3g} over the last {len(stats)} steps)"
        )

    # --- the ladder ------------------------------------------------------------------
    def on_step(self, info: StepInfo) -> list[Decision]:
        self.calls += 1
        if self.since_checkpoint is not None:
            self.since_checkpoint += 1
        self.floor.observe(info.lr)
        while self.bad and self.calls - self.bad[0][0] >= self.config.memory:
            self.bad.popleft()
        why = self._problem(info)
        if why is None:
            return []
        self.bad.append((self.calls, info.step))
        count = len(self.bad)
        if count >= self.config.rollback_after:
            return self._rollback(info, why, count)
        decisions = [self._skip(info, why, count)]
        if count >= self.config.cut_after and self._cut_allowed():
            cut = self._cut(info, f"{count} bad steps in the last {self.config.memory} batches")
            decisions += cut
        return decisions

    def _skip(self, info: StepInfo, why: str, count: int) -> Decision:
        self.skips += 1
        return Decision(
            "skip_step",
            f"{why}: step skipped ({count} bad in the last {self.config.memory} batches)",
            policy=self.name,
            details={"bad_in_memory": count},
        )

    def _cut_allowed(self) -> bool:
        return self.last_cut_call is None or self.calls - self.last_cut_call >= self.config.memory

    def _cut(self, info: StepInfo, because: str) -> list[Decision]:
        factor = self.floor.factor(info.lr, self.config.factor)
        if factor is None:
            return []  # at the floor already
        self.last_cut_call = self.calls
        return [
            Decision(
                "scale_lr",
                f"{because}: LR x {factor:.3g} ({info.lr:.3g} -> {info.lr * factor:.3g})",
                policy=self.name,
                factor=factor,
                details={"floor_lr": self.floor.floor_lr},
            )
        ]

    def _rollback(self, info: StepInfo, why: str, count: int) -> list[Decision]:
        first_call, first_step = self.bad[0]
        span = self.calls - first_call + 1  # batches from the first bad one to this one
        skip = max(span, self.since_checkpoint or 0)
        # after the loop skips `skip` batches from the checkpoint, it stands where we stand now
        self.since_checkpoint = skip
        self.bad.clear()
        self.rollbacks += 1
        if self.rollbacks > self.config.max_rollbacks:
            return [
                self._skip(info, why, count),
                Decision(
                    "stop",
                    f"{why}: still {count} bad steps in the last {self.config.memory} batches after "
                    f"{self.config.max_rollbacks} rollbacks; stopping (the best checkpoint is kept)",
                    policy=self.name,
                    details={"rollbacks": self.rollbacks - 1},
                ),
            ]
        rollback = Decision(
            "rollback",
            f"{why}: {count} bad steps in the last {self.config.memory} batches (from step {first_step}); "
            f"rolling back to the latest good checkpoint and skipping {skip} batches, past the bad ones "
            f"(rollback {self.rollbacks} of at most {self.config.max_rollbacks})",
            policy=self.name,
            skip_batches=skip,
            details={"first_bad_step": first_step, "last_bad_step": info.step, "bad_span": span, "bad_in_memory": count},
        )
        return [rollback, *self._cut(info, f"after rollback {self.rollbacks}")]

    # --- checkpoints -------------------------------------------------------------------
    def on_checkpoint(self) -> None:
        """A checkpoint is saved at the current batch: a rollback now goes back to here."""
        self.since_checkpoint = 0

    def state_dict(self) -> dict:
        return {
            "loss_window": self.loss_stats.state_dict(),
            "grad_window": self.grad_stats.state_dict(),
            "calls": self.calls,
            "bad": [list(b) for b in self.bad],
            "last_cut_call": self.last_cut_call,
            "rollbacks": self.rollbacks,
            "skips": self.skips,
            "floor": self.floor.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        keys = {"loss_window", "grad_window", "calls", "bad", "last_cut_call", "rollbacks", "skips", "floor"}
        missing = keys - set(state)
        if missing:
            raise ValueError(f"spike policy state lacks {', '.join(sorted(missing))}")
        self.loss_stats.load_state_dict(state["loss_window"])
        self.grad_stats.load_state_dict(state["grad_window"])
        self.calls = int(state["calls"])
        self.bad = deque((int(c), int(s)) for c, s in state["bad"])
        self.last_cut_call = state["last_cut_call"]
        self.rollbacks = int(state["rollbacks"])
        self.skips = int(state["skips"])
        self.floor.load_state_dict(state["floor"])
        self.since_checkpoint = 0  # a loaded state is a checkpoint's
