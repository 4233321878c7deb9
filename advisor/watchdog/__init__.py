"""The watchdog: small policies the training loop consults (trainer/policy.py).

Each policy is a plain object with its own state (saved in checkpoints) that
reads what the loop tells it and returns `Decision`s; the loop applies them
in order and logs each one as an event with its reason.

    oom          shrink the micro-batch on out-of-memory (and `is_oom_error`)
    spike        skip non-finite / spiking steps; repeated -> cut LR; persistent -> roll back
    oscillation  cut the LR when the loss stops decreasing (dlib's test)
    early_stop   stop when the validation metric has not improved for `patience` checks

`default_policies(WatchdogConfig(...))` builds them in that order. A policy
whose config is None is left out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from advisor.watchdog.early_stop import EarlyStopConfig, EarlyStopPolicy
from advisor.watchdog.oom import OOMConfig, OOMPolicy, is_oom_error
from advisor.watchdog.oscillation import OscillationConfig, OscillationPolicy
from advisor.watchdog.spike import SpikeConfig, SpikePolicy

__all__ = [
    "WatchdogConfig",
    "default_policies",
    "is_oom_error",
    "OOMConfig",
    "OOMPolicy",
    "SpikeConfig",
    "SpikePolicy",
    "OscillationConfig",
    "OscillationPolicy",
    "EarlyStopConfig",
    "EarlyStopPolicy",
]

# field name -> config class, in the order the policies run
SECTIONS = {
    "oom": OOMConfig,
    "spike": SpikeConfig,
    "oscillation": OscillationConfig,
    "early_stop": EarlyStopConfig,
}


@dataclass
class WatchdogConfig:
    """One section per policy; None turns that policy off."""

    oom: OOMConfig | None = field(default_factory=OOMConfig)
    spike: SpikeConfig | None = field(default_factory=SpikeConfig)
    oscillation: OscillationConfig | None = field(default_factory=OscillationConfig)
    early_stop: EarlyStopConfig | None = field(default_factory=EarlyStopConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if value is not None and not isinstance(value, cls):
                raise ValueError(f"watchdog.{name}: expected a {cls.__name__} or None, got {type(value).__name__}")

    def to_dict(self) -> dict:
        """Plain data for the run's config snapshot (None = policy off)."""
        return {name: None if getattr(self, name) is None else dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_dict(cls, data: dict | None) -> "WatchdogConfig":
        """Build from `to_dict`'s shape; missing sections/fields take defaults, unknown ones are errors."""
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ValueError(f"watchdog: expected a mapping of sections, got {type(data).__name__}")
        unknown = set(data) - set(SECTIONS)
        if unknown:
            raise ValueError(f"watchdog: unknown section {sorted(unknown)[0]!r} (expected {', '.join(SECTIONS)})")
        sections = {}
        for name, section_cls in SECTIONS.items():
            if name not in data:
                continue
            section = data[name]
            if section is None:
                sections[name] = None
                continue
            if not isinstance(section, dict):
                raise ValueError(f"watchdog.{name}: expected a mapping of fields or null, got {section!r}")
            known = {f.name for f in dataclasses.fields(section_cls)}
            bad = set(section) - known
            if bad:
                raise ValueError(
                    f"watchdog.{name}: unknown field {sorted(bad)[0]!r} (expected one of {', '.join(sorted(known))})"
                )
            sections[name] = section_cls(**section)
        return cls(**sections)


def default_policies(
    config: WatchdogConfig | None = None,
    *,
    advice: Callable[[], str] | None = None,
    precision: str = "fp32",
) -> list:
    """The enabled policies in the order the loop should consult them.

    `advice` (from the advisor) explains what would fit when even micro-batch 1
    runs out of memory. `precision` "fp16" tells the spike policy a GradScaler
    handles gradient overflow."""
    config = config or WatchdogConfig()
    policies: list = []
    if config.oom is not None:
        policies.append(OOMPolicy(config.oom, advice=advice))
    if config.spike is not None:
        policies.append(SpikePolicy(config.spike, grad_scaler=precision == "fp16"))
    if config.oscillation is not None:
        policies.append(OscillationPolicy(config.oscillation))
    if config.early_stop is not None:
        policies.append(EarlyStopPolicy(config.early_stop))
    return policies
