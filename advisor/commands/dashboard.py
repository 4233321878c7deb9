"""`advisor dashboard RUN_DIR`: watch a running or finished run, read-only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from advisor.errors import UserError

HELP = "watch a training run: loss curves, LR, memory, throughput, ETA, watchdog decisions"
DESCRIPTION = """\
Attach to a run directory written by `advisor train` (running or finished) and
show one screen: the training loss components and the validation metric as
sparklines, the LR, gradient norm, micro-batch x accumulation = effective
batch, throughput and ETA, memory used / peak against the budget, the latest
checkpoint, and the watchdog's decisions with their reasons.

It only reads RUN_DIR/events.jsonl (incrementally); it never writes to the run
and never touches the GPU. On a terminal it redraws live until the run ends
(Ctrl-C detaches; the run goes on). Without a terminal it prints one plain line
per event instead (--follow keeps printing until the run ends).

  advisor dashboard runs/my-voice            live view
  advisor dashboard runs/my-voice --once     one frame, then exit
  advisor dashboard runs/my-voice --json     state summary for scripts
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (or its events.jsonl)")
    parser.add_argument("--once", action="store_true", help="render one frame and exit")
    parser.add_argument("--json", action="store_true", help="print the state summary as JSON and exit")
    parser.add_argument("--follow", action="store_true", help="without a terminal: keep printing lines until the run ends")
    parser.add_argument(
        "--refresh", type=float, default=2.0, metavar="HZ", help="redraws (and file reads) per second (default: 2)"
    )


def events_file(run_dir: str) -> Path:
    path = Path(run_dir)
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    if path.is_dir():
        path = path / "events.jsonl"
        if not path.is_file():
            raise UserError(f"{path.parent}: no events.jsonl (expected a run directory written by `advisor train`)")
    return path


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from advisor.dashboard import Dashboard, format_event_line, load_state, render

    if not args.refresh > 0:
        raise UserError(f"--refresh: expected a rate > 0 per second, got {args.refresh:g}")
    path = events_file(args.run_dir)
    from trainer.events import read_all

    damage = read_all(path)[1]  # every reader skips damaged lines; say so once, before drawing
    if damage:
        print(f"advisor dashboard: warning: {damage}", file=sys.stderr)
    if args.json:
        print(json.dumps(load_state(path).summary(), indent=2))
        return 0
    console = Console()
    if args.once:
        height = console.height if console.is_terminal else None  # into a file or pipe: the whole frame
        console.print(render(load_state(path), console.width, height=height))  # no wall clock: the same frame every time
        return 0
    dashboard = Dashboard(path, refresh_per_second=args.refresh, console=console)
    if not console.is_terminal and not args.follow:
        for event in dashboard.poll():
            sys.stdout.write(format_event_line(event) + "\n")
        return 0
    try:
        dashboard.run()
    except KeyboardInterrupt:
        console.print("detached (the run goes on)")
    return 0
