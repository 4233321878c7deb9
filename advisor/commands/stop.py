"""`advisor stop RUN_DIR`: stop a running (possibly detached) training run cleanly."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "stop a running training run cleanly (it checkpoints first)"
DESCRIPTION = """\
Send SIGTERM to the run's supervisor (found through RUN_DIR/supervisor.lock).
The supervisor forwards it to the trainer, which finishes its current step,
writes a checkpoint and exits; `advisor train --resume RUN_DIR` continues later
from exactly there. Waits until the run has let go of its lock.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory (advisor train --out)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the checkpoint (default 300)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def run(args: argparse.Namespace) -> int:
    from advisor.supervisor import stop_run

    if not args.run_dir.is_dir():
        raise ValueError(f"{args.run_dir}: no such run directory")
    state = stop_run(args.run_dir, timeout_s=args.timeout)
    end = last_end(args.run_dir) if state == "not running" else None
    if args.json:
        print(json.dumps({"run_dir": str(args.run_dir), "state": state, **({"end": end} if end else {})}))
    else:
        print(f"{args.run_dir}: {state}" + (f": {describe_end(end)}" if end else ""))
    return 0


def last_end(run_dir: Path) -> dict | None:
    """The run's last end event (how and when it ended), or None if it has none."""
    from trainer.events import read_all

    path = Path(run_dir) / "events.jsonl"
    if not path.is_file():
        return None
    events, _ = read_all(path)
    return next((e for e in reversed(events) if e.get("kind") == "end"), None)


def describe_end(end: dict) -> str:
    """'finished (epochs) at step 12, 2026-12-07 02:41 UTC' / 'ended (error: ...) at step 3, ...'."""
    import time

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(end.get("time", 0))))
    reason = end.get("reason")
    detail = f": {end['detail']}" if end.get("detail") else ""
    verb = "finished" if reason in ("epochs", "max_steps") else "stopped" if reason == "stopped" else "ended"
    return f"{verb} ({reason}{detail}) at step {end.get('step')}, {when}"
