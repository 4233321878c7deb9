"""The one entry that runs a training run's specification: `python -m advisor.child RUN_DIR`.

Used the same way by every way of starting a run: the supervisor starts it as
its child, `advisor train --no-supervisor` calls `run_trainer` in-process, and
torchrun starts one per rank (`torchrun --nproc-per-node N -m advisor.child
RUN_DIR`). It reads the run specification (advisor/launch.py: config.yaml,
watchdog.yaml, launch.json) and runs `trainer.loop.train` with what only the
advisor builds: the watchdog policies, the emulated VRAM budget, the OOM
classifier and a stop request on SIGTERM/SIGINT (the step in flight finishes,
a checkpoint is written, exit 0). Every rank builds all of them; the policies
decide on rank 0 and every rank applies the same decisions.

Exit codes (trainer/exits.py): 0 done or stopped cleanly; 2 bad spec/data (one
line); 3 the watchdog stopped because even micro-batch 1 does not fit (one
line saying what would); 75 out of memory outside the loop's recovery (the
supervisor restarts it with a smaller micro-batch cap). The code comes from
what `train` raised or the end event it handed to `on_event` in memory, never
from re-reading events.jsonl (which may be damaged).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Callable

from trainer import exits
from trainer.guard import MemoryGuard
from trainer.policy import Decision, Policy, StepInfo, ValInfo



class StopRequest(Policy):
    """A policy that turns SIGTERM/SIGINT into a clean `stop` at the next step."""

    name = "stop_request"

    def __init__(self) -> None:
        self.signal: str | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if self.signal is None:  # the first one says why: Ctrl-C reaches the trainer (SIGINT) before the supervisor's SIGTERM
            self.signal = signal.Signals(signum).name

    def on_step(self, info: StepInfo) -> list[Decision]:
        return self._stop()

    def on_val(self, info: ValInfo) -> list[Decision]:
        return self._stop()

    def _stop(self) -> list[Decision]:
        if self.signal is None:
            return []
        why = " (Ctrl-C)" if self.signal == "SIGINT" else ""
        return [Decision("stop", f"{self.signal} received{why}: checkpoint and stop", policy=self.name)]

    # No state: a stop request never survives a restart (the base class's empty state_dict).


def fit_advice(cfg, vram_bytes: int | None = None) -> str:
    """What would fit, according to the tables, when micro-batch 1 runs out of memory."""
    from probe.plan import advise_smaller

    from trainer.data.manifest import run_slice_seconds
    from trainer.workloads import table_name

    slice_seconds = run_slice_seconds(cfg.slice_seconds, cfg.dataset)

    return advise_smaller(table_name(cfg.workload, cfg.version), slice_seconds, cfg.dpo, cfg.precision, vram_bytes=vram_bytes, grad_ckpt=cfg.grad_ckpt)


def build_policies(cfg, watchdog, emulate_bytes: int | None = None) -> list:
    """The watchdog's policies for this run, in the order the loop consults them."""
    from advisor.watchdog import default_policies

    return default_policies(watchdog, advice=lambda: fit_advice(cfg, emulate_bytes), precision=cfg.precision)


def build_guard(emulate_bytes: int | None) -> MemoryGuard | None:
    """The emulated VRAM budget (None: no emulation): a `trainer.guard.MemoryGuard`."""
    if not emulate_bytes:
        return None
    from probe.tracker import EmulatedBudget

    guard = EmulatedBudget(emulate_bytes)
    assert isinstance(guard, MemoryGuard)  # the loop's declared interface (trainer/guard.py)
    return guard


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m advisor.child", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder written by `advisor train` (or by hand: config.yaml)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from advisor.dashboard import format_event_line

    on_event = None if args.quiet else (lambda e: _print_line(format_event_line(e)))
    return run_trainer(args.run_dir, on_event)


def run_trainer(run_dir: Path, on_event: Callable[[dict], None] | None = None) -> int:
    """Run RUN_DIR's specification in this process (this rank, under torchrun); an exit code."""
    import torch

    from advisor.launch import RunSpec
    from advisor.watchdog import is_oom_error
    from trainer import distributed
    from trainer.loop import train
    from trainer.rundir import RunDir

    stop = StopRequest()
    stop.install()
    end: dict = {}

    def seen(event: dict) -> None:
        if event["kind"] == "end":
            end.update(event)
        if on_event is not None:
            on_event(event)

    run = RunDir(Path(run_dir).resolve())
    try:
        spec = RunSpec.load(run)
        dist = distributed.setup(spec.config.device)
        cfg = spec.trainer_config(dist.world)
        policies = [stop, *build_policies(cfg, spec.watchdog, spec.launch.emulate_vram_bytes)]
        guard = build_guard(spec.launch.emulate_vram_bytes)
        buckets = spec.bucket_plan()
    except ValueError as exc:
        print(f"advisor train: error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
    try:
        train(cfg, run, policies=policies, memory_guard=guard, dist=dist, on_event=seen, is_oom=is_oom_error, buckets=buckets)
    except ValueError as exc:
        print(f"advisor train: error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
    except torch.OutOfMemoryError as exc:
        print(f"advisor train: out of memory: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
        return exits.OOM
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    finally:
        distributed.teardown()
    if does_not_fit(end):
        if dist.is_main:
            print(f"advisor train: error: {end['detail']}", file=sys.stderr)
        return exits.DOES_NOT_FIT
    return exits.OK


def does_not_fit(end: dict) -> bool:
    """Whether the run ended because the OOM policy stopped it at micro-batch 1."""
    return end.get("reason") == "stopped" and str(end.get("detail") or "").startswith("oom:")


def _print_line(line: str | None) -> None:
    if line:
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
