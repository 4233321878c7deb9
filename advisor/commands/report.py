"""`advisor report RUN_DIR`: one self-contained HTML page of a run (plots + links to its samples)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "write one HTML page of a run: losses, validation, LR cuts, memory and OOMs, throughput, samples"
DESCRIPTION = """\
Read RUN_DIR/events.jsonl (a finished or running run) and write one page,
RUN_DIR/report.html by default, that opens anywhere: five plots embedded as
PNG (the loss components; the validation metric with the best check and the
early stop marked; the LR of every parameter group with each watchdog cut;
memory used and peak against the budget with every OOM; samples and audio
seconds per second), the watchdog's decisions with their reasons, and players
for the samples in RUN_DIR/samples/ and export/samples/ (linked relative to
the page: keep it beside the run, or copy the run folder with it).

  advisor report runs/my-voice
  advisor report runs/my-voice --out /tmp/my-voice.html
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory (advisor train --out)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE", help="where to write the page (default RUN_DIR/report.html)")
    parser.add_argument("--json", action="store_true", help="print {page, plots} as JSON for scripts")


def run(args: argparse.Namespace) -> int:
    from advisor.report import PLOTS, write_report

    if not args.run_dir.is_dir():
        raise ValueError(f"{args.run_dir}: no such run directory")
    page = write_report(args.run_dir, args.out)
    print(json.dumps({"page": str(page), "plots": list(PLOTS)}) if args.json else f"wrote {page}")
    return 0
