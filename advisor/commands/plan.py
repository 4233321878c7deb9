"""`advisor plan`: the batch size for a card, from the best table or an estimate."""

from __future__ import annotations

import argparse
import json
import sys

from trainer.checks import DEFAULT_VERSION, TABLE_NAMES, VERSIONS

HELP = "the largest and the recommended batch for a card size, slice length and mode"
DESCRIPTION = """\
Two trainers, two answers: --for advisor (default) answers for our `advisor
train`; --for gpt-sovits for GPT-SoVITS's own s1_train.py / s2_train.py,
which keep more alive (its float attention mask and a padded copy per layer,
ScaledAdam's step, gradients across its 4-batch accumulation, s2's previous
gradients and weight-norm caches) and so fit smaller batches. For gpt-sovits
the answer also gives the number to type into GPT-SoVITS's webui (it halves
the batch on cards without fp16, and s1 halves it again with DPO).

Answer from the best available table row for exactly this card size and cell:
measured (this GPU's first) > estimated. With no such row it estimates on
the fly (a few seconds, no GPU needed); with --no-estimate it uses the
nearest smaller card / longer slice in the tables, which can only
under-promise. The community table (an article's figures) is the last
resort, and the answer calls it lore. The answer names its source and table.

--data DATASET plans for a prepared dataset's worst batch: the longest clip
(GPT-SoVITS pads a batch to its longest clip; `advisor train` pads to the
dataset's slice), says which clip that is, and warns when a few long clips
force a small batch on all (cut them with `advisor slice`).

For --for advisor it also prints the dataset's bucket plan: clips grouped in
up to --max-buckets length buckets (bounds chosen to keep padding small),
each batch padded to its own longest clip, each bucket with the micro-batch
this command answers for its bound and the accumulation that keeps
--effective samples per optimiser step in every bucket (default: the
micro-batch of the bucket holding the median clip). Per bucket: the bound,
clips, micro-batch x accumulation and the predicted peak against the card;
then the share of computed frames that are real, against padding every
batch to the slice. The long-clip warning then says what the long clips
cost under this plan. Bounds are real clip lengths, so without a table row
for one each bound is estimated on the fly (seconds each); --no-estimate
answers from the nearest longer slice in the tables instead, without torch.

Tables are read from $SOVITS_ADVISOR_TABLES (folders, os.pathsep-separated),
the per-user data folder (~/.local/share/sovits-advisor/tables, or under
$XDG_DATA_HOME) and the tables shipped with sovits-advisor.

When batch 1 does not fit, it says so, says what would (shorter slices, DPO
off, lower precision) and exits with status 1.

Workloads are named as `advisor train` names them: --workload s1, or
--workload s2 with --version v2|v2Pro|v2ProPlus (default v2Pro); the table
names s2-v2 and s2-v2ProPlus are accepted too, with a note.

  advisor plan --vram 8GiB --workload s1 --slice-seconds 10
  advisor plan --vram 12GiB --workload s2 --version v2 --slice-seconds 10 --for gpt-sovits
  advisor plan --vram 8GiB --workload s1 --data ds --dpo

Sizes: 8GiB, 8GB (GB means GiB, as on GPU boxes), 8192MiB or 8 (GiB); a
bare number over 1024 (80000: a MiB figure) is refused with a suggestion.
JSON keys: workload, slice_seconds, dpo, precision, vram_bytes, max_batch_size,
recommended_batch_size, predicted_peak_bytes, source, table, trainer,
webui_batch_size, webui_note (and attention, row_vram_bytes, row_slice_seconds,
note; with --data: dataset, clips, longest_clip, planned_seconds, warning,
and for --for advisor bucket_plan {effective_batch, world, useful_fraction,
slice_useful_fraction, buckets [{bound_seconds, clips, micro_batch,
accumulation, max_batch_size, predicted_peak_bytes, source, table, note}],
plan (the plan as `advisor train` stores it)}; would_fit when batch 1 does
not fit).
"""


WHY = {
    "advisor": {
        "s1": "our `advisor train` (sdpa with a bool mask, AdamW, gradients freed every step); GPT-SoVITS's own s1_train.py keeps more alive: ask with --for gpt-sovits",
        "s2": "our `advisor train` (G and D stepped together, gradients freed every step); GPT-SoVITS's own s2_train.py keeps more alive: ask with --for gpt-sovits",
        "s2-v3v4": "our `advisor train` (LoRA on the DiT, gradients freed before the forward, extra flow-matching passes under no_grad); GPT-SoVITS's own s2_train_v3_lora.py keeps last step's gradients through the forward: ask with --for gpt-sovits",
    },
    "gpt-sovits": {
        "s1": "GPT-SoVITS's s1_train.py: its (B*16, S, S) float mask and PyTorch's padded copy of it in every layer, ScaledAdam's step, gradients kept across its 4-batch accumulation: smaller than --for advisor",
        "s2": "GPT-SoVITS's s2_train.py: last step's G and D gradients, D run with grad on the real window, D outputs its loop keeps, weight-norm caches: smaller than --for advisor",
        "s2-v3v4": "GPT-SoVITS's s2_train_v3_lora.py: last step's gradients alive through the forward (zero_grad after it), wns1's weight-norm caches: smaller than --for advisor",
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vram", required=True, metavar="SIZE", help="card memory, e.g. 8GiB, 8GB, 8192MiB or 8")
    parser.add_argument("--workload", required=True, choices=TABLE_NAMES, metavar="{s1,s2}", help="s1 (GPT) or s2 (SoVITS); the table names s2-v2, s2-v2ProPlus, s2-v3, s2-v4 are accepted (= s2 --version ...; v3 / v4 train LoRA on a DiT)")
    parser.add_argument("--version", choices=VERSIONS, default=None, help=f"GPT-SoVITS model version (default {DEFAULT_VERSION}): s2's architecture; s1 is the same GPT for every version")
    parser.add_argument("--slice-seconds", type=float, metavar="S", help="slice length in seconds (or --data)")
    parser.add_argument("--data", metavar="DATASET", help="a prepared dataset: plan for its longest clip instead of --slice-seconds")
    parser.add_argument("--for", dest="trainer", choices=("advisor", "gpt-sovits"), default="advisor", help="whose trainer: advisor (our `advisor train`, default) or gpt-sovits (its own s1_train.py / s2_train.py)")
    parser.add_argument("--grad-ckpt", action="store_true", help="s2-v3 / s2-v4: with gradient checkpointing of the DiT's blocks (train --grad-ckpt)")
    parser.add_argument("--dpo", action="store_true", help="s1 with DPO (two forward passes)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default=None, help="default: this device's best (bf16 Ampere+, fp16 older GPUs, fp32 CPU), as advisor probe")
    parser.add_argument("--attention", choices=("sdpa", "gpt_sovits"), default=None, help="s1 attention for --for advisor (default sdpa, what `advisor train` runs); gpt-sovits always uses its own")
    parser.add_argument("--device-name", default=None, help="prefer measured tables of this GPU (default: this machine's GPU)")
    parser.add_argument("--margin", type=float, default=0.10, help="fraction left free when estimating on the fly (default 0.1)")
    parser.add_argument("--no-estimate", action="store_true", help="never estimate on the fly; answer from tables only")
    parser.add_argument("--effective", type=int, metavar="N", help="with --data: samples per optimiser step in every bucket (default: the micro-batch of the median clip's bucket)")
    parser.add_argument("--max-buckets", type=int, default=8, metavar="K", help="with --data: length buckets at most (default 8)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def run(args: argparse.Namespace) -> int:
    from probe.plan import plan, too_small_message, what_fits
    from probe.sizes import format_size, parse_size
    from probe.table import load_tables

    from trainer.checks import resolve_workload, table_name

    try:
        vram = parse_size(args.vram)
    except ValueError as exc:
        raise ValueError(f"--vram: {exc}") from None
    base, version, note = resolve_workload(args.workload, args.version)
    if note:
        print(f"advisor plan: note: {note}", file=sys.stderr)
    workload = table_name(base, version)
    if not 0 <= args.margin < 1:
        raise ValueError(f"--margin {args.margin!r} is outside [0, 1): expected a fraction such as 0.1")
    precision, device_name = _defaults(args)
    tables, problems = load_tables()
    for problem in problems:
        print(f"advisor plan: warning: skipped {problem}", file=sys.stderr)
    if (args.slice_seconds is None) == (args.data is None):
        raise ValueError("give exactly one of --slice-seconds S or --data DATASET")
    if args.effective is not None and args.effective < 1:
        raise ValueError(f"--effective {args.effective}: expected a number of samples >= 1")
    if args.max_buckets < 1:
        raise ValueError(f"--max-buckets {args.max_buckets}: expected at least 1")
    options = dict(device_name=device_name, attention=args.attention, tables=tables, allow_estimate=not args.no_estimate, margin=args.margin,
                   grad_ckpt=args.grad_ckpt)
    dataset = buckets = None
    try:
        if args.data:
            from probe.longest import plan_for_dataset

            if args.trainer == "advisor":
                from probe.buckets import plan_buckets

                def progress(line: str) -> None:
                    print(f"advisor plan: {line}", file=sys.stderr, flush=True)

                buckets = plan_buckets(vram, workload, args.data, args.dpo, precision, args.effective, max_buckets=args.max_buckets, progress=progress, **options)
            dataset = plan_for_dataset(vram, workload, args.data, args.dpo, precision, args.trainer, buckets=buckets, **options)
            result = dataset.result
        else:
            result = plan(vram, workload, args.slice_seconds, args.dpo, precision, trainer=args.trainer, **options)
    except LookupError as exc:
        raise ValueError(str(exc)) from None
    alternatives = [] if result.fits else what_fits(result, tables, not args.no_estimate)
    if args.json:
        data = dataset.to_json() if dataset else result.to_json()
        if buckets is not None:
            data["bucket_plan"] = buckets.to_json()
        if not result.fits:
            data["would_fit"] = [{"change": a.change, **a.result.to_json()} for a in alternatives]
        print(json.dumps(data, indent=2))
    if dataset and dataset.warning:
        print(f"advisor plan: warning: {dataset.warning}", file=sys.stderr)
    if not result.fits:
        print(f"advisor plan: {too_small_message(result, alternatives)}", file=sys.stderr)
        return 1
    if not args.json:
        trainer = "advisor train" if result.trainer == "advisor" else "GPT-SoVITS's own trainer"
        shown = f"s2 {version or DEFAULT_VERSION}" if base == "s2" else base
        mode = f"{shown} {result.slice_seconds:g} s{' DPO' if result.dpo else ''} {result.precision}" + (f" ({result.attention})" if result.attention else "") \
            + (" with gradient checkpointing" if result.grad_ckpt else "")
        peak = f", predicted peak {format_size(result.predicted_peak_bytes)}" if result.predicted_peak_bytes else ""
        print(f"{mode} on {format_size(vram)} for {trainer}: max batch {result.max_batch_size}, recommended {result.recommended_batch_size}{peak}")
        if dataset:
            c = dataset.longest
            print(f"planned for the longest clip: {c.audio or c.id} ({c.seconds:.2f} s of {dataset.clips} clips; batches padded to {dataset.planned_seconds:g} s)")
        if buckets is not None:
            from probe.buckets import describe

            print("\n".join(describe(buckets)))
        if result.webui_batch_size is not None:
            print(f"GPT-SoVITS webui: batch_size {result.webui_batch_size} ({result.webui_note})")
        print(f"trainer: {why(result.trainer, result.workload)}")
        print(f"source: {result.source}" + (f" ({result.table})" if result.table else " (estimated on the fly)"))
        if result.note:
            print(f"note: {result.note}")
    return 0


def why(trainer: str, workload: str) -> str:
    """What the figure is for: s1, the s2 GAN (any v2-family version) or s2 v3 / v4."""
    family = "s2-v3v4" if workload in ("s2-v3", "s2-v4") else workload.split("-")[0]
    return WHY[trainer][family]


def _defaults(args: argparse.Namespace) -> tuple[str, str | None]:
    """--precision and --device-name, defaulting to this machine's GPU when there is one."""
    if args.precision and args.device_name:
        return args.precision, args.device_name
    from probe.device import gpus, inventory

    if not gpus(cuda_available=False):  # NVML sees no GPU (or no driver): CUDA has none either, so no torch import
        return args.precision or "fp32", args.device_name
    inv = inventory()  # a GPU: torch says whether this build can use it (a CPU build plans fp32)
    gpu = inv.gpus[0] if inv.cuda_available and inv.gpus else None
    precision = args.precision or inv.best_precision()  # the same default as `advisor probe`
    return precision, args.device_name or (gpu.name if gpu else None)
