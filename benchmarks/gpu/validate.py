"""One-command GPU validation of the advisor trainer's memory and speed advice.

    benchmarks/gpu/validate.sh [--dry-run] [--out FILE] [--budget-seconds 480]

On one CUDA GPU, for s1 (plain, DPO) and s2 at 5 / 10 / 30 s: finds the max
batch by search (probe.search, OOM = does not fit), checks that max + 1 really
runs out of memory, compares the measured peak at max with the estimate
(target: within 10 %), times samples/s at a few batch sizes (the recommended
batch's throughput within 5 % of the best), reports s1's model FLOPs
utilisation (6 x parameters x tokens per second against the card's dense
fp16 peak), and writes one Markdown results file under benchmarks/results/.
Cells run cheapest first and stop when the time budget is spent (what was
measured is still written). `--dry-run` (no GPU needed) lists the cells and
checks the environment: torch, the workloads, the estimator, CUDA.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

CELLS = [("s1", s, False) for s in (5.0, 10.0, 30.0)] + [("s1", s, True) for s in (5.0, 10.0, 30.0)] + [("s2", s, False) for s in (5.0, 10.0, 30.0)]
PRECISION = "fp16"
PEAK_TARGET, SPEED_TARGET = 0.10, 0.05
DENSE_FP16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0, "3090": 71.0, "T4": 65.0}


def check_environment(need_cuda: bool) -> list[str]:
    """Lines describing the environment; raises SystemExit(2) on what would break the run."""
    import torch

    from probe.memory import MetaEstimator
    from trainer.workloads import get_workload

    lines = [f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}"]
    for name in ("s1", "s2"):
        est = MetaEstimator(get_workload(name, "tiny"), PRECISION)
        lines.append(f"estimator ok: {name} tiny, batch 1 at 5 s estimates {est.peak(1, 5.0).peak_bytes / 2**20:.0f} MiB")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
    elif need_cuda:
        print("validate: no CUDA GPU visible to torch: run with --dry-run, or on a GPU machine", file=sys.stderr)
        raise SystemExit(2)
    else:
        lines.append("GPU: none (dry run)")
    return lines


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in DENSE_FP16_TFLOPS.items() if k in name), None)


def measure_cell(workload_name: str, seconds: float, dpo: bool, deadline: float) -> dict:
    import torch

    from probe.memory import MetaEstimator, release_memory
    from probe.runner import measured_or_none
    from probe.search import MAX_BATCH, Trials, largest_batch
    from probe.throughput import recommend
    from trainer.workload import make_scaler
    from trainer.workloads import get_workload

    workload = get_workload(workload_name, "full")
    models = workload.build("cuda")
    optimizers = workload.make_optimizers(models)
    scaler = make_scaler(PRECISION, "cuda")
    total = torch.cuda.get_device_properties(0).total_memory
    speeds: dict[int, float] = {}
    peaks: dict[int, int] = {}

    def trial(b: int) -> int | None:
        if time.monotonic() > deadline:
            raise TimeoutError
        release_memory("cuda")
        peak = measured_or_none(workload, models, optimizers, scaler, b, seconds, dpo, PRECISION, warmup=1, steps=2)
        if peak is None:
            return None
        speeds[b] = b / peak.step_seconds
        peaks[b] = peak.peak_bytes
        return peak.peak_bytes

    trials = Trials(trial)
    best = largest_batch(trials, total, None, MAX_BATCH)
    over = trial(best + 1) if best else None
    for b in sorted({max(1, best // 4), max(1, best // 2), max(1, 3 * best // 4)} - set(speeds)):
        trial(b)
    est = MetaEstimator(workload, PRECISION)
    estimate = est.peak(best, seconds, dpo).peak_bytes if best else None
    chosen = recommend(speeds, best) if speeds else None
    fastest = max(speeds.values()) if speeds else None
    mfu = None
    if workload_name == "s1" and chosen and peak_tflops(torch.cuda.get_device_name(0)):
        params = sum(p.numel() for p in models.parameters())
        tokens = (12 + 25) * seconds + ((12 + 50) * seconds if dpo else 0)  # phonemes + semantic tokens; DPO: + the rejected pass (2T)
        mfu = 6 * params * tokens * speeds[chosen] / (peak_tflops(torch.cuda.get_device_name(0)) * 1e12)
    del models, optimizers
    release_memory("cuda")
    return {
        "cell": f"{workload_name} {seconds:g}s{' dpo' if dpo else ''}", "max": best, "max_plus_1_ooms": over is None,
        "measured": peaks.get(best), "estimated": estimate, "recommended": chosen,
        "speed_ratio": speeds[chosen] / fastest if chosen else None, "speeds": speeds, "mfu": mfu,
    }


def report(lines: list[str], results: list[dict], skipped: list[str]) -> str:
    mib = lambda b: f"{b / 2**20:.0f}" if b else "-"
    out = ["# GPU validation of the advisor trainer (benchmarks/gpu/validate.sh)", "", f"Date: {datetime.date.today()}; precision {PRECISION}.", ""]
    out += [f"- {line}" for line in lines] + ["", "| cell | max | max+1 OOMs | measured MiB | estimated MiB | error | recommended | speed vs best | s1 MFU |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        err = f"{(r['estimated'] - r['measured']) / r['measured']:+.1%}" if r["measured"] and r["estimated"] else "-"
        ok = lambda c: "" if c else " (!)"
        ratio = f"{r['speed_ratio']:.3f}{ok(r['speed_ratio'] >= 1 - SPEED_TARGET)}" if r["speed_ratio"] else "-"
        err_ok = ok(r["measured"] and r["estimated"] and abs(r["estimated"] - r["measured"]) <= PEAK_TARGET * r["measured"]) if err != "-" else ""
        mfu = f"{r['mfu']:.1%}" if r["mfu"] else "-"
        out.append(f"| {r['cell']} | {r['max']} | {r['max_plus_1_ooms']} | {mib(r['measured'])} | {mib(r['estimated'])} | {err}{err_ok} | {r['recommended']} | {ratio} | {mfu} |")
    if skipped:
        out += ["", f"Not measured (time budget spent): {', '.join(skipped)}."]
    out += ["", f"Targets: estimate within {PEAK_TARGET:.0%} of the measured peak; recommended batch within {SPEED_TARGET:.0%} of the best samples/s; (!) marks a miss."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list the cells and check the environment; no GPU needed")
    parser.add_argument("--out", default=None, help="results file (default benchmarks/results/gpu-<date>.md)")
    parser.add_argument("--budget-seconds", type=float, default=420.0, help="stop starting cells after this long (default 420; validate.sh stops everything at 480)")
    args = parser.parse_args(argv)
    lines = check_environment(need_cuda=not args.dry_run)
    if args.dry_run:
        print("\n".join(lines))
        print("would measure (advisor trainer, fp16, full size): " + ", ".join(f"{w} {s:g}s{' dpo' if d else ''}" for w, s, d in CELLS))
        print("per cell: max batch by search, max+1 must OOM, measured vs estimated peak (10 %), samples/s at 1/4, 1/2, 3/4 and max (5 %), s1 MFU")
        return 0
    deadline = time.monotonic() + args.budget_seconds
    results, skipped = [], []
    for w, s, d in CELLS:
        if time.monotonic() > deadline:
            skipped.append(f"{w} {s:g}s{' dpo' if d else ''}")
            continue
        try:
            results.append(measure_cell(w, s, d, deadline))
        except TimeoutError:
            skipped.append(f"{w} {s:g}s{' dpo' if d else ''}")
        print(results[-1] if results else "", flush=True)
    path = Path(args.out or Path(__file__).resolve().parents[1] / "results" / f"gpu-{datetime.date.today()}.md")
    from trainer.atomic import atomic_write_bytes

    atomic_write_bytes(path, report(lines, results, skipped).encode())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
