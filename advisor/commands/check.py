"""`advisor check DATA`: what is wrong with a voice dataset, before hours are spent training on it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "check a voice dataset (.list, GPT-SoVITS logs/<exp>, or a prepared dataset) before training on it"
DESCRIPTION = """\
Measure every clip and say what will hurt training, worst first:

  advisor check data/voice.list            # a GPT-SoVITS .list and its audio
  advisor check GPT-SoVITS/logs/myvoice    # its experiment folder (after preprocessing)
  advisor check ds --json                  # a dataset made by `advisor prepare`

Per clip, from the audio: duration; peak and the share of clipped samples (flat
tops); integrated loudness (ITU-R BS.1770-4, LUFS) against the dataset's median;
SNR (WADA-SNR, Kim & Stern 2008: reads -20..100 dB, assumes Gaussian noise);
silence before, after and inside the speech; sample rate, channels, DC offset;
exact duplicates (same decoded samples) and near duplicates (log-mel
fingerprint correlation).
Audio against text: phonemes per second of speech against the dataset's own
median (robust z-score: likely mislabelled or mis-sliced), empty or very short
texts, texts without the script of their language, languages GPT-SoVITS drops.
Experiment folders: names missing from one of 2-name2text.txt, 3-bert/ (zh
only), 4-cnhubert/, 5-wav32k/, 6-name2semantic.tsv, 7-sv_cn/; HuBERT frames
(50 Hz) against the wav, semantic tokens (25 Hz) against HuBERT frames; which
versions the folder can train (v2; v2Pro/v2ProPlus need 7-sv_cn/).
For training: clips per problem, the batch the longest clip allows (--vram),
what the watchdog does with it, and the seed guides' advice (DPO, SoVITS epochs).

Severities: error (GPT-SoVITS or prepare drops the clip, or files disagree),
warning (likely heard in the result), info. Thresholds: docs/ARCHITECTURE.md.
Exit 0 whatever is found; 2 when DATA cannot be read. Nothing under DATA is
written. `advisor prepare` runs the same checks and adds them to OUT/report.json.
"""
DEFAULT_HTML = "advisor-check.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, metavar="DATA", help="a .list, a GPT-SoVITS logs/<exp> folder, or an `advisor prepare` output")
    parser.add_argument("--json", action="store_true", help="print everything (findings, per-clip figures, plans) as JSON on stdout")
    parser.add_argument("--html", type=Path, nargs="?", const=Path(DEFAULT_HTML), metavar="PATH",
                        help=f"also write an HTML page with histograms (default PATH: ./{DEFAULT_HTML}; put DATA before a bare --html)")
    parser.add_argument("--vram", default="24GiB", metavar="SIZE", help="card for the batch plan of the longest clip, e.g. 8GiB (default: 24GiB; 0: no plan)")
    parser.add_argument("--limit", type=int, default=40, help="findings shown in the table (default: 40; --json shows all)")
    parser.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                        help="change a threshold, e.g. --threshold snr_db=10 (repeatable; names and defaults: docs/ARCHITECTURE.md, `--json` shows them)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from advisor.check.render import print_report, write_page
    from advisor.check.result import run_check
    from probe.sizes import parse_size

    thresholds(args.threshold)  # a bad --threshold fails before anything is read
    try:
        vram = parse_size(args.vram) if str(args.vram).strip() not in ("0", "") else 0
    except ValueError as exc:
        raise ValueError(f"--vram: {exc}") from None
    if args.limit < 1:
        raise ValueError(f"--limit {args.limit}: expected at least 1")
    err = Console(stderr=True)
    with Progress(TextColumn("check"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"), console=err, transient=True) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, clip: str) -> None:
            bar.update(task, completed=done, total=total, description=clip[-40:])

        result = run_check(args.data, thresholds(args.threshold), progress=progress, vram_bytes=vram or None)
    page = write_page(result, args.html) if args.html is not None else None
    if args.json:
        print(json.dumps({**result.to_json(), "html": str(page) if page else None}, indent=1, ensure_ascii=False, allow_nan=False))
    else:
        out = Console()
        if not out.is_terminal:  # piped or captured: rich would assume 80 columns and fold every reason
            out = Console(width=160)
        print_report(result, out, args.limit)
        if page:
            print(f"page: {page}")
    sys.stdout.flush()
    return 0


def thresholds(assignments: list[str]):
    """`--threshold NAME=VALUE` values -> Thresholds (ValueError naming the bad one)."""
    from dataclasses import fields

    from advisor.check.config import Thresholds

    names = {f.name: f.type for f in fields(Thresholds)}
    values: dict[str, float] = {}
    for text in assignments:
        name, sep, value = text.partition("=")
        if not sep or name.strip() not in names:
            raise ValueError(f"--threshold {text!r}: expected NAME=VALUE with NAME one of {', '.join(names)}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--threshold {text!r}: {value!r} is not a number") from None
        values[name.strip()] = int(number) if names[name.strip()] in (int, "int") and number.is_integer() else number
    return Thresholds(**values)
