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
    if args.json:
        print(json.dumps({"run_dir": str(args.run_dir), "state": state}))
    else:
        print(f"{args.run_dir}: {state}")
    return 0
