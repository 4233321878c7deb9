"""The trainer process the supervisor runs: `python -m advisor.child --config RUN_DIR/config.yaml`.

It is `trainer.run` plus what only the advisor may build: the watchdog
policies (from RUN_DIR/watchdog.yaml), the emulated VRAM budget
(`--emulate-vram`, the probe's EmulatedBudget), the OOM classifier and a stop
request on SIGTERM/SIGINT (the step in flight finishes, a checkpoint is
written, exit 0). torchrun can launch it too (`-m advisor.child`).

Exit codes: 0 done or stopped cleanly, 2 bad config/data, 3 the watchdog
stopped because even micro-batch 1 does not fit, 75 out of memory that the
watchdog could not recover from (the supervisor retries smaller). The code
comes from what `train` returned and the end event it handed to `on_event`
in memory, never from re-reading events.jsonl (which may be damaged).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import yaml

from trainer import exits
from trainer.policy import Decision, Policy, StepInfo, ValInfo

WATCHDOG_FILE = "watchdog.yaml"
EXIT_DOES_NOT_FIT = exits.DOES_NOT_FIT
EXIT_OOM = exits.OOM


class StopRequest(Policy):
    """A policy that turns SIGTERM/SIGINT into a clean `stop` at the next step."""

    name = "stop_request"

    def __init__(self) -> None:
        self.signal: str | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        self.signal = signal.Signals(signum).name

    def on_step(self, info: StepInfo) -> list[Decision]:
        return self._stop()

    def on_val(self, info: ValInfo) -> list[Decision]:
        return self._stop()

    def _stop(self) -> list[Decision]:
        if self.signal is None:
            return []
        return [Decision("stop", f"{self.signal} received: checkpoint and stop", policy=self.name)]

    # No state: a stop request never survives a restart (the base class's empty state_dict).


WATCHDOG_HEADER = "# watchdog policies of this run (written by advisor train; null turns a policy off)"
WATCHDOG_END = "# end of watchdog settings"  # a file with the header but without this line was cut short


def watchdog_text(data: dict) -> str:
    """RUN_DIR/watchdog.yaml's contents for `WatchdogConfig.to_dict()` data."""
    return f"{WATCHDOG_HEADER}\n{yaml.safe_dump(data, sort_keys=False)}{WATCHDOG_END}\n"


def read_watchdog_file(path: Path) -> tuple[object, dict[str, int]]:
    """(raw data, "watchdog.<section>.<field>" -> line) of a watchdog.yaml; ValueError naming
    the file (and line) if it is damaged: not UTF-8, NUL bytes, bad YAML, cut short."""
    from trainer.config import parse_yaml, read_text_file, written_by_us

    text = read_text_file(path, "watchdog settings")
    if (not text or written_by_us(text, WATCHDOG_HEADER)) and WATCHDOG_END not in text:
        raise ValueError(f"{path}: cut short (written by advisor train, but its last line {WATCHDOG_END!r} is missing)")
    raw, lines = parse_yaml(text, str(path))
    return raw, {f"watchdog.{key}": line for key, line in lines.items()}


def watchdog_config(raw, lines: dict[str, int], source: str):
    """WatchdogConfig.from_dict(raw), its errors prefixed "source:line:" of the field they name."""
    from advisor.watchdog import WatchdogConfig

    try:
        return WatchdogConfig.from_dict(raw)
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]  # "watchdog.oom.mode: expected ..." names its dotted field first
        while field and field not in lines:
            field = field.rpartition(".")[0]
        where = f"{source}:{lines[field]}" if field else source
        raise ValueError(f"{where}: {exc}") from None


def load_watchdog(run_dir: Path):
    from advisor.watchdog import WatchdogConfig

    path = run_dir / WATCHDOG_FILE
    if not path.exists():
        return WatchdogConfig()
    return watchdog_config(*read_watchdog_file(path), str(path))


def fit_advice(cfg, vram_bytes: int | None = None) -> str:
    """What would fit, according to the tables, when micro-batch 1 runs out of memory."""
    from probe.plan import advise_smaller

    slice_seconds = cfg.slice_seconds
    if slice_seconds is None:
        from trainer.data.manifest import read_manifest

        slice_seconds = float(read_manifest(cfg.dataset)["slice_seconds"])
    from trainer.workloads import table_name

    return advise_smaller(table_name(cfg.workload, cfg.version), slice_seconds, cfg.dpo, cfg.precision, vram_bytes=vram_bytes)


def build_policies(cfg, watchdog, emulate_bytes: int | None = None) -> list:
    """The watchdog's policies for this run, in the order the loop consults them."""
    from advisor.watchdog import default_policies

    return default_policies(watchdog, advice=lambda: fit_advice(cfg, emulate_bytes), precision=cfg.precision)


def build_guard(emulate_bytes: int | None):
    """The emulated VRAM budget (None: no emulation)."""
    if not emulate_bytes:
        return None
    from probe.tracker import EmulatedBudget

    return EmulatedBudget(emulate_bytes)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m advisor.child", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="RUN_DIR/config.yaml (resolved)")
    parser.add_argument("--micro-batch", type=int, default=None, help="start no larger than this (supervisor, after an OOM kill)")
    parser.add_argument("--emulate-vram", type=int, default=None, metavar="BYTES", help="emulated memory budget on CPU")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from advisor.dashboard import format_event_line
    from advisor.watchdog import is_oom_error
    from trainer import distributed
    from trainer.config import apply_overrides, load_config
    from trainer.loop import train
    from trainer.rundir import RunDir

    stop = StopRequest()
    stop.install()
    try:
        cfg = load_config(args.config)
        if args.micro_batch is not None and args.micro_batch < cfg.batch.micro:
            # smaller micro-batch after an OOM kill; the effective batch (and so the LR) stays
            world = int(os.environ.get("WORLD_SIZE", "1"))
            effective = cfg.batch.effective or cfg.batch.micro * world
            cfg = apply_overrides(cfg, {"batch.micro": args.micro_batch, "batch.effective": effective})
        run_dir = args.config.resolve().parent
        policies = [stop, *build_policies(cfg, load_watchdog(run_dir), args.emulate_vram)]
        guard = build_guard(args.emulate_vram)
        dist = distributed.setup(cfg.device)
    except ValueError as exc:
        print(f"advisor train: error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
    ending = EndWatcher(None if args.quiet else (lambda e: _print_line(format_event_line(e))))
    try:
        train(cfg, RunDir(run_dir), policies=policies, memory_guard=guard, dist=dist, on_event=ending, is_oom=is_oom_error)
    except ValueError as exc:
        print(f"advisor train: error: {exc}", file=sys.stderr)
        return exits.BAD_INPUT
    except torch.OutOfMemoryError as exc:
        print(f"advisor train: out of memory: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
        return EXIT_OOM
    finally:
        distributed.teardown()
    if ending.does_not_fit:
        print(f"advisor train: error: {ending.end.get('detail')}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


class EndWatcher:
    """An `on_event` hook that keeps the run's end event in memory (and passes every event on)."""

    def __init__(self, forward=None) -> None:
        self.forward = forward
        self.end: dict = {}

    def __call__(self, event: dict) -> None:
        if event.get("kind") == "end":
            self.end = event
        if self.forward is not None:
            self.forward(event)

    @property
    def does_not_fit(self) -> bool:
        """The OOM policy stopped the run: micro-batch 1 ran out of memory (its detail starts "oom:")."""
        return self.end.get("reason") == "stopped" and str(self.end.get("detail") or "").startswith("oom:")


def _print_line(line: str | None) -> None:
    if line:
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
