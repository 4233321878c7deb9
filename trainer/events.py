"""The event log: the one channel between trainer, supervisor and dashboard.

`events.jsonl` is append-only, one JSON object per line, flushed after every
line. Every object has `time` (unix seconds, float), `kind` (str) and `step`
(int, optimiser steps done so far); the rest are kind-specific fields. The
writer emits ASCII only (json.dumps escapes the rest), so a NUL or a byte
>= 0x80 is always damage.

Readers survive what a crash or a power cut leaves behind: a torn last line
(a writer mid-append or killed), a NUL-filled tail (a filesystem that had
extended the file but not written it), bytes that are not UTF-8, lines that
are not JSON objects with a string `kind` and an integer `step`. Such a line
is skipped and counted (`EventReader.damaged`, with its line number and what
is wrong), never silently: callers report `EventReader.damage_report()` once.
A trailing fragment without its newline is left for the next read (a writer
may be mid-line), but counted while it holds bytes no writer writes. A writer
that opens a log whose last line has no newline starts on a fresh line, so a
damaged tail never swallows the next event.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every kind the trainer and the supervisor write (docs/ARCHITECTURE.md "Event log"),
# shared by the readers: dashboard, TensorBoard writer, report.
DECISIONS = ("skip_step", "scale_lr", "set_micro_batch", "rollback", "stop")  # the watchdog's, applied by the loop
KINDS = ("start", "resume", "recovered", "step", "val", "samples", "checkpoint", "export", "oom", "restart", "end", *DECISIONS)
INCIDENTS = ("restart", "resume", "oom", *DECISIONS)  # what a console prints a line for as it happens


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


MAX_REPORTED = 3  # damaged lines named in a report; the rest are counted


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
        self._file = None
        if self.path is not None:
            fresh_line = _ends_mid_line(self.path)
            self._file = open(self.path, "a", encoding="utf-8")
            if fresh_line:  # a torn or NUL-filled tail: end it, so our first event is a line of its own
                self._file.write("\n")

    def write(self, kind: str, step: int, **fields: Any) -> dict:
        if kind not in KINDS:  # one list of kinds, which every reader relies on
            raise ValueError(f"event kind {kind!r} is not one of trainer.events.KINDS")
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


def _ends_mid_line(path: Path) -> bool:
    """True if the file is non-empty and its last byte is not a newline."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


@dataclass(frozen=True)
class Damage:
    """One skipped line: its 1-based number (counted from where reading started) and why."""

    line: int
    problem: str


def line_problem(line: bytes) -> tuple[dict | None, str | None]:
    """(event, None) for a good line, (None, why) for a damaged one; NUL padding around a
    good event is dropped (the event is kept, the padding reported)."""
    stripped = line.strip(b"\x00")
    padded = len(stripped) != len(line)
    if not stripped.strip():
        return None, "NUL bytes" if padded else "blank"
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 (byte {exc.start})"
    if "\x00" in text:
        return None, "NUL bytes inside the line"
    try:
        event = json.loads(text)
    except ValueError:
        return None, "NUL bytes and a torn line" if padded else "not JSON (a torn or garbage line)"
    if not isinstance(event, dict):
        return None, f"a JSON {type(event).__name__}, not an event object"
    if not isinstance(event.get("kind"), str):
        return None, "no string 'kind'"
    step = event.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool):
        return None, f"'step' is {step!r}, not an integer"
    return event, ("NUL bytes around the event (event kept)" if padded else None)


class EventReader:
    """Reads an events.jsonl incrementally and keeps count of what it had to skip.

        reader = EventReader(path)
        events = reader.read()        # complete lines appended since the last read
        reader.damaged                # [Damage(line, problem)], every complete damaged line so far
        reader.damage_report()        # one line for a person, or None if nothing was damaged

    Blank lines are ignored (not damage). A missing file reads as empty."""

    def __init__(self, path: str | os.PathLike, offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset
        self.damaged: list[Damage] = []
        self.tail: Damage | None = None  # an unfinished last line that no writer could have written
        self._line = 0  # complete lines read so far

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # only complete lines; a fragment waits for its newline
        events = []
        for line in data[:end].split(b"\n")[:-1]:
            self._line += 1
            event, problem = line_problem(line)
            if event is not None:
                events.append(event)
            if problem is not None and problem != "blank":
                self.damaged.append(Damage(self._line, problem))
        self.offset += end
        self.tail = self._tail_problem(data[end:])
        return events

    def _tail_problem(self, fragment: bytes) -> Damage | None:
        """A fragment with a NUL or a non-ASCII byte can never become a good line by itself."""
        if not fragment or all(32 <= b < 127 or b in (9, 13) for b in fragment):
            return None
        what = "NUL bytes" if not fragment.strip(b"\x00") else "bytes no writer writes"
        return Damage(self._line + 1, f"{what} in an unfinished last line ({len(fragment)} bytes)")

    @property
    def damaged_count(self) -> int:
        """Damaged lines so far, the unfinished damaged tail included."""
        return len(self.damaged) + (self.tail is not None)

    def damage_report(self) -> str | None:
        """'PATH: skipped N damaged lines (line 7: not UTF-8; ...)', or None."""
        found = self.damaged + ([self.tail] if self.tail is not None else [])
        if not found:
            return None
        named = "; ".join(f"line {d.line}: {d.problem}" for d in found[:MAX_REPORTED])
        more = f"; {len(found) - MAX_REPORTED} more" if len(found) > MAX_REPORTED else ""
        lines = "line" if len(found) == 1 else "lines"
        return f"{self.path}: skipped {len(found)} damaged {lines} ({named}{more})"


def read_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """Events appended since byte `offset`, and the offset to read from next.

    A trailing line without its newline is left for the next call; damaged lines
    are skipped (use `EventReader` to count and report them)."""
    reader = EventReader(path, offset)
    events = reader.read()
    return events, reader.offset


def read_all(path: str | os.PathLike) -> tuple[list[dict], str | None]:
    """Every event in the file and the one-line damage report (None if undamaged)."""
    reader = EventReader(path)
    events = reader.read()
    return events, reader.damage_report()
