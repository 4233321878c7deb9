"""`advisor probe`: build the VRAM-to-batch-size table for this machine."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from trainer.checks import DEFAULT_VERSION, GRAD_CKPT_WORKLOADS, TABLE_NAMES, VERSIONS

HELP = "measure (CUDA) or estimate (no GPU) the largest batch per card size and slice length"
DESCRIPTION = """\
Find, for each workload (s1 GPT, s2 SoVITS), slice length and DPO mode (s1),
the largest batch that fits each card size with a safety margin left free,
and write a VRAM-to-batch-size table (YAML).

With a CUDA GPU the probe measures: it runs real training steps, emulates the
smaller cards (6 ... 80 GB) by capping the allocator, adds a row for the card
itself, and times throughput to recommend the fastest batch. Without one it
estimates every card size by tracing the training step on the meta device
(seconds per cell; no throughput, recommended = max) and says so in every row.

Defaults: both workloads; slices 5, 10, 15, 30 s; DPO off and on for s1;
cards 6, 8, 12, 16, 24, 32, 40, 80 GB; margin 0.1; precision: the best this
device supports (bf16 on Ampere or newer, fp16 on older GPUs, fp32 on CPU).
To estimate for the mixed precision your GPU will train in, pass
--precision fp16 (what GPT-SoVITS trains in; bf16 needs the same memory): the
shipped estimated tables hold both fp16 and fp32.

Where tables go: --out FILE, else the per-user data folder
  $XDG_DATA_HOME/sovits-advisor/tables (default ~/.local/share/sovits-advisor/tables)
as estimated-torch-<version>.yaml or <gpu-name>-torch-<version>.yaml. `advisor plan`
also reads the folders listed in $SOVITS_ADVISOR_TABLES and the tables shipped
with sovits-advisor. The file is rewritten atomically after every cell: after
Ctrl-C, rerun the same command and the finished cells are skipped.

Sizes: 8GiB, 8GB (GB means GiB, as on GPU boxes), 8192MiB or 8 (GiB).
"""


def probed_workloads(workload: str, version: str | None) -> tuple[str, ...]:
    """--workload and --version -> the table names to probe ("s1", "s2", "s2-v2", ...)."""
    from trainer.checks import resolve_workload, table_name

    if workload == "all":
        return TABLE_NAMES
    if workload == "both":
        return ("s1", table_name("s2", version))
    base, version, note = resolve_workload(workload, version)
    if note:
        print(f"advisor probe: note: {note}", file=sys.stderr)
    return (table_name(base, version),)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", choices=(*TABLE_NAMES, "both", "all"), default="both", metavar="{s1,s2,both,all}",
                        help="which stage to probe: s1, s2 (of --version), both = s1 + s2, all = s1 + s2 of every version (default both); the table names s2-v2, s2-v2ProPlus are accepted")
    parser.add_argument("--version", choices=VERSIONS, default=None, help=f"s2's GPT-SoVITS version (default {DEFAULT_VERSION})")
    parser.add_argument("--slice-seconds", default="5,10,15,30", metavar="LIST", help="comma-separated slice lengths in seconds (default 5,10,15,30)")
    parser.add_argument("--dpo", choices=("off", "on", "both"), default="both", help="s1 DPO modes (default both; s2 has none)")
    parser.add_argument("--tiers", default="6,8,12,16,24,32,40,80", metavar="LIST", help="comma-separated card sizes (default 6,8,12,16,24,32,40,80 GB)")
    parser.add_argument("--margin", type=float, default=0.10, help="fraction of each card to leave free (default 0.1)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default=None, help="default: the device's best (bf16 Ampere+, fp16 older GPUs, fp32 CPU)")
    parser.add_argument("--backend", choices=("estimated", "measured"), default=None, help="default: measured with CUDA, else estimated")
    parser.add_argument("--size", choices=("full", "tiny"), default="full", help="model size (tiny: for tests)")
    parser.add_argument("--attention", choices=("sdpa", "gpt_sovits"), default="sdpa", help="s1 attention: sdpa (default) or gpt_sovits (its materialised float mask)")
    parser.add_argument("--grad-ckpt", action="store_true",
                        help="s2-v3 / s2-v4: rows with gradient checkpointing of the DiT's blocks (a table of their own; with --workload all: those two only)")
    parser.add_argument("--for", dest="trainer", choices=("advisor", "gpt-sovits"), default="advisor", help="whose trainer the rows are for: advisor (our `advisor train`, default) or gpt-sovits (GPT-SoVITS's own s1_train.py / s2_train.py; estimated only)")
    parser.add_argument("--out", default=None, metavar="FILE", help="table file to write (and resume); default in the per-user data folder")
    parser.add_argument("--json", action="store_true", help="print the finished table as JSON on stdout (progress goes to stderr)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from rich.console import Console

    from probe.runner import ProbeConfig, Probe, default_table_path
    from probe.sizes import parse_size
    from probe.table import to_data

    backend = args.backend or ("measured" if torch.cuda.is_available() and args.trainer == "advisor" else "estimated")
    config = ProbeConfig(
        precision=args.precision or default_precision(backend),
        backend=backend,
        workloads=GRAD_CKPT_WORKLOADS if args.grad_ckpt and args.workload == "all" else probed_workloads(args.workload, args.version),
        slice_seconds=tuple(_number_list(args.slice_seconds, "--slice-seconds")),
        tiers_bytes=tuple(parse_size(t) for t in _list(args.tiers, "--tiers")),
        margin=args.margin,
        size=args.size,
        attention=args.attention,
        dpo_modes={"off": (False,), "on": (True,), "both": (False, True)}[args.dpo],
        trainer=args.trainer,
        grad_ckpt=args.grad_ckpt,
    )
    path = Path(args.out) if args.out else default_table_path(backend)
    console = Console(stderr=True)

    def say(text: str) -> None:  # one status line on stderr, never wrapped
        console.print(text, soft_wrap=True, highlight=False, markup=False)

    say(f"advisor probe: {backend} backend, {config.precision}, margin {config.margin:g} -> {path}")
    listener = ProgressListener(console, config)
    previous = signal.signal(signal.SIGINT, listener.on_sigint)
    try:
        with listener:
            table_file = Probe(config, path, listener).run()
    except KeyboardInterrupt:
        say(f"advisor probe: interrupted: {listener.finished} finished cell(s) kept in {path}; run the same command to resume")
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps(to_data(table_file), indent=2))
    else:
        from advisor.commands.table import render_table_file

        render_table_file(Console(), table_file)
    say(f"advisor probe: table written to {path}")
    return 0


def default_precision(backend: str) -> str:
    """The best precision this device supports: bf16 on Ampere+, fp16 on older GPUs, fp32 on CPU."""
    from probe.device import inventory

    return inventory().best_precision()


def _list(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{flag} {text!r} is empty: expected a comma-separated list")
    return items


def _number_list(text: str, flag: str) -> list[float]:
    values = []
    for item in _list(text, flag):
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(f"{flag}: {item!r} is not a number of seconds") from None
    return values


class ProgressListener:
    """A rich progress bar over cells x tiers (current cell, done/total, elapsed, ETA);
    one line per finished cell instead when stderr is not a terminal."""

    def __init__(self, console, config) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
        )
        self.task = None
        self.finished = 0
        self.total = 0
        self.interrupted = False

    def on_sigint(self, signum, frame) -> None:
        """Ctrl-C. The KeyboardInterrupt can land in a weakref callback of the memory
        tracker, where Python swallows it: the flag makes the next progress report raise."""
        self.interrupted = True
        raise KeyboardInterrupt

    def _check(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def started(self, cells: int, tiers: int) -> None:
        self.total = cells
        self.task = self.progress.add_task("starting", total=cells * tiers)

    def cell_started(self, cell, index, total) -> None:
        self._check()
        self.progress.update(self.task, description=cell.label())

    def cell_skipped(self, cell, rows) -> None:
        self.finished += 1
        self.progress.update(self.task, advance=len(rows), description=f"{cell.label()} (kept)")
        if not self.live:
            self.console.print(f"  {cell.label():<14} kept from the existing table ({self.finished}/{self.total})", soft_wrap=True, highlight=False)

    def tier_done(self, cell, row) -> None:
        self._check()
        self.progress.update(self.task, advance=1)

    def cell_done(self, cell, rows, path) -> None:
        self.finished += 1
        if not self.live:
            batches = " ".join(str(r.max_batch_size) for r in rows)
            self.console.print(f"  {cell.label():<14} max batch per card: {batches} ({self.finished}/{self.total})", soft_wrap=True, highlight=False)
        self._check()
