"""Early stopping on the validation metric (s1: val_ce, s2: val_mel_l1; lower is better).

A check improves when its value is below the best so far by more than
`min_delta`; otherwise it is a bad check. After `patience` bad checks in a
row the policy stops the run, naming the best check; the loop then exports
the best checkpoint's weights, not the last ones. A non-finite metric stops
at once. The counters live in state_dict, so a resumed run keeps counting.

The seed article's curve 0.72, 0.58, 0.46, 0.41, 0.45, 0.52, 0.61 with
patience 2 stops at the 6th check; the best is the 4th (0.41).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from advisor.watchdog.checks import check_int, check_number
from trainer.policy import Decision, Policy, ValInfo


@dataclass
class EarlyStopConfig:
    patience: int = 3  # bad validation checks in a row before stopping (Lightning's default)
    min_delta: float = 1e-4  # an improvement must beat the best by more than this (absolute)

    def __post_init__(self) -> None:
        check_int("watchdog.early_stop.patience", self.patience, 1)
        check_number("watchdog.early_stop.min_delta", self.min_delta, 0.0, math.inf, high_open=True)


class EarlyStopPolicy(Policy):
    name = "early_stop"

    def __init__(self, config: EarlyStopConfig | None = None) -> None:
        self.config = config or EarlyStopConfig()
        self.metric_name: str | None = None
        self.checks = 0  # validation checks seen
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_check: int | None = None  # 1-based index of the best check
        self.bad_checks = 0  # checks since the best

    def on_val(self, info: ValInfo) -> list[Decision]:
        if self.metric_name is None:
            self.metric_name = info.metric_name
        elif info.metric_name != self.metric_name:
            raise ValueError(
                f"early stopping watches {self.metric_name!r} but validation reported {info.metric_name!r}"
            )
        self.checks += 1
        value = info.value
        if not math.isfinite(value):
            return [self._stop(info, f"{info.metric_name} is {value} at check {self.checks}")]
        if self.best_value is None or value < self.best_value - self.config.min_delta:
            self.best_value, self.best_step, self.best_check = value, info.step, self.checks
            self.bad_checks = 0
            return []
        self.bad_checks += 1
        if self.bad_checks < self.config.patience:
            return []
        return [
            self._stop(
                info,
                f"{info.metric_name} {value:.4g} has not improved on its best by more than "
                f"{self.config.min_delta:g} for {self.bad_checks} checks",
            )
        ]

    def is_best(self, step: int) -> bool:
        """Whether the check at `step` is the best so far (for naming the best checkpoint)."""
        return self.best_step == step

    def _stop(self, info: ValInfo, why: str) -> Decision:
        if self.best_value is None:
            best = "no finite check yet"
        else:
            best = f"best {self.best_value:.4g} at check {self.best_check} (step {self.best_step})"
        return Decision(
            "stop",
            f"{why}: stopping; {best} is the one to keep",
            policy=self.name,
            details={
                "metric": info.metric_name,
                "best_value": self.best_value,
                "best_step": self.best_step,
                "best_check": self.best_check,
                "checks": self.checks,
            },
        )

    def state_dict(self) -> dict:
        return {
            "metric_name": self.metric_name,
            "checks": self.checks,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "best_check": self.best_check,
            "bad_checks": self.bad_checks,
        }

    def load_state_dict(self, state: dict) -> None:
        keys = {"metric_name", "checks", "best_value", "best_step", "best_check", "bad_checks"}
        missing = keys - set(state)
        if missing:
            raise ValueError(f"early_stop policy state lacks {', '.join(sorted(missing))}")
        self.metric_name = state["metric_name"]
        self.checks = int(state["checks"])
        self.best_value = None if state["best_value"] is None else float(state["best_value"])
        self.best_step = state["best_step"]
        self.best_check = state["best_check"]
        self.bad_checks = int(state["bad_checks"])
