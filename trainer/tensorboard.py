"""TensorBoard as a consumer of the event log: one mapping, used live and after the fact.

    event (dict) --scalars(event)--> [(tag, value)]     losses, metric, LR, grad norms, memory, speed
    event (dict) --text(event)-----> (tag, markdown)    watchdog decisions, OOMs, restarts, resumes, end
    TensorBoardWriter(RUN_DIR/tensorboard).write(event)  rank 0, from the loop's event hook
    export(events.jsonl, out_dir)                        `advisor export-tb RUN_DIR`: the same, replayed

events.jsonl stays the source of truth; the TensorBoard files are derived from
it, so a live run and an export of the same events hold the same scalars (each
at the event's step, with the event's wall time). Memory is in GiB, throughput
in samples and audio seconds per wall second. Non-finite values are left out
(a NaN flattens TensorBoard's axis); the `step` event's `nonfinite` scalar
counts them instead.

The writer is `torch.utils.tensorboard.SummaryWriter` (the `tensorboard`
package), imported when the first writer is made.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

from trainer.events import DECISIONS, number, read_events

GIB = 1024**3
TEXT_KINDS = (*DECISIONS, "oom", "restart", "resume", "end", "samples")
EVENT_FILE_PREFIX = "events.out.tfevents."


def scalars(event: dict) -> list[tuple[str, float]]:
    """The TensorBoard scalars of one event, as (tag, value); finite values only."""
    kind = event.get("kind")
    out: list[tuple[str, float]] = []
    if kind == "step":
        out += _step_scalars(event)
    elif kind == "val":
        metric = event.get("metric") if isinstance(event.get("metric"), str) else "metric"
        out.append((f"val/{metric}", number(event.get("value"))))
    elif kind == "oom":
        out.append(("memory/oom_micro_batch", number(event.get("micro_batch"))))
    elif kind == "set_micro_batch":
        details = event.get("details") if isinstance(event.get("details"), dict) else {}
        out.append(("batch/micro", number(details.get("micro_batch", event.get("micro_batch")))))
    return [(tag, v) for tag, v in out if v is not None and math.isfinite(v)]


def _step_scalars(e: dict) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    losses = e.get("losses") if isinstance(e.get("losses"), dict) else {}
    values = {str(k): number(v) for k, v in losses.items()}
    out += [(f"loss/{name}", v) for name, v in values.items()]
    out.append(("loss/nonfinite", float(sum(1 for v in values.values() if v is not None and not math.isfinite(v)))))
    lr = e.get("lr")
    if isinstance(lr, dict):  # "optimiser/group" -> LR
        out += [(f"lr/{group}", number(v)) for group, v in lr.items()]
    else:
        out.append(("lr/lr", number(lr)))
    grad = e.get("grad_norm")
    if isinstance(grad, dict):  # one norm per optimiser, before clipping
        out += [(f"grad_norm/{name}", number(v)) for name, v in grad.items()]
    else:
        out.append(("grad_norm/total", number(grad)))
    memory = e.get("memory") if isinstance(e.get("memory"), dict) else {}
    for tag, value in (
        ("memory/peak_gib", number(e.get("peak_memory_bytes"))),
        ("memory/used_gib", number(memory.get("used_bytes"))),
        ("memory/budget_peak_gib", number(memory.get("peak_bytes"))),
        ("memory/budget_gib", number(memory.get("budget_bytes"))),
    ):
        out.append((tag, value / GIB if value is not None else None))
    out += [
        ("throughput/samples_per_s", number(e.get("samples_per_s"))),
        ("throughput/audio_seconds_per_s", number(e.get("audio_seconds_per_s"))),
        ("throughput/step_seconds", number(e.get("step_seconds"))),
        ("batch/micro", number(e.get("micro_batch"))),
        ("batch/accumulation", number(e.get("accumulation"))),
    ]
    return out


def text(event: dict) -> tuple[str, str] | None:
    """A watchdog decision (or OOM, restart, resume, end, samples) as (tag, one markdown line); else None."""
    kind = event.get("kind")
    if kind not in TEXT_KINDS:
        return None
    step = event.get("step")
    if kind in DECISIONS:
        policy = f" [{event['policy']}]" if event.get("policy") else ""
        return f"watchdog/{kind}", f"step {step}: **{kind}**{policy}: {event.get('reason', '')}"
    if kind == "oom":
        error = str(event.get("error") or "").splitlines()[0] if event.get("error") else ""
        return "watchdog/oom", f"step {step}: out of memory at micro-batch {event.get('micro_batch', '?')}: {error}"
    if kind == "samples":
        if not event.get("folder"):  # s1 without an s2 export to voice it: the note says what to pass
            return "samples", f"step {step}: no samples: {event.get('note') or 'none written'}"
        note = f"; {event['note']}" if event.get("note") else ""
        return "samples", f"step {step}: {event['folder']} ({len(event.get('files') or [])} files{note})"
    fields = ", ".join(f"{k}={event[k]}" for k in ("reason", "detail", "attempt", "from_step", "checkpoint") if event.get(k) not in (None, ""))
    return f"run/{kind}", f"step {step}: {kind}" + (f": {fields}" if fields else "")


class TensorBoardWriter:
    """Writes events as TensorBoard summaries into `log_dir` (one events.out.tfevents.* file per writer)."""

    def __init__(self, log_dir: str | os.PathLike, flush_secs: int = 10) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    def write(self, event: dict) -> None:
        step = event.get("step")
        step = int(step) if isinstance(step, int) and not isinstance(step, bool) else 0
        walltime = number(event.get("time"))
        for tag, value in scalars(event):
            self._writer.add_scalar(tag, value, step, walltime=walltime)
        note = text(event)
        if note is not None:
            self._writer.add_text(*note, global_step=step, walltime=walltime)
        if event.get("kind") == "end":
            self._writer.flush()

    def write_all(self, events: Iterable[dict]) -> int:
        n = 0
        for event in events:
            self.write(event)
            n += 1
        return n

    def close(self) -> None:
        self._writer.close()


def event_files(log_dir: str | os.PathLike) -> list[Path]:
    folder = Path(log_dir)
    return sorted(folder.glob(EVENT_FILE_PREFIX + "*")) if folder.is_dir() else []


def export(events_path: str | os.PathLike, log_dir: str | os.PathLike, replace: bool = False) -> tuple[int, list[Path]]:
    """Replay an events.jsonl into TensorBoard files under `log_dir`; returns (events read, files written).

    ValueError if `log_dir` already holds event files (a live run's), unless
    `replace` (they are deleted first: the new file has everything they had)."""
    existing = event_files(log_dir)
    if existing and not replace:
        raise ValueError(f"{log_dir}: already holds TensorBoard event files ({existing[0].name}); pass --replace or --out DIR")
    for path in existing:
        path.unlink()
    events, _ = read_events(events_path)
    writer = TensorBoardWriter(log_dir)
    try:
        n = writer.write_all(events)
    finally:
        writer.close()
    return n, event_files(log_dir)
