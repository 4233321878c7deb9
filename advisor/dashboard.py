"""The run dashboard: a state model fed by events, pure render functions, two drivers.

    events.jsonl --read_events(offset)--> RunState.update(event)   O(1) per event
    RunState --render(state, width, now)--> one rich renderable      fixed size, any run length
    Dashboard: rich Live on a terminal; format_event_line: plain log lines otherwise

The dashboard never touches the GPU: memory figures come from the events
(step events carry the peak; an optional `memory` field carries used/peak/
budget bytes and where they came from). Every field is optional: a missing
one shows as "-". Curves are kept as `Series` (at most 2 x `capacity` points,
each the mean of a power-of-two run of raw values), so a frame costs the same
after 100 events or 10 million. Nothing in a frame reads the wall clock unless
`now` is passed (the live view's "updated ... ago").
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, TextIO

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from trainer.events import read_events

DECISIONS = ("skip_step", "scale_lr", "set_micro_batch", "rollback", "stop")
SPARK = "▁▂▃▄▅▆▇█"
GIB = 1024**3


# --- reading fields -------------------------------------------------------------------------
def number(value) -> float | None:
    """A float from an event field: numbers, and the "nan"/"inf" strings EventLog writes; else None."""
    kind = type(value)  # exact types first: this runs a dozen times per event
    if kind is float:
        return value
    if kind is int:
        return float(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _int(value) -> int | None:
    v = number(value)
    return int(v) if v is not None and math.isfinite(v) else None


# --- the state model ------------------------------------------------------------------------
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
    accumulation: int | None = None
    effective_batch: int | None = None
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
        step = _int(event.get("step"))
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
        self.total_steps = _int(e.get("total_steps")) or self.total_steps
        self.epochs = _int(e.get("epochs")) or self.epochs
        self.metric_name = str(e.get("metric_name") or self.metric_name)
        self._batch(e)
        self.step_times.clear()  # a restart: the old rate says nothing about the new process

    def _batch(self, e: dict) -> None:
        details = e.get("details") if isinstance(e.get("details"), dict) else {}
        for name in ("micro_batch", "accumulation", "effective_batch"):
            value = _int(e.get(name, details.get(name)))
            if value is not None:
                setattr(self, name, value)

    def _step(self, e: dict) -> None:
        self.status = "running"
        epoch = _int(e.get("epoch"))  # 0-based in step events (the loop's position); shown 1-based
        self.epoch = epoch + 1 if epoch is not None else self.epoch
        losses = e.get("losses") if isinstance(e.get("losses"), dict) else {}
        total = number(e.get("loss"))
        if total is None:
            total = number(losses.get("total"))
        if total is not None and not math.isfinite(total):
            self.nonfinite_steps += 1
        self._add_loss("total", total)
        for name, value in losses.items():
            if name != "total":
                self._add_loss(str(name), number(value))
        self._lr(e.get("lr"))
        self.grad_norm = self._grad(e.get("grad_norm"))
        self.samples_per_s = number(e.get("samples_per_s"))
        self.audio_per_s = number(e.get("audio_s_per_s", e.get("audio_seconds_per_s")))
        t, step = number(e.get("time")), _int(e.get("step"))
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

    @staticmethod
    def _grad(value) -> float | None:
        if isinstance(value, dict):  # one norm per optimiser: show the worst
            norms = [n for n in (number(v) for v in value.values()) if n is not None]
            bad = [n for n in norms if not math.isfinite(n)]
            return bad[0] if bad else (max(norms) if norms else None)
        return number(value)

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
        step = _int(e.get("step")) or 0
        self.val_recent.append((step, value))
        if math.isfinite(value):
            self.val.add(value)
            if self.val_best is None or value < self.val_best[1]:
                self.val_best = (step, value)

    def _checkpoint(self, e: dict) -> None:
        self.checkpoints += 1
        self.last_checkpoint = {
            "step": _int(e.get("step")),
            "file": e.get("file", e.get("path")),
            "finite": e.get("finite"),
            "best": e.get("best"),
        }

    def _log(self, kind: str, e: dict, reason: str) -> None:
        record = DecisionRecord(number(e.get("time")), _int(e.get("step")), kind, str(e.get("policy") or ""), reason)
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
        self._log("resume", e, _resume_text(e))
        self._batch(e)

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
}


# --- formatting helpers -----------------------------------------------------------------------
def sparkline(values: Sequence[float], width: int) -> str:
    """Values as block characters, resampled (bucket means) to at most `width`."""
    if not values or width <= 0:
        return ""
    n = len(values)
    if n > width:
        values = [
            sum(values[i * n // width : (i + 1) * n // width]) / ((i + 1) * n // width - i * n // width) for i in range(width)
        ]
    low, high = min(values), max(values)
    if high - low <= 1e-12 * max(abs(high), 1.0):
        return SPARK[3] * len(values)
    scale = (len(SPARK) - 1) / (high - low)
    return "".join(SPARK[int((v - low) * scale + 0.5)] for v in values)


def bar(fraction: float, width: int) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(fraction * width + 0.5)
    return "█" * full + "░" * (width - full)


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{max(digits - 2, 1)}e}"
    return f"{value:.{digits}g}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    clock = f"{h}:{m:02d}:{s:02d}"
    return f"{days}d {clock}" if days else clock


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f} GiB"


# --- render functions (pure: state in, renderable out) -------------------------------------
SIDE_BY_SIDE = 96  # from this console width on, curves and figures share a row


def render(state: RunState, width: int = 100, now: float | None = None) -> RenderableType:
    """One dashboard frame for a console `width` wide; `now` (unix s) adds "updated ... ago"."""
    if width >= SIDE_BY_SIDE:
        left = round(width * 0.58)
        body = Table.grid(padding=(0, 1))
        body.add_column(width=left)
        body.add_column(width=width - left - 1)
        body.add_row(render_curves(state, left), render_figures(state, width - left - 1))
    else:
        body = Group(render_curves(state, width), render_figures(state, width))
    return Group(render_header(state, width, now), body, render_decisions(state))


def render_header(state: RunState, width: int, now: float | None = None) -> Panel:
    r = state.run
    title = " · ".join(
        x
        for x in (
            f"{r.get('workload', '?')} ({r['size']})" if r.get("size") else str(r.get("workload", "run")),
            str(r["precision"]) if r.get("precision") else "",
            f"{fmt(number(r.get('slice_seconds')), 3)} s slices" if r.get("slice_seconds") is not None else "",
            "DPO" if r.get("dpo") else "",
            _table_source(r),
        )
        if x
    )
    status = {"waiting": "waiting for events", "running": "running", "restarting": "restarting"}.get(state.status, "ended")
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(status, style="bold")
    total = state.total_steps
    line.append(f"  step {state.step}" + (f"/{total}" if total else ""))
    if total:
        line.append(f"  {bar(state.step / total, max(10, width // 6))} {100 * state.step / total:3.0f}%")
    if state.epoch is not None:
        line.append(f"  epoch {state.epoch}" + (f"/{state.epochs}" if state.epochs else ""))
    line.append(f"  elapsed {duration(state.elapsed_s())}")
    if not state.ended:
        line.append(f"  ETA {duration(state.eta_s())}")
    rows = [line]
    if state.ended:
        rows.append(Text(state.end_reason, no_wrap=True, overflow="ellipsis"))
    subtitle = None
    if now is not None and state.last_time is not None:
        subtitle = f"updated {duration(max(now - state.last_time, 0.0))} ago"
    return Panel(Group(*rows), title=title, title_align="left", subtitle=subtitle, subtitle_align="right")


def _table_source(r: dict) -> str:
    source = r.get("table_source", r.get("batch_source"))
    return f"batch from {source}" if source else ""


def render_curves(state: RunState, width: int) -> Panel:
    """Loss components and the validation metric: name, sparkline, last value, min/best."""
    name_w, last_w, note_w = 10, 8, 14
    spark = max(8, width - 4 - name_w - last_w - note_w - 3)  # 4: border and padding; 3: gaps
    t = Table.grid(padding=(0, 1))
    t.add_column(width=name_w, no_wrap=True, overflow="ellipsis")
    t.add_column(width=spark, no_wrap=True)
    t.add_column(width=last_w, justify="right", no_wrap=True, overflow="ellipsis")
    t.add_column(width=note_w, no_wrap=True, overflow="ellipsis")
    for name, series in list(state.losses.items())[:8]:
        t.add_row(name, sparkline(series.values(), spark), fmt(series.last), f"min {fmt(series.low)}")
    if not state.losses:
        t.add_row("loss", "-", "", "")
    if state.metric_name or state.val.count:
        best = state.val_best
        note = f"best {fmt(best[1])} @{best[0]}" if best else ""
        t.add_row(state.metric_name or "val", sparkline(state.val.values(), spark), fmt(state.val.last), note)
    if state.nonfinite_steps:
        t.add_row("non-finite", "", str(state.nonfinite_steps), "steps")
    return Panel(t, title="losses", title_align="left")


def render_figures(state: RunState, width: int) -> Panel:
    """LR, gradient norm, batch, speed, memory against the budget, latest checkpoint."""
    t = Table.grid(padding=(0, 1))
    t.add_column(width=10, no_wrap=True, style="bold")
    t.add_column(width=max(8, width - 4 - 11), no_wrap=True, overflow="ellipsis")
    lrs = list(state.lr.items())
    for i, (group, value) in enumerate(lrs[:3]):
        t.add_row("lr" if i == 0 else "", f"{fmt(value, 3)} {group}")
    if len(lrs) > 3:
        t.add_row("", f"+{len(lrs) - 3} more groups")
    if not lrs:
        t.add_row("lr", "-")
    if state.lr_curve.count > 1:
        t.add_row("", sparkline(state.lr_curve.values(), 20) + " (log)")
    t.add_row("grad norm", fmt(state.grad_norm, 3))
    t.add_row("batch", _batch_text(state))
    t.add_row("speed", f"{fmt(state.samples_per_s, 3)} samples/s")
    t.add_row("", f"{fmt(state.audio_per_s, 3)} audio s/s")
    t.add_row("", f"{fmt(state.steps_per_s(), 3)} steps/s")
    for i, text in enumerate(_memory_lines(state)):
        t.add_row("memory" if i == 0 else "", text)
    ckpt = state.last_checkpoint
    if ckpt:
        flags = ", ".join(x for x in ("best" if ckpt.get("best") else "", "NOT finite" if ckpt.get("finite") is False else "") if x)
        t.add_row("checkpoint", f"step {ckpt.get('step')}" + (f" ({flags})" if flags else "") + f", {state.checkpoints} saved")
    return Panel(t, title="run", title_align="left")


def _batch_text(state: RunState) -> str:
    micro, acc, eff = state.micro_batch, state.accumulation, state.effective_batch
    if micro is None:
        return "-"
    text = f"{micro} x {acc if acc is not None else '?'}"
    return text + (f" = {eff} effective" if eff is not None else "")


def _memory_lines(state: RunState) -> list[str]:
    """Up to three short lines: used and peak; a bar against the budget; the run's max peak and source."""
    first = ", ".join(
        x
        for x in (
            f"{state.memory_used / GIB:.2f} used" if state.memory_used is not None else "",
            f"peak {state.memory_peak / GIB:.2f}" if state.memory_peak is not None else "",
        )
        if x
    )
    lines = [f"{first} GiB" if first else "-"]
    if state.memory_budget:
        used = max(state.memory_used or 0.0, state.memory_peak or 0.0)  # the peak is what runs out
        lines.append(f"{bar(used / state.memory_budget, 8)} {100 * used / state.memory_budget:.0f}% of {gib(state.memory_budget)}")
    last = []
    if state.memory_peak_max is not None:
        last.append(f"max {gib(state.memory_peak_max)}")
    if state.memory_source:
        last.append(f"({state.memory_source})")
    if last:
        lines.append(" ".join(last))
    return lines


def render_decisions(state: RunState, rows: int = 6) -> Panel:
    """The latest watchdog decisions (and OOMs, restarts, resumes), one line each, newest last."""
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(justify="right", no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    recent = list(state.decisions)[-rows:]
    for d in recent:
        t.add_row(f"step {d.step}" if d.step is not None else "", d.kind, d.policy, d.reason)
    if not recent:
        t.add_row("", "none yet", "", "")
    counts = ", ".join(f"{n} {k}" for k, n in state.decision_counts.items())
    extra = [x for x in (counts, f"{state.ooms} OOM" if state.ooms else "", f"{state.restarts} restarts" if state.restarts else "") if x]
    title = "watchdog" + (f" ({'; '.join(extra)})" if extra else "")
    return Panel(t, title=title, title_align="left")


# --- plain log lines ---------------------------------------------------------------------------
def format_event_line(event: dict, clock: bool = True) -> str:
    """One log line per event, for nohup/CI (no terminal). `clock` prefixes the local time."""
    kind = str(event.get("kind", "?"))
    step = event.get("step")
    prefix = ""
    t = number(event.get("time"))
    if clock and t is not None:
        prefix = time.strftime("%H:%M:%S ", time.localtime(t))
    formatter = _LINES.get(kind)
    if formatter is None:
        formatter = _decision_line if kind in DECISIONS else _other_line
    return prefix + formatter(kind, step, event)


def _start_line(kind, step, e) -> str:
    what = f"start {e.get('workload', '?')}" + (f" ({e['size']})" if e.get("size") else "")
    bits = [
        str(e["precision"]) if e.get("precision") else "",
        f"{fmt(number(e.get('slice_seconds')), 3)} s slices" if e.get("slice_seconds") is not None else "",
        ("DPO on" if e.get("dpo") else "DPO off") if e.get("dpo") is not None else "",
        f"batch {e.get('micro_batch', '?')} x {e.get('accumulation', '?')} = {e.get('effective_batch', '?')}"
        if e.get("micro_batch") is not None
        else "",
        _table_source(e),
        f"{e['total_steps']} steps" if e.get("total_steps") is not None else "",
        f"{e['epochs']} epochs" if e.get("epochs") is not None else "",
        f"watching {e['metric_name']}" if e.get("metric_name") else "",
    ]
    return f"{what} at step {step}: " + ", ".join(b for b in bits if b)


def _step_line(kind, step, e) -> str:
    losses = e.get("losses") if isinstance(e.get("losses"), dict) else {}
    total = number(e.get("loss"))
    if total is None:
        total = number(losses.get("total"))
    epoch = _int(e.get("epoch"))  # 0-based in step events; 1-based on screen
    parts = [f"step {step}" + (f" epoch {epoch + 1}" if epoch is not None else ""), f"loss {fmt(total)}"]
    others = [f"{k} {fmt(number(v))}" for k, v in losses.items() if k != "total"]
    if others:
        parts.append("[" + " ".join(others) + "]")
    lr = e.get("lr")
    if isinstance(lr, dict) and lr:
        parts.append(f"lr {fmt(number(next(iter(lr.values()))), 3)}")
    elif number(lr) is not None:
        parts.append(f"lr {fmt(number(lr), 3)}")
    grad = RunState._grad(e.get("grad_norm"))
    if grad is not None:
        parts.append(f"grad {fmt(grad, 3)}")
    sps = number(e.get("samples_per_s"))
    if sps is not None:
        parts.append(f"{fmt(sps, 3)} samples/s")
    peak = number(e.get("peak_memory_bytes"))
    memory = e.get("memory") if isinstance(e.get("memory"), dict) else {}
    peak = number(memory.get("peak_bytes")) if peak is None else peak
    if peak is not None:
        budget = number(memory.get("budget_bytes"))
        parts.append(f"peak {gib(peak)}" + (f" of {gib(budget)}" if budget is not None else ""))
    return " ".join(parts)


def _val_line(kind, step, e) -> str:
    metric = e.get("metric") if isinstance(e.get("metric"), str) else "metric"
    line = f"val step {step}" + (f" after epoch {e['epoch']}" if e.get("epoch") is not None else "")
    line += f": {metric} {fmt(number(e.get('value')))}"
    return line + (" (best)" if e.get("best") else "")


def _checkpoint_line(kind, step, e) -> str:
    where = e.get("file", e.get("path", "?"))
    flags = [x for x in ("best" if e.get("best") else "", "NOT finite" if e.get("finite") is False else "") if x]
    return f"checkpoint step {step}: {where}" + (f" ({', '.join(flags)})" if flags else "")


def _decision_line(kind, step, e) -> str:
    policy = f" [{e['policy']}]" if e.get("policy") else ""
    return f"watchdog step {step} {kind}{policy}: {e.get('reason', '')}"


def _oom_line(kind, step, e) -> str:
    error = str(e.get("error", "")).splitlines()[0] if e.get("error") else ""
    return f"OOM at step {step}, micro-batch {e.get('micro_batch', '?')}" + (f": {error}" if error else "")


def _restart_line(kind, step, e) -> str:
    attempt = f" attempt {e['attempt']}" if e.get("attempt") is not None else ""
    why = e.get("reason") or ""
    return f"restart{attempt} at step {step}" + (f": {why}" if why else "")


def _resume_text(e: dict) -> str:
    skipped = e.get("skipped") if isinstance(e.get("skipped"), list) else []
    note = f" ({len(skipped)} unusable checkpoint{'s' if len(skipped) != 1 else ''} skipped)" if skipped else ""
    if e.get("from_step") is None:
        return "no usable checkpoint: starting from step 0" + note
    return f"from step {e['from_step']}" + (f" ({e['checkpoint']})" if e.get("checkpoint") else "") + note


def _resume_line(kind, step, e) -> str:
    return f"resume at step {step}: {_resume_text(e)}"


def _end_line(kind, step, e) -> str:
    reason = ": ".join(str(x) for x in (e.get("reason"), e.get("detail")) if x)
    return f"end at step {step}" + (f": {reason}" if reason else "")


def _other_line(kind, step, e) -> str:
    fields = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("time", "kind", "step"))
    return f"{kind} step {step}" + (f" {fields}" if fields else "")


_LINES = {
    "start": _start_line,
    "step": _step_line,
    "val": _val_line,
    "checkpoint": _checkpoint_line,
    "oom": _oom_line,
    "restart": _restart_line,
    "resume": _resume_line,
    "end": _end_line,
}


# --- drivers -----------------------------------------------------------------------------------
class Dashboard:
    """Follows an events.jsonl (read-only, incrementally) and shows it.

    `run()` draws a rich Live frame on a terminal and prints plain lines
    otherwise; it returns when the run's end event arrives, when `until()`
    says so, or on Ctrl-C (raised to the caller)."""

    def __init__(
        self,
        events_path: str | os.PathLike,
        refresh_per_second: float = 2.0,
        console: Console | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not refresh_per_second > 0:
            raise ValueError(f"refresh rate must be > 0 per second, got {refresh_per_second!r}")
        self.path = Path(events_path)
        self.refresh_per_second = refresh_per_second
        self.console = console or Console()
        self.clock = clock
        self.state = RunState()
        self.offset = 0

    def poll(self) -> list[dict]:
        """Apply the events appended since the last poll; returns them."""
        events, self.offset = read_events(self.path, self.offset)
        self.state.update_all(events)
        return events

    def frame(self) -> RenderableType:
        return render(self.state, self.console.width, now=self.clock())

    def run(self, until: Callable[[], bool] | None = None, plain: bool | None = None, out: TextIO | None = None) -> RunState:
        plain = not self.console.is_terminal if plain is None else plain
        if plain:
            return self._run_plain(until, out or sys.stdout)
        from rich.live import Live

        with Live(self.frame(), console=self.console, auto_refresh=False, transient=False) as live:
            while True:
                done = self._done(until)  # polls once more when until() says the run is gone
                self.poll()
                live.update(self.frame(), refresh=True)
                if done or self.state.ended:
                    return self.state
                time.sleep(1.0 / self.refresh_per_second)

    def _run_plain(self, until: Callable[[], bool] | None, out: TextIO) -> RunState:
        while True:
            finished = self.state.ended or (until is not None and until())
            for event in self.poll():  # after until(): what the run wrote before it went away
                out.write(format_event_line(event) + "\n")
            out.flush()
            if finished or self.state.ended:
                return self.state
            time.sleep(1.0 / self.refresh_per_second)

    def _done(self, until: Callable[[], bool] | None) -> bool:
        if self.state.ended:
            return True
        if until is not None and until():
            self.poll()  # what the run wrote before it went away
            return True
        return False


def load_state(events_path: str | os.PathLike) -> RunState:
    """The state after every event in the file (for --once and --json)."""
    state = RunState()
    events, _ = read_events(events_path)
    state.update_all(events)
    return state
