"""`advisor slice`: cut raw recordings at silences into pieces of at most S seconds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "cut raw recordings at silences into pieces of at most S seconds (+ a .list skeleton)"
DESCRIPTION = """\
Cut IN (an audio file, or every audio file under a folder) into pieces no longer
than --seconds, at silences, and write them to OUT as 32 kHz mono 16-bit WAVs
with OUT/slices.list, a GPT-SoVITS .list whose text fields are empty: transcribe
them, then run `advisor prepare OUT/slices.list DATASET`.

A silence is at least 300 ms below -34 dB (10 ms hops), as GPT-SoVITS's slicer;
a piece ends at the first silence after --min-seconds (default 4), and where no
silence falls between --min-seconds and --seconds the piece is cut at the
quietest point. Silences keep at most 500 ms (250 ms each side). Only the last
piece of a recording may be shorter than --min-seconds.

  advisor slice recordings/ sliced/ --seconds 10 --speaker alice --language en
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="IN", help="an audio file or a folder of them")
    parser.add_argument("out", type=Path, metavar="OUT", help="folder for the pieces and slices.list")
    parser.add_argument("--seconds", type=float, default=10.0, help="longest piece, 2-54 s (default: 10)")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="shortest piece except a recording's tail (default: 4)")
    parser.add_argument("--threshold-db", type=float, default=-34.0, help="silence threshold in dBFS (default: -34)")
    parser.add_argument("--min-interval-ms", type=float, default=300.0, help="shortest silence to cut at (default: 300)")
    parser.add_argument("--max-silence-kept-ms", type=float, default=500.0, help="longest silence kept around a cut (default: 500)")
    parser.add_argument("--speaker", default="speaker", help="speaker name written to the .list (default: speaker)")
    parser.add_argument("--language", default="zh", help="language written to the .list: zh, ja, en, ko, yue (default: zh)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from trainer.data.slicer import SlicerConfig, find_recordings, slice_recordings

    config = SlicerConfig(
        max_seconds=args.seconds,
        min_seconds=args.min_seconds,
        threshold_db=args.threshold_db,
        min_interval_ms=args.min_interval_ms,
        max_silence_kept_ms=args.max_silence_kept_ms,
    )
    total = len(find_recordings(args.input))
    columns = (TextColumn("slice"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.description}"))
    err = Console(stderr=True)
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:  # no bar (nor its blank line) in a log
        task = bar.add_task("", total=total)
        result = slice_recordings(
            args.input, args.out, config, args.speaker, args.language,
            on_file=lambda path, seconds: bar.update(task, advance=1, description=path.name[-40:]),
        )
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        _print_summary(summary)
    if not result.pieces:
        raise ValueError(f"{args.input}: no pieces written (every recording was unusable or silent)")
    return 0


def _print_summary(summary: dict) -> None:
    from rich.console import Console

    out = Console(soft_wrap=True)
    out.print(
        f"{summary['pieces']} pieces ({summary['output_seconds']:.1f} s of {summary['input_seconds']:.1f} s, "
        f"longest {summary['longest_seconds']:.2f} s) -> [bold]{summary['list']}[/] (fill in the text fields)"
    )
    for p in summary["problems"]:
        out.print(f"  skipped {p['path']}: {p['reason']}", markup=False, highlight=False)
