"""`advisor export-tb RUN_DIR`: TensorBoard event files from a run's events.jsonl, after the fact."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "convert a run's events.jsonl to TensorBoard event files (tensorboard --logdir ...)"
DESCRIPTION = """\
Every run already writes TensorBoard files live into RUN_DIR/tensorboard/.
This replays RUN_DIR/events.jsonl (the source of truth; a running run is read
as far as it has got) through the same mapping: losses per component, the
validation metric, the LR of every group, gradient norms per optimiser, memory
(GiB), throughput, micro-batch and accumulation as scalars; each watchdog
decision, OOM, restart, resume and the end as text.

  advisor export-tb runs/my-voice --out /tmp/tb      then: tensorboard --logdir /tmp/tb
  advisor export-tb runs/my-voice --replace          rewrite RUN_DIR/tensorboard/ from the events
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory (advisor train --out)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="TensorBoard log folder (default RUN_DIR/tensorboard)")
    parser.add_argument("--replace", action="store_true", help="delete the event files already in the folder first")
    parser.add_argument("--json", action="store_true", help="print {events, files} as JSON for scripts")


def run(args: argparse.Namespace) -> int:
    from trainer.tensorboard import export

    events = args.run_dir / "events.jsonl"
    if not events.is_file():
        raise ValueError(f"{args.run_dir}: no events.jsonl (expected a run directory written by `advisor train`)")
    out = args.out if args.out is not None else args.run_dir / "tensorboard"
    n, files = export(events, out, replace=args.replace)
    if args.json:
        print(json.dumps({"events": n, "files": [str(f) for f in files]}))
    else:
        print(f"{n} events -> {out} ({', '.join(f.name for f in files)}); view: tensorboard --logdir {out}")
    return 0
