"""`advisor doctor`: what this machine has for training GPT-SoVITS."""

from __future__ import annotations

import argparse
import dataclasses
import json

HELP = "show Python, torch, CUDA, the audio libraries, GPUs (via NVML), CPU cores and RAM"
DESCRIPTION = """\
Inventory of this machine, read through NVML (nvidia-ml-py), psutil and torch:
Python, torch, the CUDA version torch was built with; whether the compiled
audio libraries (soundfile/libsndfile for decoding, soxr for resampling) load,
and if not why and the pip command that repairs them; each GPU's
name, total/free memory, driver and compute capability; CPU cores and RAM; and
the precision `advisor probe` would pick (bf16 on Ampere or newer, fp16 on
older GPUs, fp32 on CPU). Without a GPU or NVML it says so and exits 0.
"""

GIB = 1024**3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def run(args: argparse.Namespace) -> int:
    from probe.device import inventory
    from trainer.data.audio_backend import status

    inv = inventory()
    audio = status()
    if args.json:
        backends = {b.package: {"loads": b.ok, "version": b.version, "detail": b.detail} for b in audio}
        print(json.dumps({**dataclasses.asdict(inv), "best_precision": inv.best_precision(), "audio": backends}, indent=2))
        return 0
    for line in report_lines(inv, audio):
        print(line)
    return 0


def audio_line(backends) -> str:
    """One line: every audio backend loads, or the first that does not, why, and the fix."""
    broken = [b for b in backends if not b.ok]
    if broken:
        return f"audio       BROKEN: {broken[0].detail}"
    return "audio       " + "; ".join(f"{b.package} {b.version} ({b.detail}) loads" for b in backends)


def report_lines(inv, audio=()) -> list[str]:
    """Plain lines (no GPU access here: `inv` is a snapshot from probe.device)."""
    cores = f"{inv.cpu_cores_logical} logical" + (f" / {inv.cpu_cores_physical} physical" if inv.cpu_cores_physical else "")
    lines = [
        f"python      {inv.python} ({inv.platform})",
        f"torch       {inv.torch or 'not installed'}",
        f"cuda        {inv.cuda or 'none (CPU build)'}; available: {'yes' if inv.cuda_available else 'no'}",
        *([audio_line(audio)] if audio else []),
        f"cpu         {cores} cores",
        f"ram         {inv.ram_total_bytes / GIB:.1f} GiB total, {inv.ram_available_bytes / GIB:.1f} GiB available",
    ]
    if not inv.gpus:
        why = f" ({inv.nvml_error})" if inv.nvml_error else ""
        lines.append(f"gpu         none found{why}: the probe will estimate on CPU")
    for gpu in inv.gpus:
        free = f", {gpu.free_bytes / GIB:.1f} GiB free" if gpu.free_bytes is not None else ""
        lines.append(
            f"gpu {gpu.index}       {gpu.name}: {gpu.total_bytes / GIB:.1f} GiB{free}; "
            f"compute {gpu.compute_capability or '?'}; driver {gpu.driver or '?'}"
        )
    lines.append(f"precision   {inv.best_precision()} (what `advisor probe` picks here)")
    return lines
