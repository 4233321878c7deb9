"""The run specification: flags + config file + table answer + environment -> one `RunSpec`.

`advisor train` resolves a spec once (`resolve`) and saves it whole in RUN_DIR
(`RunSpec.save`); everything after reads it back with `RunSpec.load`: the child
the supervisor starts, `--no-supervisor`, and every torchrun rank
(`torchrun ... -m advisor.child RUN_DIR`). Nothing reads the event log back to
decide how to run.

    RUN_DIR/config.yaml    the resolved TrainConfig (documented YAML; batch plan, precision,
                           recipe, device, init weights, ...)
    RUN_DIR/watchdog.yaml  the watchdog policies' settings (WatchdogConfig)
    RUN_DIR/launch.json    what is neither: the emulated VRAM budget, the supervisor's
                           out-of-memory restarts, how the micro-batch was chosen

Out-of-memory restarts: after the trainer died of OOM (SIGKILL from the OS, or
exit 75), the supervisor (`RunSpec.after_oom_death`) sets `micro_cap` to half
the micro-batch the run last used (its newest checkpoint's, which the watchdog
may already have halved; else the previous cap or the config's) and starts it
again; the child caps the micro-batch there with the effective batch fixed, so
each OOM death halves what actually ran and the LR is unchanged. The loop takes
the smaller of that cap and the checkpoint's micro-batch.

Emulated budget (`--emulate-vram SIZE`): part of the spec, so a resume without
the flag keeps it (`--emulate-vram 0` turns it off). It counts raw live tensor
bytes (what PyTorch allocates, weights and optimiser state included) against
the whole SIZE. The plan it rehearses counts more per card: allocator rounding
(512 B blocks in 2/20 MiB segments), 582 MiB for the CUDA context and cuBLAS
workspace, and a 10 % margin. So a rehearsal at SIZE is looser than the card:
to rehearse the plan's answer for a card of V bytes, emulate about
0.9 x V - 582 MiB (the dashboard names the budget as "emulated").

Over 400 lines on purpose: this is the one place that turns flags, config,
tables and environment into a spec (issue 13), so the three files it writes
and the batch choice are read and changed together.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import UserError

LAUNCH_FILE = "launch.json"
LAUNCH_FORMAT = "sovits-advisor-launch"
LAUNCH_VERSION = 1
TINY_MICRO_BATCH = 4  # the tables describe full-size models; a tiny rehearsal needs no search


@dataclass
class Launch:
    """The parts of a run's specification that are neither TrainConfig nor WatchdogConfig."""

    emulate_vram_bytes: int | None = None  # CPU rehearsal budget (None: no emulation)
    oom_restarts: int = 0  # out-of-memory deaths of the trainer so far
    batch: dict = field(default_factory=dict)  # how the micro-batch was chosen: source, note, max
    micro_cap: int | None = None  # after an OOM death: half the micro-batch the run last used (None: no cap)
    buckets: dict | None = None  # the length-bucket plan (trainer/data/buckets.py BucketPlan.to_json); None: slice-padded batches
    identity: dict = field(default_factory=dict)  # what a resume must keep (advisor/preflight.py IDENTITY); {} in older runs

    def __post_init__(self) -> None:
        if self.emulate_vram_bytes is not None and (isinstance(self.emulate_vram_bytes, bool) or not isinstance(self.emulate_vram_bytes, int) or self.emulate_vram_bytes < 1):
            raise ValueError(f"emulate_vram_bytes: {self.emulate_vram_bytes!r} is not a positive integer (or null)")
        if isinstance(self.oom_restarts, bool) or not isinstance(self.oom_restarts, int) or self.oom_restarts < 0:
            raise ValueError(f"oom_restarts: {self.oom_restarts!r} is not an integer >= 0")
        if self.micro_cap is not None and (isinstance(self.micro_cap, bool) or not isinstance(self.micro_cap, int) or self.micro_cap < 1):
            raise ValueError(f"micro_cap: {self.micro_cap!r} is not a positive integer (or null)")


@dataclass
class RunSpec:
    config: Any  # trainer.config.TrainConfig
    watchdog: Any  # advisor.watchdog.WatchdogConfig
    launch: Launch = field(default_factory=Launch)

    # --- what the trainer runs with -------------------------------------------------------
    def trainer_config(self, world_size: int = 1):
        """The config with the out-of-memory restarts' cap on the micro-batch applied: the
        effective batch (and so the LR) stays what it was."""
        from trainer.config import apply_overrides
        from trainer.sizing import effective_batch

        cfg = self.config
        cap = self.launch.micro_cap
        if cap is None and self.launch.oom_restarts:  # a launch.json written before micro_cap existed
            cap = max(1, cfg.batch.micro >> self.launch.oom_restarts)
        if cap is None or cap >= cfg.batch.micro:
            return cfg
        if self.launch.buckets is not None:  # the bucket plan keeps its effective batch; the cap reaches every bucket
            return apply_overrides(cfg, {"batch.micro": cap})
        effective = effective_batch(cfg, world_size)  # what the loop would take, before the cap
        return apply_overrides(cfg, {"batch.micro": cap, "batch.effective": effective})

    def bucket_plan(self):
        """The length-bucket plan (trainer.data.buckets.BucketPlan) or None; ValueError naming launch.json."""
        if self.launch.buckets is None:
            return None
        from trainer.data.buckets import BucketPlan

        return BucketPlan.from_json(self.launch.buckets, f"{LAUNCH_FILE} buckets")

    def after_oom_death(self, run_dir) -> int | None:
        """The micro-batch cap for the next child after the trainer died out of memory: half
        the micro-batch the run last used (its newest checkpoint's: the loop may have shrunk
        it already), never above the current cap; None when that was already 1. Records it
        (launch.json is saved by the caller)."""
        used = [m for m in (run_dir.last_micro_batch(), self.launch.micro_cap, self.config.batch.micro) if m is not None]
        last = min(used)
        if last <= 1:
            return None
        self.launch.oom_restarts += 1
        self.launch.micro_cap = last // 2
        return self.launch.micro_cap

    # --- files ------------------------------------------------------------------------------
    def save(self, run_dir) -> None:
        """config.yaml, watchdog.yaml and launch.json, each written atomically."""
        from advisor.watchdog.settings import WATCHDOG_FILE, watchdog_text
        from trainer.atomic import atomic_write_bytes
        from trainer.config import dump_config

        root = Path(run_dir.root)
        root.mkdir(parents=True, exist_ok=True)
        run_dir.write_config(dump_config(self.config))
        atomic_write_bytes(root / WATCHDOG_FILE, watchdog_text(self.watchdog.to_dict()).encode("utf-8"))
        self.save_launch(run_dir)

    def save_launch(self, run_dir) -> None:
        from trainer.atomic import atomic_write_bytes

        data = {"format": LAUNCH_FORMAT, "version": LAUNCH_VERSION, **asdict(self.launch)}
        atomic_write_bytes(Path(run_dir.root) / LAUNCH_FILE, (json.dumps(data, indent=2) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, run_dir) -> "RunSpec":
        """The spec saved in RUN_DIR (a missing watchdog.yaml or launch.json: their defaults,
        as in a folder written by hand for torchrun). ValueError naming the file."""
        from trainer.config import load_config

        root = Path(run_dir.root)
        if not run_dir.config.is_file():
            raise ValueError(f"{root}: no {run_dir.config.name}: not a run folder (start one with `advisor train`)")
        from advisor.watchdog.settings import load_watchdog

        return cls(load_config(run_dir.config), load_watchdog(root), load_launch(root))


def load_launch(root: Path) -> Launch:
    path = root / LAUNCH_FILE
    if not path.is_file():
        return Launch()
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON launch file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != LAUNCH_FORMAT:
        raise ValueError(f"{path}: not a {LAUNCH_FORMAT} file")
    if data.get("version") != LAUNCH_VERSION:
        raise ValueError(f"{path}: launch format version {data.get('version')!r}; this advisor reads version {LAUNCH_VERSION}")
    known = {k: data[k] for k in ("emulate_vram_bytes", "oom_restarts", "micro_cap", "batch", "buckets", "identity") if k in data}
    try:
        return Launch(**known)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


# --- resolving a new or resumed run ----------------------------------------------------------


def resolve(args: argparse.Namespace, run_dir, report=None) -> RunSpec:
    """Defaults < --config FILE (or the saved spec with --resume) < flags < --set, then the
    batch from the tables. The emulated budget: --emulate-vram, else the saved spec's.

    The run's identity (advisor/preflight.py): a new run records it; a resume that would
    change it is refused here, before anything is written. A new s2 run without --version
    takes its init file's version. `report` prints what was decided (one line each)."""
    from advisor import preflight

    report = report or (lambda text: print(text, file=sys.stderr))
    cfg, explicit, watchdog = resolve_config(args, run_dir)
    launch = load_launch(run_dir.root) if args.resume else Launch()
    if args.resume:
        from trainer.config import load_config

        saved = absolute_paths(load_config(run_dir.config), Path(run_dir.root), str(run_dir.config))  # as resolve_config read it
        launch.identity = preflight.check_identity(saved, launch.identity, cfg)
        note = preflight.replan_note(saved, cfg)
        if note:
            report(note)
    else:
        cfg = preflight.default_version(cfg, explicit, report)
        if not args.print_config:
            launch.identity = preflight.run_identity(cfg)
    if args.emulate_vram is not None:
        launch.emulate_vram_bytes = emulated_bytes(args.emulate_vram)
    cfg, chosen = choose_batch(cfg, explicit, args.resume, launch.emulate_vram_bytes)
    cfg = with_slice(cfg)
    if not args.resume or args.micro_batch is not None:
        from advisor.bucketing import bucket_plan

        cfg, launch.buckets = bucket_plan(cfg, chosen, _gpu(cfg.device), launch.emulate_vram_bytes, asked="batch.buckets" in explicit)
        launch.batch = chosen
        launch.oom_restarts, launch.micro_cap = 0, None  # a micro-batch chosen now starts uncapped
    return RunSpec(cfg, watchdog, launch)


def with_slice(cfg):
    """The config with its slice length resolved (the dataset's when none is set), so the run
    spec says it and every reader of config.yaml gets the same one."""
    from trainer.config import apply_overrides
    from trainer.data.manifest import run_slice_seconds

    if cfg.slice_seconds is not None:
        return cfg
    return apply_overrides(cfg, {"slice_seconds": run_slice_seconds(None, cfg.dataset)})


def emulated_bytes(text: str) -> int | None:
    """--emulate-vram SIZE -> bytes; 0 (or off) turns a saved run's emulation off."""
    from probe.sizes import parse_size

    if text.strip().lower() in ("0", "off", "none"):
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ValueError(f"--emulate-vram: {exc}") from None


def resolve_config(args: argparse.Namespace, run_dir) -> tuple[Any, set[str], Any]:
    """Defaults < --config FILE (or RUN_DIR/config.yaml with --resume) < flags < --set.

    Returns the config, the dotted fields the user set (file or command line) and
    the watchdog settings (the file's `watchdog:` section, RUN_DIR/watchdog.yaml
    on --resume, `--set watchdog.<policy>.<field>=...`)."""
    from advisor.watchdog.settings import build_watchdog, read_watchdog_raw
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
        watchdog_from = read_watchdog_raw(Path(run_dir.root))  # advisor/watchdog/settings.py
    cfg = from_dict(raw, lines, str(source) if source else "config")
    if source is not None:
        cfg = absolute_paths(cfg, Path(source).parent, str(source))  # a file's relative paths: relative to the file
    overrides = flag_overrides(args)
    watchdog_sets: dict[str, Any] = {}
    for text in args.set:
        key, value = parse_assignment(text)
        (watchdog_sets if key.startswith("watchdog.") else overrides)[key] = value
    resumed_from, cfg = cfg, apply_overrides(cfg, overrides)
    if args.resume:
        keep_model(resumed_from, cfg)
    cfg = absolute_paths(cfg)
    if cfg.dataset is None:
        raise UserError("no dataset: pass --data DATASET (a folder made by `advisor prepare`) or set dataset: in --config")
    return cfg, _dotted_keys(raw) | set(overrides), build_watchdog(*watchdog_from, watchdog_sets)


PATH_FIELDS = ("dataset", "init", "init_d", "gpt_sovits_root", "validation.sample_s2", "validation.vocoder")


def absolute_paths(cfg, base: Path | None = None, source: str = "command line"):
    """Every path field absolute, relative to `base` (default: this folder; a --set
    init=relative/path), so a resume from another folder reads the same files."""
    from trainer.config import apply_overrides

    changes = {}
    for dotted in PATH_FIELDS:
        value = cfg
        for part in dotted.split("."):
            value = getattr(value, part)
        if value is not None and not Path(value).is_absolute():
            changes[dotted] = str(((base or Path.cwd()) / value).resolve())
    return apply_overrides(cfg, changes, source) if changes else cfg


MODEL_FIELDS = ("lora_rank",)  # what shapes the model beyond the run identity (advisor/preflight.py checks workload, size, version)


def keep_model(saved, cfg) -> None:
    """--resume: the run's checkpoints hold one model; flags may not change its shape."""
    for name in MODEL_FIELDS:
        was, now = getattr(saved, name), getattr(cfg, name)
        if was != now:
            raise UserError(f"--resume: {name} {now} differs from the run's {was}: its checkpoints hold that model; "
                            f"pass --lora-rank {was} (or leave it out), or start a new run (another --out) to change it")


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    mapping = {
        "workload": args.workload,
        "dataset": str(args.data.resolve()) if args.data is not None else None,
        "size": args.size,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch.micro": args.micro_batch,
        "batch.effective": args.effective_batch,
        "batch.buckets": getattr(args, "max_buckets", None),
        "slice_seconds": args.slice_seconds,
        "dpo": args.dpo,
        "init": str(args.init.resolve()) if getattr(args, "init", None) is not None else None,
        "init_d": str(Path(args.init_d).resolve()) if getattr(args, "init_d", None) is not None else None,
        "version": getattr(args, "version", None),
        "recipe": getattr(args, "recipe", None),
        "lora_rank": getattr(args, "lora_rank", None),
        "grad_ckpt": getattr(args, "grad_ckpt", None),
        "gpt_sovits_root": str(args.gpt_sovits_root.resolve()) if getattr(args, "gpt_sovits_root", None) is not None else None,
        "checkpoint.export_every_epoch": getattr(args, "export_every_epoch", None),
        "precision": args.precision,
        "device": args.device,
        "seed": args.seed,
        "validation.sample_s2": str(args.s2.resolve()) if getattr(args, "s2", None) is not None else None,
        "validation.vocoder": str(args.vocoder.resolve()) if getattr(args, "vocoder", None) is not None else None,
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


def choose_batch(cfg, explicit: set[str], resuming: bool, emulate_bytes: int | None = None):
    """Fill precision (this device's best) and the micro-batch (the table's recommended) where
    the user gave none. An effective batch left unset stays null: micro x processes x the
    recipe's batches per step (trainer/sizing.py), so the same config serves one process and torchrun. Returns (config, what was chosen)."""
    from trainer.config import apply_overrides

    chosen: dict[str, Any] = {"note": None}
    updates: dict[str, Any] = {}
    gpu = _gpu(cfg.device)
    if "precision" not in explicit and not resuming:
        from probe.device import precision_for_capability

        updates["precision"] = precision_for_capability(gpu["capability"]) if gpu else "fp32"
        from trainer.recipe import recipe_for, recipe_kind

        recipe = recipe_for(recipe_kind(cfg.workload, cfg.version), cfg.recipe)
        if gpu and recipe.gpu_precision:
            updates["precision"] = recipe.gpu_precision  # GPT-SoVITS trains s1 ("16-mixed") and v3/v4 s2 (fp16_run) in fp16 on every GPU
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


def ask_budget(gpu: dict | None, emulate_bytes: int | None = None) -> tuple[int, str | None, str]:
    """(bytes, device name, how to say it): the emulated budget, the GPU, or the host's available RAM."""
    import psutil

    from probe.sizes import format_size

    if emulate_bytes:
        return emulate_bytes, None, f"emulated budget {format_size(emulate_bytes)}"
    if gpu:
        return gpu["total_bytes"], gpu["name"], f"{gpu['name']} {format_size(gpu['total_bytes'])}"
    vram = int(psutil.virtual_memory().available)
    return vram, None, f"no GPU: the host's available RAM ({format_size(vram)}) as the budget"


def _ask_tables(cfg, gpu: dict | None, emulate_bytes: int | None = None):
    """What `advisor plan` answers for this device (the emulated budget, or the host RAM without a GPU)."""

    from probe.plan import plan, too_small_message, what_fits
    from probe.table import load_tables

    from trainer.data.manifest import run_slice_seconds

    slice_seconds = run_slice_seconds(cfg.slice_seconds, cfg.dataset)
    vram, name, budget = ask_budget(gpu, emulate_bytes)
    tables, problems = load_tables()
    for problem in problems:
        print(f"advisor train: warning: skipped {problem}", file=sys.stderr)
    try:
        from trainer.workloads import table_name

        workload = table_name(cfg.workload, cfg.version)
        from advisor.bucketing import applies

        if cfg.dataset is not None and cfg.slice_seconds is None and applies(cfg) is not None:  # no buckets: the worst batch, and a warning about a few long clips
            from probe.longest import plan_for_dataset

            worst = plan_for_dataset(vram, workload, cfg.dataset, cfg.dpo, cfg.precision, device_name=name, tables=tables, grad_ckpt=cfg.grad_ckpt)
            if worst.warning:
                print(f"advisor train: warning: {worst.warning}", file=sys.stderr)
            result = worst.result
        else:
            result = plan(vram, workload, slice_seconds, cfg.dpo, cfg.precision, name, tables=tables, grad_ckpt=cfg.grad_ckpt)
    except LookupError as exc:
        raise UserError(f"{exc}; or pass --micro-batch N") from None
    if not result.fits:
        raise UserError(too_small_message(result, what_fits(result, tables)))
    return result, budget


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
    from trainer.sizing import accumulation, effective_batch
    from trainer.checks import table_name

    b = cfg.batch
    effective = effective_batch(cfg)  # one process: what --no-supervisor and the supervisor's child run
    accum = accumulation(effective, b.micro)
    if chosen["source"] in ("flag", "config", "fallback", "default"):
        where = {"flag": "--micro-batch", "config": "the config", "fallback": "the tiny-size fallback", "default": "the default"}[chosen["source"]]
    elif b.table == "estimated on the fly":
        where = "an estimate made on the fly (no table row)"
    else:
        where = f"the {chosen['source']} table {b.table}"
    text = f"micro-batch {b.micro} x {accum} accumulation = effective {effective} ({table_name(cfg.workload, cfg.version)} {cfg.precision}); micro-batch from {where}"
    return text + (f"; {chosen['note']}" if chosen.get("note") else "")


