"""`advisor train`: start or resume a training run, with the batch taken from the VRAM tables."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from advisor.errors import UserError
from trainer import exits

HELP = "train s1 or s2 on a prepared dataset (batch from the VRAM tables; atomic checkpoints; resumable)"
DESCRIPTION = """\
Fine-tune GPT-SoVITS's own models, or train a workload on a dataset made by
`advisor prepare`, writing everything to RUN_DIR.

GPT-SoVITS s1 (GPT), from its experiment folder and pretrained weights to a
file its inference webui lists:
  advisor prepare --from-gpt-sovits GPT-SoVITS/logs/myvoice ds
  advisor train --workload s1 --data ds --out runs/myvoice \\
      --init GPT-SoVITS/GPT_SoVITS/pretrained_models/s1v3.ckpt \\
      --gpt-sovits-root GPT-SoVITS
  -> runs/myvoice/export/GPT_weights_<version>/myvoice-e<E>.ckpt (the best
     checkpoint, fp16, GPT-SoVITS's format), copied into
     GPT-SoVITS/GPT_weights_<version>/. --recipe gpt-sovits computes exactly
     GPT-SoVITS's training step (summed loss, its padding mask, ScaledAdam at
     0.002, a step every 4 batches); the default, advisor, corrects it
     (README: "Recipes"). --init takes the pretrained .ckpt or any
     GPT_weights*/<name>-e<E>.ckpt; its keys and shapes must match the model.

RUN_DIR:

  config.yaml     the resolved config (what --print-config shows)
  manifest.json   complete checkpoints (sha256, step, epoch, metric), latest, best
  events.jsonl    start, step, val, checkpoint, end, and watchdog decisions
  checkpoints/    full training state: models, optimisers, LR scale, GradScaler,
                  RNG states, data position, micro-batch, policy states
  export/         the best weights by the validation metric, as plain state
                  dicts (torch.load(..., weights_only=True) needs nothing of ours)

The batch: the micro-batch (samples per forward/backward) is the recommended
batch of the best table for this GPU, workload, slice length, DPO mode and
precision, as `advisor plan` answers (measured > estimated > community, or
estimated on the fly). Without a GPU the host's available RAM is the budget.
The tables describe full-size models: --size tiny (a CPU rehearsal) uses a
micro-batch of 4. The effective batch (samples per optimiser step, over all
processes) is --effective-batch, else the config's, else the micro-batch
times the number of processes; accumulation = effective / (micro x processes). --micro-batch N overrides the table. What was chosen, and
from which table, is printed and written to the start event.

Config: --config FILE (YAML; `advisor train --print-config ...` prints a
documented one with every field), then the flags below, then --set KEY=VALUE
for any field (e.g. --set schedule.warmup_steps=200 --set optim.lr.gpt=2e-4).
Unknown keys and wrong types are one-line errors naming file, line and field.

A RUN_DIR that already holds a run is refused unless --resume, which
continues from its newest checkpoint that verifies (its own config.yaml, with
your flags applied: e.g. --resume --epochs 20 trains longer).

Several GPUs (one process each; NCCL, or gloo on CPU): write the config, then
launch the trainer with torchrun:
  advisor train --workload s2 --data ds --out runs/s2 --write-config
  torchrun --nproc-per-node 4 -m trainer.run --config runs/s2/config.yaml

Unattended: the trainer runs as a child of a supervisor that restarts it after
a crash (from the latest good checkpoint, with half the micro-batch after an
out-of-memory kill; --max-restarts, back-off 5 s doubling). The watchdog
(`watchdog:` section of the config, or --set watchdog.<policy>.<field>=V,
watchdog.<policy>=null to turn one off) halves the micro-batch on OOM, skips
NaN/spiking steps, cuts the LR, rolls back, and stops early on the validation
metric. On a terminal a live dashboard shows the run; --detach runs it in the
background; `advisor stop RUN_DIR` stops it cleanly; --emulate-vram rehearses
a smaller card's OOMs on CPU.

Exit codes: 0 finished or stopped cleanly; 2 bad input (one line); 3 even
micro-batch 1 does not fit (the message says what would); another code: the
trainer kept failing after its restarts.

Examples:
  advisor train --workload s1 --data ds --out runs/v --init s1v3.ckpt --recipe gpt-sovits
  advisor train --workload s2 --data ds --out runs/s2 --epochs 8
  advisor train --workload s1 --data ds --out runs/s1 --dpo --precision bf16
  advisor train --workload s1 --data ds --out runs/try --size tiny --epochs 2
  advisor train --out runs/s2 --resume --epochs 12
"""

TINY_MICRO_BATCH = 4  # the tables describe full-size models; a tiny rehearsal needs no search
TAKEOVER_WAIT_S = 120.0  # --resume on a run whose supervisor died: wait for its trainer to checkpoint and exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", choices=("s1", "s2"), help="s1 (GPT) or s2 (SoVITS); or workload: in --config")
    parser.add_argument("--data", type=Path, metavar="DATASET", help="prepared dataset folder (`advisor prepare`)")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run directory (new, or an existing one with --resume)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="training config YAML (fields not given keep their defaults)")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its newest good checkpoint")
    parser.add_argument("--size", choices=("full", "tiny"), help="model size (default full; tiny: CPU rehearsal)")
    parser.add_argument("--epochs", type=int, metavar="N", help="passes over the training split (default 8)")
    parser.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimiser steps")
    parser.add_argument("--micro-batch", type=int, metavar="N", help="samples per forward/backward (default: the table's recommended batch)")
    parser.add_argument("--effective-batch", type=int, metavar="N", help="samples per optimiser step (default: the micro-batch)")
    parser.add_argument("--slice-seconds", type=float, metavar="S", help="slice length (default: the dataset's)")
    parser.add_argument("--dpo", action="store_true", default=None, help="s1: add the DPO loss")
    parser.add_argument("--init", type=Path, metavar="PATH", help="GPT-SoVITS weights to start from: s1 pretrained .ckpt or GPT_weights*/<name>-e<E>.ckpt; s2 generator s2G*.pth, G_*.pth or SoVITS_weights*/*.pth")
    parser.add_argument("--init-d", metavar="PATH", help="s2: GPT-SoVITS discriminator to start from (s2D*.pth / D_*.pth; default: the one beside --init)")
    parser.add_argument("--version", choices=("v2", "v2Pro", "v2ProPlus"), help="GPT-SoVITS model version (default v2Pro; s2 v2Pro+ need sv_emb per clip; names the GPT_weights_*/SoVITS_weights_* folders)")
    parser.add_argument("--recipe", choices=("advisor", "gpt-sovits"), help="advisor (default: corrected step) or gpt-sovits (GPT-SoVITS's own step, exactly)")
    parser.add_argument("--gpt-sovits-root", type=Path, metavar="DIR", help="a GPT-SoVITS checkout: exports are also copied into DIR/GPT_weights_<version>/ or DIR/SoVITS_weights_<version>/")
    parser.add_argument("--export-every-epoch", action="store_true", default=None, help="s1: also export a GPT_weights file at every epoch end")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), help="default: bf16 on Ampere+, fp16 on older GPUs (s1 --recipe gpt-sovits: fp16 on every GPU, as upstream), fp32 on CPU")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--seed", type=int, help="seed (default 0)")
    parser.add_argument("--s2", type=Path, metavar="PATH", help="s1: an s2 export's generator.pt (our format) to voice the validation samples with")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config field, dotted (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit; writes nothing")
    parser.add_argument("--write-config", action="store_true", help="write RUN_DIR/config.yaml and exit (then launch torchrun)")
    parser.add_argument("--json", action="store_true", help="no progress display; print a JSON summary at the end")
    unattended = parser.add_argument_group("unattended runs (supervisor, watchdog, dashboard)")
    unattended.add_argument("--detach", action="store_true", help="run the supervisor in the background (survives closing the terminal); prints RUN_DIR")
    unattended.add_argument("--emulate-vram", metavar="SIZE", help="CPU rehearsal: an emulated GPU memory budget (8GiB, 6GB, 4096MiB); allocations past it raise a real OOM")
    unattended.add_argument("--max-restarts", type=int, default=3, metavar="N", help="supervisor: restarts after a crash before giving up (default 3)")
    unattended.add_argument("--no-supervisor", action="store_true", help="train in this process (no crash restarts)")
    unattended.add_argument("--no-dashboard", action="store_true", help="plain log lines even on a terminal")


def run(args: argparse.Namespace) -> int:
    from trainer.config import dump_config
    from trainer.rundir import RunDir

    if args.max_restarts < 0:
        raise UserError(f"--max-restarts {args.max_restarts}: expected an integer >= 0")
    emulate = _emulated_bytes(args.emulate_vram)
    run_dir = RunDir(args.out)
    cfg, explicit, watchdog = resolve_config(args, run_dir)
    cfg, chosen = choose_batch(cfg, explicit, args.resume, emulate)
    quiet_stdout = args.print_config or args.json or args.detach  # stdout carries YAML, JSON or RUN_DIR only

    def report(text: str) -> None:
        print(text, file=sys.stderr if quiet_stdout else sys.stdout)

    report(f"batch: {describe_batch(cfg, chosen)}")
    if args.print_config:
        print(dump_config(cfg), end="")
        print(watchdog_yaml(watchdog), end="")
        return 0
    preflight(cfg)
    if args.detach:
        return detach(args, run_dir)
    from advisor.supervisor import RunLock, RunLocked

    lock = RunLock(run_dir.root)
    try:
        lock.acquire(wait_s=TAKEOVER_WAIT_S if args.resume else 0.0)  # --resume takes over a dead run
    except RunLocked as exc:
        raise UserError(str(exc)) from None
    try:
        run_dir.write_config(dump_config(cfg))
        write_watchdog(run_dir, watchdog)
        if args.write_config:
            report(f"wrote {run_dir.config}")
            return 0
        if args.no_supervisor:
            return train_now(cfg, run_dir, args.json, watchdog, emulate)
        return supervise(cfg, run_dir, lock, args, emulate)
    finally:
        lock.release()


# --- config ----------------------------------------------------------------------------------


def resolve_config(args: argparse.Namespace, run_dir) -> tuple[Any, set[str], Any]:
    """Defaults < --config FILE (or RUN_DIR/config.yaml with --resume) < flags < --set.

    Returns the config, the dotted fields the user set (file or command line) and
    the watchdog settings (the file's `watchdog:` section, RUN_DIR/watchdog.yaml
    on --resume, `--set watchdog.<policy>.<field>=...`)."""
    from trainer.config import apply_overrides, from_dict, load_yaml, parse_assignment

    if args.resume:
        if args.config is not None:
            raise UserError("--config with --resume: a resumed run keeps its own config.yaml; change fields with flags or --set")
        if not run_dir.config.is_file():
            raise UserError(f"--resume: {run_dir.root} holds no run (no {run_dir.config.name}); start one without --resume")
        source = run_dir.config
    else:
        if run_dir.holds_run() and not args.print_config:
            raise UserError(f"{run_dir.root} already holds a run: pass --resume to continue it, or choose another --out (nothing was overwritten)")
        source = args.config
    raw, lines = load_yaml(source) if source is not None else ({}, {})
    watchdog_raw = raw.pop("watchdog", None) if isinstance(raw, dict) else None
    watchdog_from = (watchdog_raw, lines, str(source) if source else "config")  # errors name the file and line of the field
    if args.resume:
        watchdog_from = read_watchdog_raw(run_dir)
    cfg = from_dict(raw, lines, str(source) if source else "config")
    if source is not None and cfg.dataset is not None and not Path(cfg.dataset).is_absolute():
        cfg = apply_overrides(cfg, {"dataset": str((Path(source).parent / cfg.dataset).resolve())}, str(source))
    overrides = flag_overrides(args)
    watchdog_sets: dict[str, Any] = {}
    for text in args.set:
        key, value = parse_assignment(text)
        (watchdog_sets if key.startswith("watchdog.") else overrides)[key] = value
    cfg = apply_overrides(cfg, overrides)
    if cfg.dataset is None:
        raise UserError("no dataset: pass --data DATASET (a folder made by `advisor prepare`) or set dataset: in --config")
    return cfg, _dotted_keys(raw) | set(overrides), build_watchdog(*watchdog_from, watchdog_sets)


# --- watchdog settings -------------------------------------------------------------------------


def build_watchdog(raw: Any, lines: dict[str, int], source: str, sets: dict[str, Any]):
    """WatchdogConfig from a `watchdog:` mapping (checked first, so its errors name
    source:line of the field) plus `watchdog.a.b=value` assignments."""
    from advisor.child import watchdog_config
    from advisor.watchdog import WatchdogConfig

    watchdog_config(raw, lines, source)
    data = dict(raw or {}) if isinstance(raw, dict) or raw is None else raw
    for key, value in sets.items():
        parts = key.split(".")[1:]
        if len(parts) == 1 and value is None:  # watchdog.<policy>=null turns a policy off
            data[parts[0]] = None
            continue
        if len(parts) != 2:
            raise UserError(f"--set {key}: expected watchdog.<policy>.<field>=VALUE or watchdog.<policy>=null "
                            "(e.g. watchdog.early_stop.patience=3)")
        section, name = parts
        if data.get(section) is None:
            data[section] = {}
        data[section] = {**data[section], name: value}
    return WatchdogConfig.from_dict(data)


def read_watchdog_raw(run_dir) -> tuple[Any, dict[str, int], str]:
    """RUN_DIR/watchdog.yaml as (raw data, field lines, file name); (None, {}, name) if absent."""
    from advisor.child import WATCHDOG_FILE, read_watchdog_file

    path = run_dir.root / WATCHDOG_FILE
    return (*read_watchdog_file(path), str(path)) if path.is_file() else (None, {}, str(path))


def watchdog_yaml(watchdog) -> str:
    import yaml

    return "# watchdog policies (advisor/watchdog; null turns a policy off)\n" + yaml.safe_dump(
        {"watchdog": watchdog.to_dict()}, sort_keys=False
    )


def write_watchdog(run_dir, watchdog) -> None:
    from advisor.child import WATCHDOG_FILE, watchdog_text
    from trainer.atomic import atomic_write_bytes

    atomic_write_bytes(run_dir.root / WATCHDOG_FILE, watchdog_text(watchdog.to_dict()).encode("utf-8"))


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    mapping = {
        "workload": args.workload,
        "dataset": str(args.data.resolve()) if args.data is not None else None,
        "size": args.size,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch.micro": args.micro_batch,
        "batch.effective": args.effective_batch,
        "slice_seconds": args.slice_seconds,
        "dpo": args.dpo,
        "init": str(args.init.resolve()) if getattr(args, "init", None) is not None else None,
        "init_d": str(Path(args.init_d).resolve()) if getattr(args, "init_d", None) is not None else None,
        "version": getattr(args, "version", None),
        "recipe": getattr(args, "recipe", None),
        "gpt_sovits_root": str(args.gpt_sovits_root.resolve()) if getattr(args, "gpt_sovits_root", None) is not None else None,
        "checkpoint.export_every_epoch": getattr(args, "export_every_epoch", None),
        "precision": args.precision,
        "device": args.device,
        "seed": args.seed,
        "validation.sample_s2": str(args.s2.resolve()) if args.s2 is not None else None,
    }
    out = {k: v for k, v in mapping.items() if v is not None}
    if args.micro_batch is not None:
        out["batch.source"], out["batch.table"] = "flag", None
    return out


def _dotted_keys(raw: Any, prefix: str = "") -> set[str]:
    keys = set()
    if isinstance(raw, dict):
        for key, value in raw.items():
            keys.add(f"{prefix}{key}")
            if isinstance(value, dict):
                keys |= _dotted_keys(value, f"{prefix}{key}.")
    return keys


# --- the batch -------------------------------------------------------------------------------


def choose_batch(cfg, explicit: set[str], resuming: bool, emulate_bytes: int | None = None):
    """Fill precision (this device's best) and the micro-batch (the table's recommended) where
    the user gave none. An effective batch left unset stays null: micro x processes, so the
    same config serves one process and torchrun. Returns (config, what was chosen)."""
    from trainer.config import apply_overrides

    chosen: dict[str, Any] = {"note": None}
    updates: dict[str, Any] = {}
    gpu = _gpu(cfg.device)
    if "precision" not in explicit and not resuming:
        from probe.device import precision_for_capability

        updates["precision"] = precision_for_capability(gpu["capability"]) if gpu else "fp32"
        if gpu and cfg.workload == "s1" and cfg.recipe == "gpt-sovits":
            updates["precision"] = "fp16"  # GPT-SoVITS trains s1 in "16-mixed" on every GPU
    cfg = apply_overrides(cfg, updates) if updates else cfg
    if resuming:
        chosen["source"] = cfg.batch.source
    elif "batch.micro" in explicit:
        chosen["source"] = "flag" if cfg.batch.source == "flag" else "config"
        if "batch.source" not in explicit:
            cfg = apply_overrides(cfg, {"batch.source": chosen["source"]})
    elif cfg.size == "tiny":
        micro = min(TINY_MICRO_BATCH, cfg.batch.effective or TINY_MICRO_BATCH)
        chosen.update(source="fallback", note="the VRAM tables describe full-size models; a tiny rehearsal uses micro-batch 4")
        cfg = apply_overrides(cfg, {"batch.micro": micro, "batch.source": "fallback", "batch.table": None})
    else:
        result, budget = _ask_tables(cfg, gpu, emulate_bytes)
        chosen.update(source=result.source, note=f"{budget}; {result.note}" if result.note else budget, max=result.max_batch_size)
        table = result.table or "estimated on the fly"
        cfg = apply_overrides(cfg, {"batch.micro": result.recommended_batch_size, "batch.source": result.source, "batch.table": table})
    if cfg.batch.effective is not None and cfg.batch.micro > cfg.batch.effective:
        cfg = apply_overrides(cfg, {"batch.micro": cfg.batch.effective})  # no point computing more than a step needs
    return cfg, chosen


def _ask_tables(cfg, gpu: dict | None, emulate_bytes: int | None = None):
    """What `advisor plan` answers for this device (the emulated budget, or the host RAM without a GPU)."""
    import psutil

    from probe.plan import plan, too_small_message, what_fits
    from probe.sizes import format_size
    from probe.table import load_tables

    slice_seconds = cfg.slice_seconds if cfg.slice_seconds is not None else _dataset_slice(cfg.dataset)
    if emulate_bytes:
        vram, name, budget = emulate_bytes, None, f"emulated budget {format_size(emulate_bytes)}"
    elif gpu:
        vram, name, budget = gpu["total_bytes"], gpu["name"], f"{gpu['name']} {format_size(gpu['total_bytes'])}"
    else:
        vram, name = int(psutil.virtual_memory().available), None
        budget = f"no GPU: the host's available RAM ({format_size(vram)}) as the budget"
    tables, problems = load_tables()
    for problem in problems:
        print(f"advisor train: warning: skipped {problem}", file=sys.stderr)
    try:
        from trainer.workloads import table_name

        workload = table_name(cfg.workload, cfg.version)
        if cfg.dataset is not None and cfg.slice_seconds is None:  # the dataset's worst batch, and a warning about a few long clips
            from probe.longest import plan_for_dataset

            worst = plan_for_dataset(vram, workload, cfg.dataset, cfg.dpo, cfg.precision, device_name=name, tables=tables)
            if worst.warning:
                print(f"advisor train: warning: {worst.warning}", file=sys.stderr)
            result = worst.result
        else:
            result = plan(vram, workload, slice_seconds, cfg.dpo, cfg.precision, name, tables=tables)
    except LookupError as exc:
        raise UserError(f"{exc}; or pass --micro-batch N") from None
    if not result.fits:
        raise UserError(too_small_message(result, what_fits(result, tables)))
    return result, budget


def _dataset_slice(dataset: str) -> float:
    from trainer.data.manifest import read_manifest

    return float(read_manifest(dataset)["slice_seconds"])


def _gpu(device: str) -> dict | None:
    """The CUDA device training will use (name, memory, capability), or None for CPU."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return None
    from probe.device import cuda_gpu

    index = int(device.split(":")[1]) if ":" in device else 0
    g = cuda_gpu(index)  # CUDA's numbering (after CUDA_VISIBLE_DEVICES), not NVML's
    if g is None:
        visible = ", ".join(f"cuda:{i}" for i in range(torch.cuda.device_count())) or "none"
        raise UserError(f"device: {device} is not one of the GPUs this process can use ({visible})")
    return {"name": g.name, "total_bytes": g.total_bytes, "capability": g.compute_capability}


def describe_batch(cfg, chosen: dict) -> str:
    b = cfg.batch
    effective = b.effective or b.micro
    accumulation = -(-effective // b.micro)
    if chosen["source"] in ("flag", "config", "fallback", "default"):
        where = {"flag": "--micro-batch", "config": "the config", "fallback": "the tiny-size fallback", "default": "the default"}[chosen["source"]]
    elif b.table == "estimated on the fly":
        where = "an estimate made on the fly (no table row)"
    else:
        where = f"the {chosen['source']} table {b.table}"
    text = f"micro-batch {b.micro} x {accumulation} accumulation = effective {effective} ({cfg.workload} {cfg.precision}); micro-batch from {where}"
    return text + (f"; {chosen['note']}" if chosen.get("note") else "")


# --- training --------------------------------------------------------------------------------


def train_now(cfg, run_dir, as_json: bool, watchdog=None, emulate_bytes: int | None = None) -> int:
    """Train in this process (--no-supervisor), with the watchdog and a progress bar."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from trainer.loop import train

    summary: dict[str, Any] = {"run_dir": str(run_dir.root), "steps": 0, "val": []}
    console = Console(stderr=True)
    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("", total=None)

        def on_event(event: dict) -> None:
            kind = event["kind"]
            if kind == "start":
                bar.update(task, total=event["total_steps"], completed=event["step"])
                summary.update(start={k: event[k] for k in ("micro_batch", "accumulation", "effective_batch", "batch_source", "batch_table")})
            elif kind == "step":
                loss = event["losses"].get("total", float("nan"))
                bar.update(task, completed=event["step"], description=f"epoch {event['epoch']} loss {loss:.4g}")
                summary["steps"] = event["step"]
            elif kind == "val":
                summary["val"].append({"step": event["step"], "epoch": event["epoch"], event["metric"]: event["value"]})
                if not as_json:
                    bar.console.print(f"step {event['step']} epoch {event['epoch']}: {event['metric']} {event['value']:.5f}")
            elif kind in ("restart", "resume", "oom", "skip_step", "scale_lr", "set_micro_batch", "rollback", "stop") and not as_json:
                detail = event.get("reason") or {k: v for k, v in event.items() if k not in ("time", "kind", "step")}
                bar.console.print(f"step {event['step']}: {kind}: {detail}")

        from advisor.child import EndWatcher, build_guard, build_policies
        from advisor.watchdog import is_oom_error

        policies = build_policies(cfg, watchdog, emulate_bytes)
        ending = EndWatcher(on_event)  # the end event in memory: events.jsonl may be damaged
        reason = train(cfg, run_dir, policies=policies, memory_guard=build_guard(emulate_bytes), on_event=ending, is_oom=is_oom_error)
    summary.update(reason=reason, detail=ending.end.get("detail"))
    return finish(run_dir, summary, as_json, ending.does_not_fit)


EXIT_DOES_NOT_FIT = exits.DOES_NOT_FIT  # the watchdog stopped: even micro-batch 1 runs out of memory


def finish(run_dir, summary: dict, as_json: bool, does_not_fit: bool) -> int:
    """The closing report, from the manifest (what is on disk, whoever trained).

    Exit 0, or EXIT_DOES_NOT_FIT when the OOM policy stopped the run (micro-batch 1
    did not fit): that run did not train, and scripts must be able to tell. The
    caller decides `does_not_fit` from the trainer itself (its exit status, or the
    end event it handed over in memory), never from events.jsonl."""
    manifest = _read_run_manifest(run_dir)
    best = manifest.get("best")
    summary.update(latest=manifest.get("latest"), best=best, export=str(run_dir.export))
    if as_json:
        print(json.dumps(summary, indent=2))
    elif does_not_fit:
        print(f"advisor train: error: {summary['detail']}", file=sys.stderr)
    else:
        best_text = f"best {manifest.get('metric_name')} {best['metric']:.5f} at step {best['step']}" if best else "no validation"
        print(f"done ({summary.get('reason')}) after {summary.get('steps', 0)} steps; {best_text}; weights in {run_dir.export}")
    return EXIT_DOES_NOT_FIT if does_not_fit else 0


def _read_run_manifest(run_dir) -> dict:
    """RUN_DIR/manifest.json for the closing report; {} (with a warning) if it cannot be read."""
    if not run_dir.manifest.is_file():
        return {}
    try:
        manifest = json.loads(run_dir.manifest.read_text(encoding="utf-8"))
        if isinstance(manifest, dict) and isinstance(manifest.get("best") or {}, dict):
            return manifest
        problem = "not a manifest object"
    except (OSError, ValueError) as exc:
        problem = str(exc)
    print(f"advisor train: warning: {run_dir.manifest}: unreadable ({problem}); the next resume rebuilds it", file=sys.stderr)
    return {}


def preflight(cfg) -> None:
    """Errors the trainer would only meet while building, found before anything is written:
    the dataset (complete, made by `advisor prepare`) and the LR groups (the model on meta)."""
    from trainer.data.manifest import read_manifest
    from trainer.loop import make_optimizers, workload_options
    from trainer.workloads import get_workload

    manifest = read_manifest(cfg.dataset)
    if cfg.init is not None and manifest.get("phonemes") != "gpt-sovits-v2":
        print(f"advisor train: warning: {cfg.dataset} was not made by `advisor prepare --from-gpt-sovits`: its phonemes and "
              "features are this tool's stand-in, which GPT-SoVITS's --init weights do not understand", file=sys.stderr)
    workload = get_workload(cfg.workload, size=cfg.size, **workload_options(cfg))
    models = workload.build("meta")
    make_optimizers(workload, models, cfg.optim)
    if cfg.init is not None and cfg.workload == "s1":  # keys and shapes, before a child starts
        from trainer.gptsovits.s1_files import check_compatible, read_s1_file

        check_compatible(cfg.init, read_s1_file(cfg.init), models["gpt"])
    if cfg.workload == "s2" and (cfg.init or cfg.init_d):
        workload.load_init(models, cfg.init, cfg.init_d)  # version, kind and shapes checked on meta


# --- unattended: supervisor, detach, dashboard ---------------------------------------------------


def _emulated_bytes(text: str | None) -> int | None:
    if text is None:
        return None
    from probe.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise ValueError(f"--emulate-vram: {exc}") from None


def supervise(cfg, run_dir, lock, args: argparse.Namespace, emulate_bytes: int | None) -> int:
    """Run the trainer as a child of the supervisor; show the dashboard on a terminal."""
    import threading

    from advisor.supervisor import EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT, RestartPolicy, Supervisor
    from trainer.events import read_all

    dashboard = sys.stdout.isatty() and not args.json and not args.no_dashboard
    quiet = args.json or dashboard  # the child's own lines would fight the live screen

    def command(micro_batch: int | None) -> list[str]:
        argv = [sys.executable, "-m", "advisor.child", "--config", str(run_dir.config)]
        argv += ["--micro-batch", str(micro_batch)] if micro_batch else []
        argv += ["--emulate-vram", str(emulate_bytes)] if emulate_bytes else []
        return argv + (["--quiet"] if quiet else [])

    log_file = open(run_dir.root / "trainer.log", "ab") if dashboard else None
    done = threading.Event()
    viewer = threading.Thread(target=_show_dashboard, args=(run_dir.events, done), daemon=True) if dashboard else None
    if viewer:
        viewer.start()
    try:
        supervisor = Supervisor(
            run_dir.root,
            command,
            RestartPolicy(max_restarts=args.max_restarts),
            current_micro_batch=lambda: last_micro_batch(run_dir.events, cfg.batch.micro),
            output=log_file,
        )
        outcome = supervisor.run(lock)
    finally:
        done.set()
        if viewer:
            viewer.join(timeout=10)
        if log_file:
            log_file.close()
    # The exit status is the trainer's; events.jsonl (read tolerantly) only fills in the report.
    events, damage = read_all(run_dir.events)
    end = next((e for e in reversed(events) if e["kind"] == "end"), {})
    start = next((e for e in reversed(events) if e["kind"] == "start"), {})
    if damage:
        print(f"advisor train: warning: {damage}", file=sys.stderr)
    if outcome.returncode == EXIT_BAD_INPUT:
        return outcome.returncode  # the trainer said why, in one line
    if outcome.returncode == EXIT_DOES_NOT_FIT:
        if dashboard:  # the trainer's own line went to trainer.log
            print(f"advisor train: error: {end.get('detail') or 'even micro-batch 1 does not fit'}", file=sys.stderr)
        return outcome.returncode
    if outcome.returncode != 0:
        why = "; ".join(outcome.reasons) or f"exit code {outcome.returncode}"
        print(f"advisor train: the trainer failed ({why}); see {run_dir.events}"
              + (f" and {run_dir.root / 'trainer.log'}" if dashboard else ""), file=sys.stderr)
        return outcome.returncode
    summary = {
        "run_dir": str(run_dir.root),
        "reason": end.get("reason"),
        "detail": end.get("detail"),
        "steps": end.get("step", 0),
        "restarts": outcome.restarts,
        "start": {k: start.get(k) for k in ("micro_batch", "accumulation", "effective_batch", "batch_source", "batch_table")},
        "val": [{"step": e["step"], "epoch": e.get("epoch"), e.get("metric"): e.get("value")} for e in events if e["kind"] == "val"],
    }
    return finish(run_dir, summary, args.json, does_not_fit=False)


def _show_dashboard(events_path, done) -> None:
    import time

    from advisor.dashboard import Dashboard

    dashboard = Dashboard(events_path)
    while not done.is_set():
        dashboard.run(until=done.is_set, plain=False)  # returns at an end event too
        time.sleep(0.5)  # a crash's end event: the supervisor may restart the trainer


def last_micro_batch(events_path, default: int) -> int:
    """The micro-batch the trainer last ran with (start and set_micro_batch events)."""
    from trainer.events import read_events

    events, _ = read_events(events_path)
    for e in reversed(events):
        if e.get("kind") in ("set_micro_batch", "start") and e.get("micro_batch"):
            return int(e["micro_batch"])
    return default


def detach(args: argparse.Namespace, run_dir) -> int:
    """Start the supervisor in a new session (it survives the terminal) and print RUN_DIR."""
    import subprocess
    import time

    from advisor.supervisor import read_lock_info

    argv = [a for a in args._argv if a != "--detach"]
    run_dir.root.mkdir(parents=True, exist_ok=True)
    log_path = run_dir.root / "supervisor.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "advisor", *argv, "--no-dashboard"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"the detached run did not start (exit {proc.returncode}): {tail[0]}")
        info = read_lock_info(run_dir.root)
        if info and info.get("supervisor_pid") == proc.pid:
            break
        time.sleep(0.1)
    else:
        raise UserError(f"the detached supervisor (pid {proc.pid}) did not take {run_dir.root} within 120 s; see {log_path}")
    if args.json:
        print(json.dumps({"run_dir": str(run_dir.root), "supervisor_pid": proc.pid, "log": str(log_path)}))
    else:
        print(run_dir.root)
        print(f"supervisor pid {proc.pid}; log {log_path}; watch: advisor dashboard {run_dir.root}; stop: advisor stop {run_dir.root}",
              file=sys.stderr)
    return 0
