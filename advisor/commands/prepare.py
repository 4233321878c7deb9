"""`advisor prepare`: GPT-SoVITS's experiment folder, or a .list and its audio -> a training-ready dataset folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainer import versions

HELP = "turn GPT-SoVITS's experiment folder (or a .list and its audio) into a training-ready dataset"
DESCRIPTION = """\
From GPT-SoVITS (what its webui's preprocessing wrote; the features its
pretrained weights understand):

  advisor prepare --from-gpt-sovits GPT-SoVITS/logs/<exp> OUT

reads 2-name2text.txt (phonemes -> ids of GPT-SoVITS's v2 symbol table),
6-name2semantic.tsv, 3-bert/, 4-cnhubert/, 5-wav32k/ and 7-sv_cn/ (v2Pro+),
applies upstream's s1 filters (> 54 s, > 540 phonemes, outside 3-25 phonemes
per second), splits off --val-fraction for validation (GPT-SoVITS has none),
and writes the same OUT as below (slice length: the longest clip). The summary
and the manifest ("versions") say which s2 versions it can train: v2Pro and
v2ProPlus need 7-sv_cn/ for every clip (GPT-SoVITS's v2 preprocessing writes
none), and `advisor train` refuses another version before it writes anything. Names in
one file and not another, damaged lines or feature files are reported
(OUT/report.json, with `advisor check EXP_DIR`'s findings under "check")
and skipped (--strict: exit 2 naming the first); a missing
or unreadable 2-name2text.txt / 6-name2semantic.tsv is a one-line error.
--slice-seconds, --hubert, --bert and --s2-checkpoint do not apply here.

GPT-SoVITS v3 / v4 (s2 is a CFM/DiT mel decoder; s1 is the same GPT):

  advisor prepare --from-gpt-sovits GPT-SoVITS/logs/<exp> OUT --version v4

also stores per clip the mel target its s2 trainer computes from 5-wav32k/
(v3: 24 kHz, n_fft 1024, hop 256; v4: 32 kHz, n_fft 1280, hop 320; 100 mels,
GPT-SoVITS's normalisation), and drops, as its trainer does, clips over 20 s
or of 0.64 s or less (each reported). GPT-SoVITS repeats a list of fewer than
100 clips within an epoch; this does not, and the summary says by how much
to scale the epochs to match. Without --version, v3/v4 is detected from the
run folders GPT-SoVITS leaves in the experiment (logs_s2_v4_lora_32/, ...);
v3 and v4 folders are otherwise identical. The manifest's "feeds" lists the
workloads the dataset can train (s1, s2-v2, s2-v2Pro, ..., s2-v4).

Without GPT-SoVITS (a stand-in: the phonemes, content features and semantic
tokens below are this tool's own, and GPT-SoVITS's pretrained weights do not
understand them; use it to rehearse, not to fine-tune --init weights):
read LIST (GPT-SoVITS annotation: path|speaker|language|text, UTF-8; relative
paths are resolved against the list's folder; languages zh, ja, en, ko, yue in
any case, JP/JA = ja), and write the dataset folder OUT:

  OUT/manifest.json   counts, durations, slice length, split, feature settings,
                      the list's sha256; "complete": true is written last
  OUT/report.json     every line not used, with its line number and reason
                      ("skipped"), and what `advisor check LIST` finds ("check")
  OUT/clips/*.pt      per clip: 32 kHz audio, content features (768-dim, 50 Hz),
                      semantic tokens (25 Hz), phoneme ids (+ BERT with --bert)

Audio (WAV/FLAC/OGG/MP3) is downmixed, resampled to 32 kHz and peak-normalised.
Clips longer than --slice-seconds are skipped and reported (their text cannot be
re-aligned): cut long recordings with `advisor slice` first. A line is also
skipped for: a missing, unreadable, truncated, empty, silent or non-finite audio
file; a peak above 2.2; under 0.6 s or over 54 s; empty text; an unsupported
language; a wrong number of '|' fields; bytes that are not UTF-8; a duplicate
path. --strict stops at the first such line instead.

Re-running is cheap: clips already done and unchanged are reused. Interrupted
runs leave a manifest marked incomplete, which training refuses.

Without model files everything is computed offline (see trainer/data/features.py):
content features are a fixed random projection of log-mel + deltas, semantic
tokens come from a seeded s2 quantiser, BERT features are zeros, and the
v2Pro/v2ProPlus speaker embedding `sv_emb` is a stand-in (log-mel statistics
through a fixed random projection; GPT-SoVITS's ERes2NetV2 is not available
here: convert an experiment folder for the real one). Point to local
models for the real thing (needs `pip install transformers` for --hubert/--bert):

  advisor prepare data/voice.list ds --hubert models/chinese-hubert-base \\
      --s2-checkpoint models/s2G488k.pth --bert models/chinese-roberta-wwm-ext-large
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("list", type=Path, metavar="LIST", nargs="?", help="GPT-SoVITS .list file (omit with --from-gpt-sovits)")
    parser.add_argument("out", type=Path, metavar="OUT", nargs="?", help="dataset folder to write (new, empty, or an earlier prepare output)")
    parser.add_argument("--from-gpt-sovits", type=Path, metavar="EXP_DIR", help="GPT-SoVITS's logs/<exp> folder (its preprocessing's output) instead of LIST")
    parser.add_argument("--slice-seconds", type=float, default=10.0, help="longest clip kept, 2-54 s (default: 10)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share per speaker, at least one clip (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the built-in quantiser (default: 0)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unusable line (exit 2) instead of reporting it")
    parser.add_argument("--version", choices=versions.ALL, help="with --from-gpt-sovits: the experiment's GPT-SoVITS version; v3/v4 add the CFM mel target (default: detected from its v3/v4 run folders, else none)")
    parser.add_argument("--hubert", type=Path, metavar="PATH", help="local chinese-hubert-base (Hugging Face format) for content features")
    parser.add_argument("--s2-checkpoint", type=Path, metavar="PATH", help="s2 generator whose ssl_proj + quantizer make the semantic tokens: GPT-SoVITS's s2G*.pth, G_*.pth or SoVITS_weights*/*.pth (05/06 header or not), or our export/generator.pt")
    parser.add_argument("--bert", type=Path, metavar="PATH", help="local BERT (Hugging Face format, 1024 wide) for Chinese text")
    parser.add_argument("--audio-root", type=Path, metavar="DIR", help="where the list's audio lies when its paths are another machine's (D:\\GPT-SoVITS\\...\\x.wav): each tail of the path is looked for under DIR, then beside the list")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def run(args: argparse.Namespace) -> int:
    if args.from_gpt_sovits is not None:
        return run_experiment(args)
    if args.version is not None:
        raise ValueError("--version applies with --from-gpt-sovits (the mel target of v3/v4 is computed from GPT-SoVITS's experiment folder)")
    if args.list is None or args.out is None:
        raise ValueError("prepare needs LIST and OUT (or --from-gpt-sovits EXP_DIR OUT)")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from trainer.data.dataset import PrepareConfig, prepare

    config = PrepareConfig(
        list_path=args.list,
        out=args.out,
        slice_seconds=args.slice_seconds,
        val_fraction=args.val_fraction,
        seed=args.seed,
        strict=args.strict,
        hubert=args.hubert,
        bert=args.bert,
        s2_checkpoint=args.s2_checkpoint,
        audio_root=args.audio_root,
    )
    before = _list_of(args.out)  # said after a successful rebuild (a refusal stays one line)
    err = Console(stderr=True)
    columns = (TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:  # no bar (nor its blank line) in a log
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, entry) -> None:
            bar.update(task, completed=done, total=total, description=entry.raw_path[-40:])

        result = prepare(config, progress)
    _note_another_list(args.out, before, args.list)
    summary = result.summary()
    summary["check"] = add_check(args.list, result.out, err)
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        _print_summary(summary, args.list)
    return 0


def _list_of(out: Path) -> dict | None:
    """The {path, sha256} of the list an existing dataset folder was prepared from (None: none)."""
    try:
        listed = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["list"]
        return listed if isinstance(listed, dict) and isinstance(listed.get("sha256"), str) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _note_another_list(out: Path, before: dict | None, list_path: Path) -> None:
    """Say so when OUT was rebuilt from another list: runs trained on it will refuse --resume."""
    from trainer.data.listfile import file_sha256

    if before is not None and before["sha256"] != file_sha256(list_path):
        print(f"advisor prepare: note: {out} was prepared from another list ({before.get('path')}); rebuilt it from {list_path}: "
              "runs trained on it will refuse --resume (their dataset changed)", file=sys.stderr)


def _print_summary(summary: dict, list_path: Path) -> None:
    from rich.console import Console

    out = Console(soft_wrap=True)
    c, s = summary["counts"], summary["seconds"]
    out.print(
        f"[bold]{summary['out']}[/]: {c['used']} clips ({s['total']:.1f} s) from {c['lines']} lines, "
        f"{c['speakers']} speaker(s); train {c['train']} ({s['train']:.1f} s), val {c['val']} ({s['val']:.1f} s); "
        f"{summary['computed']} computed, {summary['reused']} reused"
    )
    if summary["problems"]:
        out.print(f"[yellow]{len(summary['problems'])} line(s) not used[/] (also in {summary['out']}/report.json):")
        for p in summary["problems"]:
            target = f" ({p['path']})" if p["path"] else ""
            out.print(f"  {list_path}:{p['line']}{target}: {p['reason']}", markup=False, highlight=False)
    sys.stdout.flush()
    _print_check(summary["check"], list_path, summary["out"])


def run_experiment(args: argparse.Namespace) -> int:
    """`--from-gpt-sovits EXP_DIR OUT` (OUT is the one positional)."""
    from trainer.gptsovits.experiment import convert

    if args.list is None or args.out is not None:
        raise ValueError("prepare --from-gpt-sovits EXP_DIR OUT takes exactly one positional: OUT")
    for flag in ("hubert", "bert", "s2_checkpoint"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag.replace('_', '-')} does not apply with --from-gpt-sovits: the experiment folder already holds GPT-SoVITS's own features")
    result = convert(args.from_gpt_sovits, args.list, val_fraction=args.val_fraction, seed=args.seed, strict=args.strict, version=args.version)
    summary = result.summary()
    summary["check"] = add_check(args.from_gpt_sovits, result.out)
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    c, s = summary["counts"], summary["seconds"]
    print(f"{summary['out']}: {c['used']} clips ({s['total']:.1f} s, slice {summary['slice_seconds']:g} s) from {args.from_gpt_sovits}; "
          f"train {c['train']} ({s['train']:.1f} s), val {c['val']} ({s['val']:.1f} s); feeds {', '.join(summary['feeds'])}")
    versions = summary["versions"]
    why = "" if len(versions) > 1 else " (s2 v2Pro/v2ProPlus need 7-sv_cn/ for every clip: run GPT-SoVITS's v2Pro preprocessing first)"
    print(f"trains: s1 any version; s2 {', '.join(versions)}{why}")
    up = summary["upstream"]
    if up:
        print(f"GPT-SoVITS {up['version']} ({up['version_source']}): {up['dropped_by_sampler']} clip(s) dropped by its s2 sampler "
              f"(over 20 s or 0.64 s and less); {up['note']}")
    if result.skipped:
        print(f"{len(result.skipped)} item(s) not used (also in {summary['out']}/report.json):")
        for item in result.skipped:
            print(f"  {item.describe()}")
    _print_check(summary["check"], args.from_gpt_sovits, summary["out"])
    return 0


def add_check(data: Path, out: Path, console=None) -> dict:
    """Run `advisor check` on the input just prepared and add its summary to OUT/report.json
    (key "check", beside "skipped"); returns the short form for the command's own summary.
    The dataset is complete whatever the check finds; it reads the input only."""
    from advisor.check.result import run_check
    from trainer.data import manifest as mf

    if console is not None:
        console.print(f"checking {data} (advisor check)", style="dim")
    report_path = Path(out) / mf.REPORT
    try:
        full = run_check(data).summary()
    except ValueError as exc:  # the dataset is made: say why the check is missing, do not fail the command
        print(f"advisor prepare: warning: the check of {data} failed: {exc}", file=sys.stderr)
        full = {"error": str(exc)}
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["check"] = full
    mf.write_json(report_path, report)
    if "error" in full:
        return {"error": full["error"], "clips_with": {}, "counts": {}, "advice": []}
    return {"clips_with": full["clips_with"], "counts": full["counts"], "advice": [a["advice"] for a in full["training"]["advice"]]}


def _print_check(check: dict, data: Path, out: str) -> None:
    if "error" in check:
        return  # said on stderr already
    w = check["clips_with"]
    if not any(w.values()):
        print(f"check: nothing found in {data}")
        return
    print(f"check: clips with errors {w['error']}, warnings {w['warning']}, notes {w['info']} "
          f"({', '.join(check['counts'])}); details in {out}/report.json or `advisor check {data}`")
    for a in check["advice"]:
        print(f"  advice: {a}")
