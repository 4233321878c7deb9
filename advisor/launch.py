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
exit 75), the supervisor increments `oom_restarts` and starts it again; the
child then caps the micro-batch at `batch.micro >> oom_restarts` (never below
1) with the effective batch fixed, so each OOM death halves it once more and
the LR is unchanged. The loop takes the smaller of that cap and the
checkpoint's micro-batch (the watchdog may have halved it already).

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

WATCHDOG_FILE = "watchdog.yaml"
LAUNCH_FILE = "launch.json"
LAUNCH_FORMAT = "sovits-advisor-launch"
LAUNCH_VERSION = 1
TINY_MICRO_BATCH = 4  # the tables describe full-size models; a tiny rehearsal needs no search


@dataclass
class Launch:
    """The parts of a run's specification that are neither TrainConfig nor WatchdogConfig."""

    emulate_vram_bytes: int | None = None  # CPU rehearsal budget (None: no emulation)
    oom_restarts: int = 0  # out-of-memory deaths of the trainer so far (each halves the micro-batch cap)
    batch: dict = field(default_factory=dict)  # how the micro-batch was chosen: source, note, max
    identity: dict = field(default_factory=dict)  # what a resume must keep (advisor/preflight.py IDENTITY); {} in older runs

    def __post_init__(self) -> None:
        if self.emulate_vram_bytes is not None and (isinstance(self.emulate_vram_bytes, bool) or not isinstance(self.emulate_vram_bytes, int) or self.emulate_vram_bytes < 1):
            raise ValueError(f"emulate_vram_bytes: {self.emulate_vram_bytes!r} is not a positive integer (or null)")
        if isinstance(self.oom_restarts, bool) or not isinstance(self.oom_restarts, int) or self.oom_restarts < 0:
            raise ValueError(f"oom_restarts: {self.oom_restarts!r} is not an integer >= 0")


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
        if self.launch.oom_restarts == 0:
            return cfg
        micro = max(1, cfg.batch.micro >> self.launch.oom_restarts)
        effective = effective_batch(cfg, world_size)  # what the loop would take, before the cap
        return apply_overrides(cfg, {"batch.micro": micro, "batch.effective": effective})

    # --- files ------------------------------------------------------------------------------
    def save(self, run_dir) -> None:
        """config.yaml, watchdog.yaml and launch.json, each written atomically."""
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
        return cls(load_config(run_dir.config), load_watchdog(root), load_launch(root))


def load_watchdog(root: Path):
    """RUN_DIR/watchdog.yaml (defaults if absent); errors name the file and line."""
    return watchdog_config(*read_watchdog_raw(root))


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
    known = {k: data[k] for k in ("emulate_vram_bytes", "oom_restarts", "batch", "identity") if k in data}
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
    if not args.resume or args.micro_batch is not None:
        launch.batch = chosen
        launch.oom_restarts = 0  # a micro-batch chosen now starts uncapped
    return RunSpec(cfg, watchdog, launch)


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
        watchdog_from = read_watchdog_raw(Path(run_dir.root))
    cfg = from_dict(raw, lines, str(source) if source else "config")
    if source is not None:
        cfg = absolute_paths(cfg, Path(source).parent, str(source))  # a file's relative paths: relative to the file
    overrides = flag_overrides(args)
    watchdog_sets: dict[str, Any] = {}
    for text in args.set:
        key, value = parse_assignment(text)
        (watchdog_sets if key.startswith("watchdog.") else overrides)[key] = value
    cfg = apply_overrides(cfg, overrides)
    cfg = absolute_paths(cfg)
    if cfg.dataset is None:
        raise UserError("no dataset: pass --data DATASET (a folder made by `advisor prepare`) or set dataset: in --config")
    return cfg, _dotted_keys(raw) | set(overrides), build_watchdog(*watchdog_from, watchdog_sets)


# --- watchdog.yaml --------------------------------------------------------------------------

WATCHDOG_HEADER = "# watchdog policies of this run (written by advisor train; null turns a policy off)"
WATCHDOG_END = "# end of watchdog settings"  # a file with the header but without this line was cut short


def watchdog_text(data: dict) -> str:
    """RUN_DIR/watchdog.yaml's contents for `WatchdogConfig.to_dict()` data."""
    import yaml

    return f"{WATCHDOG_HEADER}\n{yaml.safe_dump(data, sort_keys=False)}{WATCHDOG_END}\n"


def read_watchdog_file(path: Path) -> tuple[object, dict[str, int]]:
    """(raw data, "watchdog.<section>.<field>" -> line) of a watchdog.yaml; ValueError naming
    the file (and line) if it is damaged: not UTF-8, NUL bytes, bad YAML, cut short."""
    from trainer.config import parse_yaml, read_text_file, written_by_us

    text = read_text_file(path, "watchdog settings")
    if (not text or written_by_us(text, WATCHDOG_HEADER)) and WATCHDOG_END not in text:
        raise ValueError(f"{path}: cut short (written by advisor train, but its last line {WATCHDOG_END!r} is missing)")
    raw, lines = parse_yaml(text, str(path))
    return raw, {f"watchdog.{key}": line for key, line in lines.items()}


def read_watchdog_raw(root: Path) -> tuple[Any, dict[str, int], str]:
    """RUN_DIR/watchdog.yaml as (raw data, field lines, file name); (None, {}, name) if absent."""
    path = root / WATCHDOG_FILE
    return (*read_watchdog_file(path), str(path)) if path.is_file() else (None, {}, str(path))


def watchdog_config(raw, lines: dict[str, int], source: str):
    """WatchdogConfig.from_dict(raw), its errors prefixed "source:line:" of the field they name."""
    from advisor.watchdog import WatchdogConfig

    try:
        return WatchdogConfig.from_dict(raw)
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]  # "watchdog.oom.mode: expected ..." names its dotted field first
        while field and field not in lines:
            field = field.rpartition(".")[0]
        where = f"{source}:{lines[field]}" if field else source
        raise ValueError(f"{where}: {exc}") from None


def build_watchdog(raw: Any, lines: dict[str, int], source: str, sets: dict[str, Any]):
    """WatchdogConfig from a `watchdog:` mapping (checked first, so its errors name
    source:line of the field) plus `watchdog.a.b=value` assignments."""
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


def watchdog_yaml(watchdog) -> str:
    import yaml

    return "# watchdog policies (advisor/watchdog; null turns a policy off)\n" + yaml.safe_dump(
        {"watchdog": watchdog.to_dict()}, sort_keys=False
    )


PATH_FIELDS = ("dataset", "init", "init_d", "gpt_sovits_root", "validation.sample_s2")


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
        "validation.sample_s2": str(args.s2.resolve()) if getattr(args, "s2", None) is not None else None,
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
    from trainer.sizing import accumulation, effective_batch

    b = cfg.batch
    effective = effective_batch(cfg)  # one process: what --no-supervisor and the supervisor's child run
    accum = accumulation(effective, b.micro)
    if chosen["source"] in ("flag", "config", "fallback", "default"):
        where = {"flag": "--micro-batch", "config": "the config", "fallback": "the tiny-size fallback", "default": "the default"}[chosen["source"]]
    elif b.table == "estimated on the fly":
        where = "an estimate made on the fly (no table row)"
    else:
        where = f"the {chosen['source']} table {b.table}"
    text = f"micro-batch {b.micro} x {accum} accumulation = effective {effective} ({cfg.workload} {cfg.precision}); micro-batch from {where}"
    return text + (f"; {chosen['note']}" if chosen.get("note") else "")


