"""The drivers: follow an events.jsonl and show it (rich Live on a terminal, plain lines otherwise)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from rich.console import Console, RenderableType

from advisor.dashboard.plain import format_event_line
from advisor.dashboard.rich_view import render
from advisor.dashboard.state import RunState
from trainer.events import read_events


def read(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """The events appended since `offset`, and the next offset: the dashboard's one reader of the file."""
    return read_events(path, offset)


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
        events, self.offset = read(self.path, self.offset)
        self.state.update_all(events)
        return events

    def frame(self) -> RenderableType:
        return render(self.state, self.console.width, now=self.clock(), height=self.console.height)

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
    events, _ = read(events_path)
    state.update_all(events)
    return state
