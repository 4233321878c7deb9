"""The dashboard's state: a model of a run fed one event at a time (no rich, no terminal).

    events --RunState.update(event)--> RunState        O(1) per event, fixed size
    RunState.summary() -> JSON-ready dict               `advisor dashboard --json`

Every event field is optional: a missing one stays None. Curves are `Series`
(at most 2 x `capacity` points, each the mean of a power-of-two run of raw
values), so the state costs the same after 100 events or 10 million.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from trainer.events import DECISIONS, number


def integer(value) -> int | None:
    """A finite event field as an int, else None."""
    v = number(value)
    return int(v) if v is not None and math.isfinite(v) else None


class Series:
    """A whole run's curve in bounded memory: points are means of `stride` raw values;
    when `2 x capacity` points exist, neighbours merge and the stride doubles."""

    def __init__(self, capacity: int = 128) -> None:
        self.capacity = capacity
        self.points: list[float] = []
        self.stride = 1
        self._sum = 0.0
        self._n = 0
        self.count = 0
        self.last: float | None = None
        self.low: float | None = None
        self.high: float | None = None

    def add(self, value: float) -> None:
        self.count += 1
        self.last = value
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)
        self._sum += value
        self._n += 1
        if self._n == self.stride:
            self.points.append(self._sum / self._n)
            self._sum, self._n = 0.0, 0
            if len(self.points) >= 2 * self.capacity:
                p = self.points
                self.points = [(p[i] + p[i + 1]) / 2 for i in range(0, len(p), 2)]
                self.stride *= 2

    def values(self) -> list[float]:
        """The downsampled curve, oldest first (a partial last point included)."""
        return self.points + ([self._sum / self._n] if self._n else [])


@dataclass
class DecisionRecord:
    time: float | None
    step: int | None
    kind: str
    policy: str
    reason: str


@dataclass
class RunState:
    """Everything the dashboard shows, updated one event at a time."""

    run: dict = field(default_factory=dict)  # the latest start event's fields
    status: str = "waiting"  # waiting | running | restarting | ended
    end_reason: str = ""
    events: int = 0
    first_time: float | None = None
    last_time: float | None = None
    step: int = 0
    epoch: int | None = None
    total_steps: int | None = None
    epochs: int | None = None
    losses: dict[str, Series] = field(default_factory=dict)  # "total" first
    nonfinite_steps: int = 0
    lr: dict[str, float] = field(default_factory=dict)
    lr_curve: Series = field(default_factory=Series)
    grad_norm: float | None = None
    samples_per_s: float | None = None
    audio_per_s: float | None = None
    step_times: deque = field(default_factory=lambda: deque(maxlen=64))  # (time, step) of step events
    memory_used: float | None = None
    memory_peak: float | None = None  # latest step's peak
    memory_peak_max: float | None = None  # over the run
    memory_budget: float | None = None
    memory_source: str = ""
    micro_batch: int | None = None
    bucket: int | None = None  # the length bucket of the latest step (each bucket its own micro-batch)
    accumulation: int | None = None
    effective_batch: int | None = None
    world_size: int | None = None  # processes (torchrun): micro x accumulation x processes = effective
    metric_name: str = ""
    val: Series = field(default_factory=lambda: Series(64))
    val_recent: deque = field(default_factory=lambda: deque(maxlen=8))  # (step, value)
    val_best: tuple[int, float] | None = None  # (step, value)
    checkpoints: int = 0
    last_checkpoint: dict = field(default_factory=dict)
    decisions: deque = field(default_factory=lambda: deque(maxlen=50))  # DecisionRecord, newest last
    decision_counts: dict[str, int] = field(default_factory=dict)
    ooms: int = 0
    restarts: int = 0
    samples: dict = field(default_factory=dict)  # the latest samples event: step, folder, files, note
    samples_steps: list = field(default_factory=list)  # validations that left samples (bounded: the last 64)
    best_samples: str | None = None  # export/samples when the best checkpoint's step has samples
    export: dict = field(default_factory=dict)  # the latest export event: source, checkpoint, files, copied_to

    # --- updating ----------------------------------------------------------------------------
    def update(self, event: dict) -> None:
        kind = event.get("kind")
        if not isinstance(kind, str):
            return
        self.events += 1
        t = number(event.get("time"))
        if t is not None:
            self.first_time = t if self.first_time is None else self.first_time
            self.last_time = t
        step = integer(event.get("step"))
        if step is not None:
            self.step = step
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, event)
        elif kind in DECISIONS:
            self._decision(kind, event)

    def update_all(self, events: Iterable[dict]) -> None:
        for event in events:
            self.update(event)

    def _start(self, e: dict) -> None:
        self.run = {k: v for k, v in e.items() if k not in ("time", "kind", "step")}
        self.status = "running"
        self.total_steps = integer(e.get("total_steps")) or self.total_steps
        self.epochs = integer(e.get("epochs")) or self.epochs
        self.metric_name = str(e.get("metric_name") or self.metric_name)
        self.world_size = integer(e.get("world_size")) or self.world_size
        self._batch(e)
        self.step_times.clear()  # a restart: the old rate says nothing about the new process

    def _batch(self, e: dict) -> None:
        details = e.get("details") if isinstance(e.get("details"), dict) else {}
        for name in ("micro_batch", "accumulation", "effective_batch", "bucket"):
            value = integer(e.get(name, details.get(name)))
            if value is not None:
                setattr(self, name, value)

    def _step(self, e: dict) -> None:
        self.status = "running"
        epoch = integer(e.get("epoch"))  # 0-based in step events (the loop's position); shown 1-based
        self.epoch = epoch + 1 if epoch is not None else self.epoch
        losses = e.get("losses") if isinstance(e.get("losses"), dict) else {}
        total = number(losses.get("total"))
        if total is not None and not math.isfinite(total):
            self.nonfinite_steps += 1
        self._add_loss("total", total)
        for name, value in losses.items():
            if name != "total":
                self._add_loss(str(name), number(value))
        self._lr(e.get("lr"))
        self.grad_norm = worst_grad_norm(e.get("grad_norm"))
        self.samples_per_s = number(e.get("samples_per_s"))
        self.audio_per_s = number(e.get("audio_s_per_s", e.get("audio_seconds_per_s")))
        t, step = number(e.get("time")), integer(e.get("step"))
        if t is not None and step is not None:
            self.step_times.append((t, step))
        self._memory(e)
        self._batch(e)

    def _add_loss(self, name: str, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            return
        series = self.losses.get(name)
        if series is None:
            series = self.losses[name] = Series()
        series.add(value)

    def _lr(self, lr) -> None:
        if isinstance(lr, dict):
            values = {str(k): v for k, v in ((k, number(v)) for k, v in lr.items()) if v is not None}
        else:
            single = number(lr)
            values = {"lr": single} if single is not None else {}
        if values:
            self.lr = values
            first = next(iter(values.values()))
            if first > 0 and math.isfinite(first):
                self.lr_curve.add(math.log10(first))  # log scale: cuts show as steps

    def _memory(self, e: dict) -> None:
        memory = e.get("memory") if isinstance(e.get("memory"), dict) else {}
        used = number(memory.get("used_bytes"))
        peak = number(memory.get("peak_bytes"))  # measured against the budget: preferred
        peak = number(e.get("peak_memory_bytes")) if peak is None else peak
        budget = number(memory.get("budget_bytes"))
        source = memory.get("source") or e.get("memory_kind")
        if used is not None:
            self.memory_used = used
        if peak is not None:
            self.memory_peak = peak
            self.memory_peak_max = peak if self.memory_peak_max is None else max(self.memory_peak_max, peak)
        if budget is not None:
            self.memory_budget = budget
        if source:
            self.memory_source = str(source)

    def _val(self, e: dict) -> None:
        value = number(e.get("value"))
        metric = e.get("metric")
        if isinstance(metric, str) and metric:
            self.metric_name = metric
        elif metric is not None and value is None:
            value = number(metric)  # {metric: 0.41} without a separate value
        if value is None:
            return
        step = integer(e.get("step")) or 0
        self.val_recent.append((step, value))
        if math.isfinite(value):
            self.val.add(value)
            if self.val_best is None or value < self.val_best[1]:
                self.val_best = (step, value)

    def _checkpoint(self, e: dict) -> None:
        self._best_checkpoint(e)
        self.checkpoints += 1
        self.last_checkpoint = {
            "step": integer(e.get("step")),
            "file": e.get("file"),
            "finite": e.get("finite"),
            "best": e.get("best"),
        }

    def _log(self, kind: str, e: dict, reason: str) -> None:
        record = DecisionRecord(number(e.get("time")), integer(e.get("step")), kind, str(e.get("policy") or ""), reason)
        self.decisions.append(record)

    def _decision(self, kind: str, e: dict) -> None:
        self.decision_counts[kind] = self.decision_counts.get(kind, 0) + 1
        self._log(kind, e, str(e.get("reason") or ""))
        if kind == "set_micro_batch":
            self._batch(e)

    def _oom(self, e: dict) -> None:
        self.ooms += 1
        error = str(e.get("error") or "").splitlines()[0] if e.get("error") else ""
        self._log("oom", e, f"out of memory at micro-batch {e.get('micro_batch', '?')}" + (f": {error}" if error else ""))

    def _restart(self, e: dict) -> None:
        """The supervisor starts the trainer again (only these count as restarts)."""
        self.restarts += 1
        self.status = "restarting"
        why = e.get("reason") or ""
        attempt = f"attempt {e['attempt']}" if e.get("attempt") is not None else ""
        self._log("restart", e, ": ".join(x for x in (attempt, str(why)) if x))
        self._batch(e)

    def _resume(self, e: dict) -> None:
        """The trainer picked up a checkpoint (after a restart, or `advisor train --resume`)."""
        self._log("resume", e, resume_text(e))
        self._batch(e)

    def _samples(self, e: dict) -> None:
        files = e.get("files") if isinstance(e.get("files"), list) else []
        self.samples = {"step": integer(e.get("step")), "folder": e.get("folder"), "files": len(files), "note": e.get("note")}
        if e.get("folder"):
            self.samples_steps = (self.samples_steps + [integer(e.get("step"))])[-64:]

    def _best_checkpoint(self, e: dict) -> None:
        if e.get("best") and integer(e.get("step")) in self.samples_steps:
            self.best_samples = "export/samples"

    def _export(self, e: dict) -> None:
        self.export = {k: e.get(k) for k in ("step", "source", "checkpoint", "files", "copied_to")}

    def _end(self, e: dict) -> None:
        self.status = "ended"
        reason, detail = e.get("reason"), e.get("detail")
        self.end_reason = ": ".join(str(x) for x in (reason, detail) if x) or "ended"

    # --- derived figures ---------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self.status == "ended"

    def steps_per_s(self) -> float | None:
        """Optimiser steps per second over the last 64 step events (event times, not the wall clock)."""
        if len(self.step_times) < 2:
            return None
        (t0, s0), (t1, s1) = self.step_times[0], self.step_times[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

    def eta_s(self) -> float | None:
        rate = self.steps_per_s()
        if rate is None or self.total_steps is None or self.ended:
            return None
        return max(self.total_steps - self.step, 0) / rate

    def elapsed_s(self) -> float | None:
        if self.first_time is None or self.last_time is None:
            return None
        return self.last_time - self.first_time

    def summary(self) -> dict:
        """JSON-ready summary (`advisor dashboard --json`): non-finite numbers become null."""

        def f(v):
            return v if isinstance(v, (int, float)) and math.isfinite(v) else None

        return {
            "status": self.status,
            "end_reason": self.end_reason or None,
            "run": self.run,
            "events": self.events,
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "elapsed_s": f(self.elapsed_s()),
            "steps_per_s": f(self.steps_per_s()),
            "eta_s": f(self.eta_s()),
            "losses": {
                name: {"last": f(s.last), "min": f(s.low), "max": f(s.high), "count": s.count}
                for name, s in self.losses.items()
            },
            "nonfinite_steps": self.nonfinite_steps,
            "lr": {k: f(v) for k, v in self.lr.items()},
            "grad_norm": f(self.grad_norm),
            "samples_per_s": f(self.samples_per_s),
            "audio_seconds_per_s": f(self.audio_per_s),
            "memory": {
                "used_bytes": f(self.memory_used),
                "peak_bytes": f(self.memory_peak),
                "max_peak_bytes": f(self.memory_peak_max),
                "budget_bytes": f(self.memory_budget),
                "source": self.memory_source or None,
            },
            "batch": {"micro": self.micro_batch, "accumulation": self.accumulation, "effective": self.effective_batch},
            "validation": {
                "metric": self.metric_name or None,
                "checks": self.val.count,
                "last": f(self.val.last),
                "best": f(self.val_best[1]) if self.val_best else None,
                "best_step": self.val_best[0] if self.val_best else None,
            },
            "checkpoints": {"count": self.checkpoints, "last": self.last_checkpoint or None},
            "decisions": {
                "counts": dict(self.decision_counts),
                "recent": [
                    {"step": d.step, "kind": d.kind, "policy": d.policy, "reason": d.reason} for d in list(self.decisions)[-10:]
                ],
            },
            "ooms": self.ooms,
            "restarts": self.restarts,
            "samples": {**self.samples, "best": self.best_samples} if self.samples else None,
            "init": self.run.get("init"),
            "export": self.export or None,
        }


_HANDLERS: dict[str, Callable[[RunState, dict], None]] = {
    "start": RunState._start,
    "step": RunState._step,
    "val": RunState._val,
    "checkpoint": RunState._checkpoint,
    "oom": RunState._oom,
    "restart": RunState._restart,
    "resume": RunState._resume,
    "end": RunState._end,
    "samples": RunState._samples,
    "export": RunState._export,
}



def worst_grad_norm(value) -> float | None:
    """A step's gradient norm: the number, or with one norm per optimiser the worst (a non-finite one first)."""
    if isinstance(value, dict):
        norms = [n for n in (number(v) for v in value.values()) if n is not None]
        bad = [n for n in norms if not math.isfinite(n)]
        return bad[0] if bad else (max(norms) if norms else None)
    return number(value)


def resume_text(e: dict) -> str:
    skipped = e.get("skipped") if isinstance(e.get("skipped"), list) else []
    note = f" ({len(skipped)} unusable checkpoint{'s' if len(skipped) != 1 else ''} skipped)" if skipped else ""
    if e.get("from_step") is None:
        return "no usable checkpoint: starting from step 0" + note
    return f"from step {e['from_step']}" + (f" ({e['checkpoint']})" if e.get("checkpoint") else "") + note

