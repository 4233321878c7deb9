"""`advisor train`: start or resume a training run, with the batch taken from the VRAM tables.

A little over 400 lines on purpose: most of it is the command's --help text and its
flags; what it runs lives in advisor/launch.py, preflight.py, bucketing.py, child.py
and supervisor.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from advisor.errors import UserError
from trainer import exits, versions
from trainer.checks import TABLE_NAMES

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
     GPT-SoVITS v3/v4: the same GPT, with --version v3|v4 (-> GPT_weights_v3/
     or GPT_weights_v4/).
GPT-SoVITS s2 (SoVITS): the same with --workload s2 --version v2|v2Pro|v2ProPlus,
  --init its s2G*.pth (the s2D*.pth beside it is found) -> export/SoVITS_weights_<version>/.
GPT-SoVITS s2 v3/v4 (LoRA on the CFM/DiT decoder, flow matching; the dataset
  made with `advisor prepare --from-gpt-sovits EXP ds --version v4`, which
  stores each clip's mel):
  advisor train --workload s2 --version v4 --data ds --out runs/myvoice \\
      --init GPT-SoVITS/GPT_SoVITS/pretrained_models/gsv-v4-pretrained/s2Gv4.pth \\
      --lora-rank 32 --gpt-sovits-root GPT-SoVITS
  -> runs/myvoice/export/SoVITS_weights_v4/myvoice_e<E>_s<S>_l<rank>.pth (the
     LoRA adapters and the trained bridge, fp16, as GPT-SoVITS's LoRA trainer
     writes it; its inference loads it over s2Gv4.pth). Validation:
     val_cfm_loss (the flow-matching loss at fixed noise). Audio samples need
     GPT-SoVITS's vocoder (the model predicts a mel): --vocoder
     GPT-SoVITS/GPT_SoVITS/pretrained_models/gsv-v4-pretrained/vocoder.pth
     (v3: the folder models--nvidia--bigvgan_v2_24khz_100band_256x) writes
     them at 48 kHz (v3: 24 kHz). --grad-ckpt trades compute for activation
     memory. --init also takes an earlier LoRA export.

RUN_DIR:

  config.yaml     the resolved config (what --print-config shows)
  manifest.json   complete checkpoints (sha256, step, epoch, metric), latest, best
  events.jsonl    start, step, val, checkpoint, end, and watchdog decisions
  checkpoints/    full training state: models, optimisers, LR scale, GradScaler,
                  RNG states, data position, micro-batch, policy states
  export/         the best weights by the validation metric: <model>.pt plain
                  state dicts (torch.load(..., weights_only=True) reads them), and
                  GPT-SoVITS's own file: GPT_weights_<version>/<run>-e<E>.ckpt (s1),
                  SoVITS_weights_<version>/<run>_e<E>_s<S>.pth (s2; v2Pro/v2ProPlus
                  files start with GPT-SoVITS's 2-byte version header, so only its
                  loader or trainer.gptsovits.s2_files reads them; v3/v4:
                  <run>_e<E>_s<S>_l<rank>.pth, the LoRA export, header 03/04)

The batch: the micro-batch (samples per forward/backward) is the recommended
batch of the best table for this GPU, workload, slice length, DPO mode and
precision, as `advisor plan` answers (measured > estimated > community, or
estimated on the fly). Without a GPU the host's available RAM is the budget.
The tables describe full-size models: --size tiny (a CPU rehearsal) uses a
micro-batch of 4. The effective batch (samples per optimiser step, over all
processes) is --effective-batch, else the config's, else the micro-batch
times the number of processes times the recipe's batches per step (4 for
s1 --recipe gpt-sovits, as GPT-SoVITS steps every 4 batches; else 1);
accumulation = effective / (micro x processes). --micro-batch N overrides the
table. What was chosen, and from which table, is printed and written to the
start event.

Length buckets (recipe advisor, s1 and s2 v2/v2Pro/v2ProPlus): the training
clips are grouped by length (at most --max-buckets, default 8; 0 turns them
off); a step holds clips of one bucket, each micro-batch padded to its own
longest clip, and each bucket gets the micro-batch the tables give for its
longest clip (or the given --micro-batch in every bucket), with the same
effective batch in all. An out-of-memory error halves only its bucket's
micro-batch. The plan is printed, kept in RUN_DIR/launch.json and named in
the events (`advisor plan --data DS` shows it before a run).

Config: --config FILE (YAML; `advisor train --print-config ...` prints a
documented one with every field), then the flags below, then --set KEY=VALUE
for any field (e.g. --set schedule.warmup_steps=200 --set optim.lr.gpt=2e-4).
Unknown keys and wrong types are one-line errors naming file, line and field.

Preflight, then write: everything that can be checked from the inputs (the
run's identity on --resume, a live run, the dataset and the version it can
feed, what the --init files are, --gpt-sovits-root, free disk for the
checkpoints) is checked before RUN_DIR is created or changed; a refusal is one
line naming the problem and the flag that fixes it, and changes nothing.

A RUN_DIR that already holds a run is refused unless --resume, which
continues from its newest checkpoint that verifies (its own config.yaml, with
your flags applied), from any folder; the --init file is needed only to start.
A resume keeps the run's identity: workload, size, version, recipe, dataset
and init file; a flag that changes one is refused (e.g. "pass --size tiny").
--resume --epochs 20 (or --max-steps) re-plans the run's length: the LR
continues from its current value and the cosine decays over the new length;
it never jumps (printed as "re-plan: ...").

Several GPUs (one process each; NCCL, or gloo on CPU): write the run
specification, then launch its trainer with torchrun; every rank gets the
watchdog, the stop request and the emulated budget:
  advisor train --workload s2 --data ds --out runs/s2 --write-config
  torchrun --nproc-per-node 4 -m advisor.child runs/s2

Unattended: the trainer runs as a child of a supervisor that restarts it after
a crash (from the latest good checkpoint, with half the micro-batch after an
out-of-memory kill; --max-restarts, --restart-wait: 5 s doubling). The watchdog
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
  advisor train --workload s2 --version v4 --data ds --out runs/v4 --init s2Gv4.pth --lora-rank 16 --grad-ckpt
  advisor train --out runs/s2 --resume --epochs 12
"""

MAX_RESTART_WAIT_S = 300.0  # the supervisor's back-off never grows past this
TAKEOVER_WAIT_S = 120.0  # --resume on a run whose supervisor died: wait for its trainer to checkpoint and exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", choices=TABLE_NAMES, metavar="{s1,s2}", help="s1 (GPT) or s2 (SoVITS); or workload: in --config (the table names s2-v2, s2-v2ProPlus are accepted: = s2 --version ...)")
    parser.add_argument("--data", type=Path, metavar="DATASET", help="prepared dataset folder (`advisor prepare`)")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run directory (new, or an existing one with --resume)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="training config YAML (fields not given keep their defaults)")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its newest good checkpoint")
    parser.add_argument("--size", choices=("full", "tiny"), help="model size (default full; tiny: CPU rehearsal)")
    parser.add_argument("--epochs", type=int, metavar="N", help="passes over the training split (default 8)")
    parser.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimiser steps")
    parser.add_argument("--micro-batch", type=int, metavar="N", help="samples per forward/backward (default: the table's recommended batch)")
    parser.add_argument("--max-buckets", type=int, metavar="K", help="length buckets at most (default 8): each its own micro-batch from the tables, every batch padded to its own longest clip; 0: every batch padded to the slice")
    parser.add_argument("--effective-batch", type=int, metavar="N", help="samples per optimiser step over all processes (default: micro-batch x processes; x4 for s1 --recipe gpt-sovits)")
    parser.add_argument("--slice-seconds", type=float, metavar="S", help="slice length (default: the dataset's)")
    parser.add_argument("--dpo", action="store_true", default=None, help="s1: add the DPO loss")
    parser.add_argument("--init", type=Path, metavar="PATH", help="GPT-SoVITS weights to start from: s1 pretrained .ckpt or GPT_weights*/<name>-e<E>.ckpt; s2 generator s2G*.pth, G_*.pth or SoVITS_weights*/*.pth")
    parser.add_argument("--init-d", metavar="PATH", help="s2: GPT-SoVITS discriminator to start from (s2D*.pth / D_*.pth; default: the one beside --init)")
    parser.add_argument("--version", choices=versions.ALL, help=f"GPT-SoVITS model version (default: the --init G file's version, else v2Pro; s1: any, s2: {', '.join(versions.S2_VERSIONS)}; s2 v2Pro+ need sv_emb per clip, v3/v4 a dataset prepared with --version v3|v4; names the GPT_weights_*/SoVITS_weights_* folders)")
    parser.add_argument("--lora-rank", type=int, metavar="N", help="s2 v3/v4: LoRA rank (and alpha) on the DiT's attention (default 32, as GPT-SoVITS's webui; it offers 16, 32, 64, 128)")
    parser.add_argument("--grad-ckpt", action="store_true", default=None, help="s2 v3/v4: gradient checkpointing of the DiT's blocks (less memory, ~1 more forward)")
    parser.add_argument("--recipe", choices=("advisor", "gpt-sovits"), help="advisor (default: corrected step) or gpt-sovits (GPT-SoVITS's own step, exactly)")
    parser.add_argument("--gpt-sovits-root", type=Path, metavar="DIR", help="GPT-SoVITS's checkout root (the folder holding webui.py and GPT_SoVITS/): exports are also copied into DIR/GPT_weights_<version>/ or DIR/SoVITS_weights_<version>/")
    parser.add_argument("--export-every-epoch", action="store_true", default=None, help="s1: also export a GPT_weights file at every epoch end")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), help="default: bf16 on Ampere+, fp16 on older GPUs (s1 --recipe gpt-sovits: fp16 on every GPU, as upstream), fp32 on CPU")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--seed", type=int, help="seed (default 0)")
    parser.add_argument("--s2", type=Path, metavar="PATH", help="s1: an s2 export's generator.pt (our format) to voice the validation samples with")
    parser.add_argument("--vocoder", type=Path, metavar="PATH", help="s2 v3/v4: GPT-SoVITS's vocoder to voice the validation samples with: v4 gsv-v4-pretrained/vocoder.pth, "
                        "v3 the folder models--nvidia--bigvgan_v2_24khz_100band_256x (config.json + bigvgan_generator.pt); without it v3/v4 write no audio. A --resume keeps the run's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config field, dotted (repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit; writes nothing")
    parser.add_argument("--write-config", action="store_true", help="write RUN_DIR/config.yaml and exit (then launch torchrun)")
    parser.add_argument("--json", action="store_true", help="no progress display; print a JSON summary at the end")
    unattended = parser.add_argument_group("unattended runs (supervisor, watchdog, dashboard)")
    unattended.add_argument("--detach", action="store_true", help="run the supervisor in the background (survives closing the terminal); prints RUN_DIR")
    unattended.add_argument("--emulate-vram", metavar="SIZE", help="CPU rehearsal: an emulated GPU memory budget (8GiB, 6GB, 4096MiB); allocations past it raise a real OOM. Saved with the run (a --resume keeps it; 0 turns it off). It counts raw live tensor bytes; the plan also counts allocator rounding, 582 MiB context and a 10%% margin")
    unattended.add_argument("--max-restarts", type=int, default=3, metavar="N", help="supervisor: restarts after a crash before giving up (default 3)")
    unattended.add_argument("--restart-wait", type=float, default=5.0, metavar="SECONDS",
                            help="supervisor: wait before the first restart, doubling for each next one, at most 300 s (default 5)")
    unattended.add_argument("--no-supervisor", action="store_true", help="train in this process (no crash restarts)")
    unattended.add_argument("--no-dashboard", action="store_true", help="plain log lines even on a terminal")


def run(args: argparse.Namespace) -> int:
    from advisor.launch import describe_batch, resolve
    from advisor.preflight import check_all, check_model
    from advisor.watchdog.settings import watchdog_yaml
    from trainer.config import dump_config
    from trainer.rundir import RunDir

    if args.max_restarts < 0:
        raise UserError(f"--max-restarts {args.max_restarts}: expected an integer >= 0")
    if not 0 <= args.restart_wait <= MAX_RESTART_WAIT_S:
        raise UserError(f"--restart-wait {args.restart_wait:g}: expected seconds in [0, {MAX_RESTART_WAIT_S:g}]")
    if args.workload is not None:  # one naming: s1 | s2 with --version (an "s2-v2" is taken, with a note)
        from trainer.checks import resolve_workload

        args.workload, args.version, note = resolve_workload(args.workload, args.version)
        if note:
            print(f"advisor train: note: {note}", file=sys.stderr)
    run_dir = RunDir(args.out)
    quiet_stdout = args.print_config or args.json or args.detach  # stdout carries YAML, JSON or RUN_DIR only

    def report(text: str) -> None:
        print(text, file=sys.stderr if quiet_stdout else sys.stdout)

    spec = resolve(args, run_dir, report)  # identity checked on --resume; nothing written yet
    report(f"batch: {describe_batch(spec.config, spec.launch.batch)}")
    if spec.launch.buckets is not None:
        from advisor.bucketing import describe

        report(describe(spec.bucket_plan()))
    from advisor.runinfo import launch_notes

    for note in launch_notes(spec):
        report(f"note: {note}")
    if args.print_config:
        check_model(spec.config)  # rejects what train rejects, but reads no --init file
        print(dump_config(spec.config), end="")
        print(watchdog_yaml(spec.watchdog), end="")
        return 0
    spec.config, init = check_all(spec.config, run_dir, args.resume, spec.launch.identity)  # every other check: still nothing written
    if init:
        report(f"init: {init}")
    if args.detach:
        return detach(args, run_dir)
    from advisor.supervisor import RunLock, RunLocked

    lock = RunLock(run_dir.root)
    try:
        lock.acquire(wait_s=TAKEOVER_WAIT_S if args.resume else 0.0)  # --resume takes over a dead run
    except RunLocked as exc:
        raise UserError(str(exc)) from None
    try:
        spec.save(run_dir)
        if args.write_config:
            report(f"wrote the run specification to {run_dir.root}; several GPUs: "
                   f"torchrun --nproc-per-node N -m advisor.child {run_dir.root}")
            return 0
        if args.no_supervisor:
            return train_now(run_dir, args.json)
        return supervise(spec, run_dir, lock, args)
    finally:
        lock.release()


# --- training --------------------------------------------------------------------------------


def train_now(run_dir, as_json: bool) -> int:
    """--no-supervisor: the child's entry (advisor.child.run_trainer) in this process, with a
    progress bar; Ctrl-C/SIGTERM checkpoint and stop exactly as under the supervisor."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from advisor.child import run_trainer
    from trainer.events import INCIDENTS

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
            elif kind == "end":
                summary.update(reason=event.get("reason"), detail=event.get("detail"))
            elif kind in INCIDENTS and not as_json:
                detail = event.get("reason") or {k: v for k, v in event.items() if k not in ("time", "kind", "step")}
                bar.console.print(f"step {event['step']}: {kind}: {detail}")

        rc = run_trainer(run_dir.root, on_event)
    if rc not in (exits.OK, exits.DOES_NOT_FIT):
        return rc  # the trainer said why, in one line
    return finish(run_dir, summary, as_json, rc)


def finish(run_dir, summary: dict, as_json: bool, rc: int) -> int:
    """The closing report, from the manifest (what is on disk, whoever trained); `rc`, the
    trainer's exit code, is the exit status: 0, or 3 when even micro-batch 1 did not fit
    (that run did not train, and scripts must be able to tell)."""
    manifest = _read_run_manifest(run_dir)
    best = manifest.get("best")
    from advisor.runinfo import copies_made

    copies = copies_made(run_dir)
    summary.update(latest=manifest.get("latest"), best=best, export=str(run_dir.export), copied_to=copies, exit_code=rc)
    if _stopped_by_signal(summary):
        summary["resume"] = f"advisor train --out {run_dir.root} --resume"
    if as_json:
        print(json.dumps(summary, indent=2))
    elif rc == exits.OK:
        best_text = f"best {manifest.get('metric_name')} {best['metric']:.5f} at step {best['step']}" if best else "no validation"
        why = f"{summary.get('reason')}: {summary['detail']}" if summary.get("reason") == "stopped" and summary.get("detail") else summary.get("reason")
        print(f"done ({why}) after {summary.get('steps', 0)} steps; {best_text}; weights in {run_dir.export}"
              + (f", copied to {', '.join(copies)}" if copies else ""))
        if _stopped_by_signal(summary):
            print(f"continue it with: advisor train --out {run_dir.root} --resume")
    return rc


def _stopped_by_signal(summary: dict) -> bool:
    """Stopped by Ctrl-C, `advisor stop` or kill (not by the watchdog): worth a resume hint."""
    return summary.get("reason") == "stopped" and "received" in str(summary.get("detail") or "")


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


# --- unattended: supervisor, detach, dashboard ---------------------------------------------------


def supervise(spec, run_dir, lock, args: argparse.Namespace) -> int:
    """Run the spec's trainer as a child of the supervisor; show the dashboard on a terminal.
    The exit status is the trainer's (the supervisor's, after restarts); the event log is
    read only for the closing report."""
    import threading

    from advisor.supervisor import RestartPolicy, Supervisor
    from trainer.events import read_all

    dashboard = sys.stdout.isatty() and not args.json and not args.no_dashboard
    quiet = args.json or dashboard  # the child's own lines would fight the live screen

    def command() -> list[str]:
        return [sys.executable, "-m", "advisor.child", str(run_dir.root), *(["--quiet"] if quiet else [])]

    def on_oom_death() -> str | None:
        """Halve the micro-batch the run last used, as the next child's cap (it reads launch.json)."""
        cap = spec.after_oom_death(run_dir)
        if cap is None:
            return None
        spec.save_launch(run_dir)
        return f"micro-batch cap {cap} (out-of-memory restart {spec.launch.oom_restarts})"

    log_file = open(run_dir.root / "trainer.log", "ab") if dashboard else None
    done = threading.Event()
    viewer = threading.Thread(target=_show_dashboard, args=(run_dir.events, done), daemon=True) if dashboard else None
    if viewer:
        viewer.start()
    try:
        supervisor = Supervisor(run_dir.root, command, RestartPolicy(max_restarts=args.max_restarts, backoff_s=args.restart_wait, max_backoff_s=MAX_RESTART_WAIT_S), on_oom_death=on_oom_death, output=log_file)
        outcome = supervisor.run(lock)
    finally:
        done.set()
        if viewer:
            viewer.join(timeout=10)
        if log_file:
            log_file.close()
    rc = outcome.returncode
    events, damage = read_all(run_dir.events)  # the report only (read tolerantly): never the exit status
    end = next((e for e in reversed(events) if e["kind"] == "end"), {})
    if damage:
        print(f"advisor train: warning: {damage}", file=sys.stderr)
    if rc == exits.BAD_INPUT:
        return rc  # the trainer said why, in one line
    if rc not in (exits.OK, exits.DOES_NOT_FIT):
        why = "; ".join(outcome.reasons) or f"exit code {rc}"
        print(f"advisor train: the trainer failed ({why}); see {run_dir.events}"
              + (f" and {run_dir.root / 'trainer.log'}" if dashboard else ""), file=sys.stderr)
        return rc
    if rc == exits.DOES_NOT_FIT and quiet:  # the child's own one-line error went to the log
        print(f"advisor train: error: {end.get('detail') or 'even micro-batch 1 does not fit'}", file=sys.stderr)
    start = next((e for e in reversed(events) if e["kind"] == "start"), {})
    summary = {
        "run_dir": str(run_dir.root),
        "reason": end.get("reason"),
        "detail": end.get("detail"),
        "steps": end.get("step", 0),
        "restarts": outcome.restarts,
        "start": {k: start.get(k) for k in ("micro_batch", "accumulation", "effective_batch", "batch_source", "batch_table")},
        "val": [{"step": e["step"], "epoch": e.get("epoch"), e.get("metric"): e.get("value")} for e in events if e["kind"] == "val"],
    }
    return finish(run_dir, summary, args.json, rc)


def _show_dashboard(events_path, done) -> None:
    import time

    from advisor.dashboard import Dashboard

    dashboard = Dashboard(events_path)
    while not done.is_set():
        dashboard.run(until=done.is_set, plain=False)  # returns at an end event too
        time.sleep(0.5)  # a crash's end event: the supervisor may restart the trainer


def detach(args: argparse.Namespace, run_dir) -> int:
    """Start the supervisor in a new session (it survives the terminal) and print RUN_DIR."""
    import subprocess
    import time

    from advisor.supervisor import read_lock_info

    argv = [a for a in args._argv if a != "--detach"]
    run_dir.root.mkdir(parents=True, exist_ok=True)
    log_path = run_dir.root / "supervisor.log"
    with open(log_path, "ab") as log:
        start = log.tell()  # what the detached process writes comes after this
        proc = subprocess.Popen([sys.executable, "-m", "advisor", *argv, "--no-dashboard"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the detached run did not start (exit {proc.returncode}): {_why(log_path, start)}")
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


def _why(log_path, start: int) -> str:
    """The detached process's own error line: the last 'advisor ...: error' line written after
    `start`, else its last line."""
    with open(log_path, "rb") as f:
        f.seek(start)
        lines = f.read().decode("utf-8", errors="replace").strip().splitlines()
    errors = [line for line in lines if line.startswith("advisor") and "error" in line]
    return (errors or lines or ["no output"])[-1]
