"""`advisor demo-data`: a small speech-like dataset with transcripts, made offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "write a small demo dataset (16 clips, 2 speakers, English + Chinese) and its .list"
DESCRIPTION = """\
Write OUT/demo.list and OUT/wavs/*.wav: 16 clips of 2-8 s, two speakers, each
reading 4 English and 4 Chinese sentences, so the whole pipeline runs out of the
box, offline:

  advisor demo-data demo && advisor prepare demo/demo.list ds

Voices: espeak-ng when it is installed (--voice auto, the default), otherwise a
built-in deterministic formant synthesiser driven by the transcript (speech-like
sound with pitch contours and pauses, not intelligible speech).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT", help="folder to write (new, empty, or an earlier demo-data output)")
    parser.add_argument("--voice", choices=("auto", "synthetic", "espeak"), default="auto", help="auto: espeak-ng if installed, else synthetic (default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic voice (default: 0)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def run(args: argparse.Namespace) -> int:
    from trainer.data.demo import make_demo

    summary = make_demo(args.out, voice=args.voice, seed=args.seed)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        s = summary["seconds"]
        print(
            f"{summary['clips']} clips ({s['total']:.1f} s, {s['min']:.1f}-{s['max']:.1f} s each, voice: {summary['voice']}) "
            f"-> {summary['list']}\nnext: advisor prepare {summary['list']} DATASET"
        )
    return 0
