"""`advisor workloads`: the s1/s2 workloads and their parameter counts."""

from __future__ import annotations

import argparse
import json
import sys

from trainer.checks import DEFAULT_VERSION, VERSIONS


HELP = "list the training workloads (s1 GPT, s2 SoVITS) with parameter counts"
DESCRIPTION = """\
List the workloads the probe measures and the trainer trains, with parameter
counts of their full-size models (built on the meta device: no memory used;
it imports torch, so it takes seconds: ~5 s of CPU on a 2-core machine).

  s1  GPT text-to-semantic model (GPT-SoVITS stage 1; DPO mode optional)
  s2  SoVITS generator + multi-period discriminator (GPT-SoVITS stage 2, a GAN),
      one row per GPT-SoVITS version: v2, v2Pro (the default), v2ProPlus;
      v3 and v4: SynthesizerTrnV3 (the v2 text side + a 22-block DiT decoder
      trained by flow matching), fine-tuned with LoRA at rank 32 as GPT-SoVITS
      does: "trainable" counts the adapters, bridge and wns1

--json prints a list of {"name", "parameters": {"total", "trainable"}, "modules"}
(s2 entries add "version" and "recipe"; v3 / v4 also "lora_rank").

With --shapes, print the synthetic batch one training step of that workload
takes for a batch size and slice length (the shapes real data of that length
has: 25 Hz tokens, 50 Hz frames, 32 kHz samples, ~12 phonemes/s):

  advisor workloads --shapes --workload s1 --batch-size 4 --slice-seconds 10 --dpo
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument(
        "--size", choices=("full", "tiny"), default="full", help="model size to describe (default: full)"
    )
    shapes = parser.add_argument_group("batch shapes (--shapes)")
    shapes.add_argument("--shapes", action="store_true", help="print the synthetic batch shapes instead")
    shapes.add_argument("--workload", default="s1", metavar="{s1,s2}", help="s1 or s2 (default: s1; the table names s2-v2, s2-v2ProPlus are accepted)")
    shapes.add_argument("--batch-size", type=int, default=1, help="samples per batch (default: 1)")
    shapes.add_argument("--slice-seconds", type=float, default=10.0, help="slice length, (0, 54] (default: 10)")
    shapes.add_argument("--dpo", action="store_true", help="s1 DPO mode (adds rejected sequences)")
    shapes.add_argument("--precision", default="fp32", help="fp32, fp16 or bf16 (validated; default fp32)")
    shapes.add_argument("--version", choices=VERSIONS, default=None, help=f"s2 model version (default {DEFAULT_VERSION}; v3/v4: the CFM/DiT s2 with LoRA)")


def run(args: argparse.Namespace) -> int:
    from trainer.workloads import WORKLOAD_NAMES, get_workload

    if args.shapes:
        return _print_shapes(args)

    described = [get_workload("s1", size=args.size).describe()]
    described += [get_workload("s2", size=args.size, version=v).describe() for v in VERSIONS]  # v2 family, then v3/v4
    assert set(WORKLOAD_NAMES) == {"s1", "s2"}
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    _print_table(described)
    return 0


def _print_table(described: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Workloads (parameters)")
    table.add_column("workload")
    table.add_column("module")
    table.add_column("parameters", justify="right")
    for d in described:
        total = d["parameters"]["total"]
        name = f"{d['name']} {d['version']}" if "version" in d else d["name"]
        table.add_row(name, "[b]total[/b]", f"{total:,} ({total / 1e6:.2f} M)")
        for module, count in d["modules"].items():
            table.add_row("", module, f"{count:,}")
    Console().print(table)


def _print_shapes(args: argparse.Namespace) -> int:
    from trainer.workload import check_precision
    from trainer.workloads import get_workload

    from trainer.checks import resolve_workload

    check_precision(args.precision)
    name, version, note = resolve_workload(args.workload, args.version)
    if note:
        print(f"advisor workloads: note: {note}", file=sys.stderr)
    options = {"version": version} if name == "s2" and version else {}
    workload = get_workload(name, size=args.size, **options)
    batch = workload.synthetic_batch(args.batch_size, args.slice_seconds, dpo=args.dpo, device="meta")
    shapes = {key: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for key, t in batch.items()}
    if args.json:
        print(json.dumps({"workload": name, **({"version": version or DEFAULT_VERSION} if name == "s2" else {}), "batch_size": args.batch_size,
                          "slice_seconds": args.slice_seconds, "dpo": args.dpo, "tensors": shapes}, indent=2))
        return 0
    for key, info in shapes.items():
        print(f"{key:16s} {str(tuple(info['shape'])):24s} {info['dtype']}")
    return 0
