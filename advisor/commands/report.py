"""`advisor report RUN_DIR`: one self-contained HTML page of a run (plots, provenance, embedded samples)."""

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
seconds per second; linear axes span at least 1 % of the value, so a
near-constant series is drawn flat and its change stated as a number), the
watchdog's decisions with their reasons, where the weights came from (the
--init file, its sha256) and went (export/, the copy under --gpt-sovits-root),
and players for the samples in RUN_DIR/samples/ and export/samples/, embedded
in the page (up to 48 MiB of WAV; past that the rest are linked relative to
the page, and it says so).

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
