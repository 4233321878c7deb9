"""Entry point: `python -m trainer.run --config RUN_DIR/config.yaml` (what `advisor train` runs).

The run directory is the config file's folder. If it already holds checkpoints
the run continues from the newest one that verifies, so the same command line
serves a first start, a resume and a torchrun restart. Data-parallel on N
processes (gloo on CPU, NCCL on GPUs):

    torchrun --nproc-per-node N -m trainer.run --config RUN_DIR/config.yaml

`batch.effective` is the global batch: each optimiser step averages it over all
processes. Only rank 0 prints, writes events and checkpoints.
Exit codes: 0 done, 2 bad config or data (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer import exits
from trainer.config import load_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="RUN_DIR/config.yaml (a resolved TrainConfig)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser.parse_args(argv)


def print_event(event: dict) -> None:
    """One short line for the events a person watching a terminal wants."""
    kind, step = event["kind"], event["step"]
    if kind == "start":
        print(
            f"start: {event['workload']} ({event['size']}) on {event['device']} x{event['world_size']}, "
            f"micro-batch {event['micro_batch']} x {event['accumulation']} accumulation = {event['effective_batch']} per step "
            f"(batch from {event['batch_source']}), {event['steps_per_epoch']} steps/epoch, {event['epochs']} epochs",
            flush=True,
        )
    elif kind == "val":
        print(f"step {step} epoch {event['epoch']}: {event['metric']} = {event['value']:.5f}", flush=True)
    elif kind in ("end", "restart", "resume", "oom", "skip_step", "scale_lr", "set_micro_batch", "rollback", "stop"):
        detail = {k: v for k, v in event.items() if k not in ("time", "kind", "step")}
        print(f"step {step}: {kind} {detail}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trainer import distributed
    from trainer.loop import train
    from trainer.rundir import RunDir

    try:
        cfg = load_config(args.config)
        dist = distributed.setup(cfg.device)
    except ValueError as exc:
        print(f"trainer: error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
    try:
        train(cfg, RunDir(args.config.resolve().parent), dist=dist, on_event=None if args.quiet else print_event)
    except ValueError as exc:
        print(f"trainer: error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
    except KeyboardInterrupt:
        print("trainer: interrupted", file=sys.stderr)
        return exits.INTERRUPTED
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
