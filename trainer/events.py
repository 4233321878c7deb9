"""The event log: the one channel between trainer, supervisor and dashboard.

`events.jsonl` is append-only, one JSON object per line, flushed after every
line. Every object has `time` (unix seconds, float), `kind` (str) and `step`
(int, optimiser steps done so far); the rest are kind-specific fields.
Readers tolerate a partial last line (a writer mid-append or killed).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

# Every kind the trainer and the supervisor write (docs/ARCHITECTURE.md "Event log"),
# shared by the readers: dashboard, TensorBoard writer, report.
DECISIONS = ("skip_step", "scale_lr", "set_micro_batch", "rollback", "stop")  # the watchdog's, applied by the loop
KINDS = ("start", "resume", "step", "val", "samples", "checkpoint", "export", "oom", "restart", "end", *DECISIONS)


def number(value: Any) -> float | None:
    """A float from an event field: numbers, and the "nan"/"inf" strings EventLog writes; else None."""
    kind = type(value)  # exact types first: readers call this a dozen times per event
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


def _jsonable(value: Any) -> Any:
    """Floats that JSON cannot carry (nan/inf) become strings; tensors become floats."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 2)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class EventLog:
    """Appends events to a file. Disabled (`path=None`) on non-zero DDP ranks."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self._file = open(self.path, "a", encoding="utf-8") if self.path is not None else None

    def write(self, kind: str, step: int, **fields: Any) -> dict:
        event = {"time": time.time(), "kind": kind, "step": int(step), **_jsonable(fields)}
        if self._file is not None:
            self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._file.flush()
        return event

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """Events appended since byte `offset`, and the offset to read from next.

    A trailing line without its newline is left for the next call."""
    path = Path(path)
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # only complete lines
    events = []
    for line in data[:end].splitlines():
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from a killed writer: skip it
    return events, offset + end
