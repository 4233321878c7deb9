"""TrainConfig: one YAML file that says everything about a training run.

    cfg = load_config("run/config.yaml")            # ValueError "file:line: field: ..." on bad input
    cfg = apply_overrides(cfg, {"epochs": 3, "batch.micro": 2})
    text = dump_config(cfg)                          # documented YAML, loads back to the same config

Every field has a default and a one-line meaning (the `help` metadata, written as
a comment by `dump_config`). Loading rejects unknown keys and wrong types with
one line naming the file, line and dotted field; each section validates its
ranges in `__post_init__`. The trainer reads a *resolved* config: `advisor train`
fills `batch.micro` (and `batch.source`/`batch.table`) from the VRAM tables.

A little over 400 lines on purpose: the sections' dataclasses and the YAML reader
that names file:line of every field are one schema; split, each half would need
the other's field list.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.checks import DEFAULT_VERSION, PRECISIONS, SIZES, VERSIONS, WORKLOADS, check_slice_seconds, did_you_mean
from trainer.versions import DEFAULT_LORA_RANK, V3_FAMILY, check_version

RECIPES = ("advisor", "gpt-sovits")  # what the training step computes (docs/ARCHITECTURE.md, "Recipes")
SCHEDULES = ("cosine", "constant")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # what a number written in YAML looks like
BATCH_SOURCES = ("default", "flag", "config", "measured", "estimated", "community", "fallback")


def _field(default: Any, help: str, factory: bool = False) -> Any:
    if factory:
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class BatchConfig:
    micro: int = _field(1, "samples per forward/backward on each process (advisor train: the table's recommended batch)")
    effective: int | None = _field(None, "samples per optimiser step over all processes (null: micro x processes x the recipe's batches per step: 4 for s1 gpt-sovits, else 1)")
    source: str = _field("default", "where micro came from: default, flag, config, measured, estimated, community, fallback")
    table: str | None = _field(None, "the VRAM table file micro was read from (informational)")
    buckets: int = _field(8, "advisor train: length buckets at most, each with its own micro-batch from the tables, batches padded to their own longest clip (0: every batch padded to the slice; recipe gpt-sovits and s2 v3/v4: always 0)")

    def __post_init__(self) -> None:
        _at_least("batch.micro", self.micro, 1)
        _at_least("batch.buckets", self.buckets, 0)
        if self.effective is not None:
            _at_least("batch.effective", self.effective, 1)
        _one_of("batch.source", self.source, BATCH_SOURCES)


@dataclass
class OptimConfig:
    lr: dict[str, float] = _field(dict, "base LR per optimiser (s1: gpt; s2: generator, discriminator); missing = workload default", factory=True)
    lr_scale: dict[str, float] = _field(dict, "LR multiplier per module group 'optimiser/group' (e.g. generator/text_encoder: 0.4); missing = workload default", factory=True)
    grad_clip: float | None = _field(1.0, "max total gradient norm per optimiser (null: no clipping)")

    def __post_init__(self) -> None:
        for name, value in self.lr.items():
            _positive(f"optim.lr.{name}", value)
        for name, value in self.lr_scale.items():
            if "/" not in name:
                raise ValueError(f"optim.lr_scale.{name}: expected a key 'optimiser/group' (e.g. generator/text_encoder)")
            _positive(f"optim.lr_scale.{name}", value)
        if self.grad_clip is not None:
            _positive("optim.grad_clip", self.grad_clip)


@dataclass
class ScheduleConfig:
    kind: str = _field("cosine", "cosine (after warm-up) or constant")
    warmup_steps: int = _field(0, "linear warm-up from lr/warmup_steps to lr over this many optimiser steps")
    t_0: int | None = _field(None, "steps in the first cosine cycle after warm-up (null: one cycle over the rest of the run)")
    t_mult: int = _field(1, "each warm restart's cycle is t_mult times longer than the previous (integer >= 1)")
    eta_min: float = _field(0.0, "cosine floor, as a fraction of each group's peak LR (0..1)")

    def __post_init__(self) -> None:
        _one_of("schedule.kind", self.kind, SCHEDULES)
        _at_least("schedule.warmup_steps", self.warmup_steps, 0)
        if self.t_0 is not None:
            _at_least("schedule.t_0", self.t_0, 1)
        _at_least("schedule.t_mult", self.t_mult, 1)
        if not 0.0 <= self.eta_min <= 1.0:
            raise ValueError(f"schedule.eta_min: {self.eta_min!r} is outside [0, 1] (a fraction of the peak LR)")


@dataclass
class ValidationConfig:
    every_epochs: int = _field(1, "validate every N epochs, and at the end of the run (0: never)")
    max_batches: int | None = _field(None, "at most this many validation batches (null: the whole val split)")
    samples: int = _field(3, "validation clips synthesised whole at each validation, as WAVs in RUN_DIR/samples/step_<N>/ (0: none)")
    sample_s2: str | None = _field(None, "s1 only: an s2 export's generator.pt to decode the GPT's predicted tokens with (advisor train --s2)")
    vocoder: str | None = _field(None, "s2 v3/v4 only: GPT-SoVITS's vocoder that voices the samples: v4 vocoder.pth, v3 the BigVGAN folder (advisor train --vocoder; null: no audio)")

    def __post_init__(self) -> None:
        _at_least("validation.every_epochs", self.every_epochs, 0)
        _at_least("validation.samples", self.samples, 0)
        if self.max_batches is not None:
            _at_least("validation.max_batches", self.max_batches, 1)


@dataclass
class CheckpointConfig:
    every_steps: int = _field(500, "save every N optimiser steps (0: only at epoch ends); always at each epoch end")
    keep_last: int = _field(3, "keep the newest N checkpoints; the best and the latest finite one are never removed")
    export_every_epoch: bool = _field(False, "s1: also write export/GPT_weights_<version>/<run>-e<E>.ckpt at every epoch end (the best is always exported)")

    def __post_init__(self) -> None:
        _at_least("checkpoint.every_steps", self.every_steps, 0)
        _at_least("checkpoint.keep_last", self.keep_last, 1)


@dataclass
class TrainConfig:
    workload: str = _field("s2", "s1 (GPT text-to-semantic) or s2 (SoVITS: v2 family synthesiser + discriminator; v3/v4 LoRA on the CFM/DiT decoder)")
    size: str = _field("full", "model size: full (GPT-SoVITS v2) or tiny (CPU rehearsal and tests)")
    dataset: str | None = _field(None, "prepared dataset folder (`advisor prepare`); relative paths are relative to this file")
    slice_seconds: float | None = _field(None, "slice length in seconds (null: the dataset's own)")
    dpo: bool = _field(False, "s1 only: add the DPO loss on rule-made rejected sequences")
    recipe: str = _field("advisor", "advisor (corrected training step) or gpt-sovits (what GPT-SoVITS's own trainer computes)")
    version: str = _field(DEFAULT_VERSION, f"GPT-SoVITS version: {', '.join(VERSIONS)} (s2 model variant: v3/v4 are the CFM/DiT s2 trained with LoRA; s1 and s2 export folder names)")
    lora_rank: int = _field(DEFAULT_LORA_RANK, "s2 v3/v4 only: rank (and alpha) of the LoRA adapters on the DiT's attention layers (GPT-SoVITS's webui: 16, 32, 64 or 128)")
    grad_ckpt: bool = _field(False, "s2 v3/v4 only: gradient checkpointing of the DiT's blocks (less activation memory, one more forward per block)")
    init: str | None = _field(None, "GPT-SoVITS weights to start from (s1: a .ckpt; s2: the generator s2G*/G_*/SoVITS_weights file); needed only to start; stored absolute")
    init_sha256: str | None = _field(None, "sha256 of `init`, computed once by `advisor train` before the run starts (the start event names it; null: not computed)")
    init_d: str | None = _field(None, "s2 only: discriminator weights (null: the s2D* / D_* file beside `init`, if any)")
    gpt_sovits_root: str | None = _field(None, "GPT-SoVITS's checkout root (holds webui.py): exports are also copied into its GPT_weights_*/SoVITS_weights_* folders")
    precision: str = _field("fp32", "fp32, fp16 (autocast + GradScaler) or bf16 (autocast)")
    device: str = _field("auto", "auto (cuda if present, else cpu), cpu, cuda or cuda:N (under torchrun: the local rank's GPU)")
    seed: int = _field(0, "seed for python and torch; the same seed gives the same run")
    epochs: int = _field(8, "passes over the training split")
    max_steps: int | None = _field(None, "stop after this many optimiser steps (null: run all epochs)")
    log_every_steps: int = _field(1, "write a step event every N optimiser steps")
    batch: BatchConfig = _field(BatchConfig, "batch sizes", factory=True)
    optim: OptimConfig = _field(OptimConfig, "optimisers (AdamW per workload optimiser)", factory=True)
    schedule: ScheduleConfig = _field(ScheduleConfig, "learning-rate schedule (per optimiser step)", factory=True)
    validation: ValidationConfig = _field(ValidationConfig, "validation on the dataset's val split", factory=True)
    checkpoint: CheckpointConfig = _field(CheckpointConfig, "checkpoints in RUN_DIR/checkpoints", factory=True)

    def __post_init__(self) -> None:
        _one_of("workload", self.workload, WORKLOADS)
        _one_of("size", self.size, SIZES)
        _one_of("precision", self.precision, PRECISIONS)
        if self.slice_seconds is not None:
            try:
                check_slice_seconds(self.slice_seconds)
            except ValueError as exc:
                raise ValueError(f"slice_seconds: {exc}") from None
        _one_of("recipe", self.recipe, RECIPES)
        try:
            check_version(self.version, self.workload)
        except ValueError as exc:
            raise ValueError(f"version: {exc}") from None
        self._check_v3_options()
        if self.init_d is not None and self.workload != "s2":
            raise ValueError("init_d: discriminator weights are an s2 input; leave init_d null for s1")
        if self.dpo and self.workload != "s1":
            raise ValueError("dpo: DPO is an s1 mode; set dpo: false for s2")
        if not (self.device in ("auto", "cpu", "cuda") or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"device: {self.device!r} is not one of auto, cpu, cuda, cuda:N")
        _at_least("epochs", self.epochs, 1)
        if self.max_steps is not None:
            _at_least("max_steps", self.max_steps, 1)
        _at_least("log_every_steps", self.log_every_steps, 1)

    def _check_v3_options(self) -> None:
        """lora_rank, grad_ckpt and validation.vocoder belong to s2 v3/v4 (S2V3Workload): elsewhere they must keep their defaults."""
        _at_least("lora_rank", self.lora_rank, 1)
        if self.workload == "s2" and self.version in V3_FAMILY:
            return
        run = f"{self.workload} {self.version}" if self.workload == "s2" else self.workload
        if self.lora_rank != DEFAULT_LORA_RANK:
            raise ValueError(f"lora_rank: {self.lora_rank}: only s2 v3/v4 trains LoRA adapters (this run is {run}); leave it {DEFAULT_LORA_RANK}")
        if self.grad_ckpt:
            raise ValueError(f"grad_ckpt: gradient checkpointing is an s2 v3/v4 option (this run is {run}); set it false")
        if self.validation.vocoder is not None:
            raise ValueError(f"validation.vocoder: a vocoder voices s2 v3/v4's mel samples (this run is {run}, whose samples need none); leave it null")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- checks ------------------------------------------------------------------------------


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{name}: {value!r} is below the minimum {low}")


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: {value!r} must be a finite number > 0")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(allowed)}")


# --- from plain data (YAML) to typed config ------------------------------------------------


def from_dict(data: Any, lines: dict[str, int] | None = None, source: str = "config") -> TrainConfig:
    """Typed config from nested dicts; ValueError "source:line: field: problem"."""
    lines = lines or {}
    try:
        return _build(TrainConfig, data, "", lines, source)
    except _FieldError as exc:
        raise ValueError(str(exc)) from None


class _FieldError(ValueError):
    """A problem already prefixed with its file, line and field (raised on as a plain ValueError)."""


def _where(source: str, lines: dict[str, int], path: str) -> str:
    probe = path
    while probe and probe not in lines:  # a dict value's key may have no line of its own
        probe = probe.rpartition(".")[0]
    line = lines.get(probe)
    return f"{source}:{line}" if line else source


def _build(cls: type, data: Any, prefix: str, lines: dict[str, int], source: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _FieldError(f"{_where(source, lines, prefix.rstrip('.'))}: {prefix.rstrip('.') or 'the file'}: expected a mapping of keys, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise _FieldError(f"{_where(source, lines, path)}: unknown key {path!r} (expected one of: {', '.join(names)})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{path}.", lines, source)
        else:
            kwargs[key] = _coerce(value, hint, path, _where(source, lines, path))
    try:
        return cls(**kwargs)
    except ValueError as exc:  # range checks name their dotted field first: "batch.micro: ..."
        raise _FieldError(f"{_where(source, lines, str(exc).split(':', 1)[0])}: {exc}") from None


def _coerce(value: Any, hint: Any, path: str, where: str) -> Any:
    """Check `value` against a field's type; numbers written as '1e-4' (YAML strings) become floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, path, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise _FieldError(f"{where}: {path}: expected a mapping, got {_describe(value)}")
        return {str(k): _coerce(v, args[1], f"{path}.{k}", where) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _FieldError(f"{where}: {path}: expected true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _FieldError(f"{where}: {path}: expected an integer, got {_describe(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        raise _FieldError(f"{where}: {path}: expected a number, got {_describe(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise _FieldError(f"{where}: {path}: expected a string, got {_describe(value)}")
    raise AssertionError(f"unsupported config type {hint!r} for {path}")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return f"{value!r} ({type(value).__name__})"


# --- YAML --------------------------------------------------------------------------------


def load_config(path: str | os.PathLike) -> TrainConfig:
    data, lines = load_yaml(path)
    return from_dict(data, lines, str(path))


def parse_config(text: str, source: str = "config") -> TrainConfig:
    data, lines = parse_yaml(text, source)
    return from_dict(data, lines, source)


HEADER = "# sovits-advisor training config"
END_LINE = "# end of config"  # dump_config's last line: a file with the header but not this was cut short


def read_text_file(path: str | os.PathLike, what: str = "the config") -> str:
    """A UTF-8 text file's contents; ValueError naming the file, and the line of a bad byte."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): damaged, or not {what}") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ValueError(f"{path}:{line}: NUL bytes (a damaged file: truncated by a crash or zero-filled)")
    return text


def written_by_us(text: str, header: str) -> bool:
    """True if `text` starts with `header`, or with the start of it (cut inside the header)."""
    head = text[: len(header)]
    return bool(head) and header.startswith(head)


def load_yaml(path: str | os.PathLike) -> tuple[Any, dict[str, int]]:
    """(plain data, dotted key -> line) of a YAML file; ValueError naming the file (and line).

    A file dump_config wrote (its header line) must still have its end line."""
    text = read_text_file(path)
    if not text.strip():
        raise ValueError(f"{path}: empty (expected config fields; a run's config.yaml that is empty was cut short)")
    if written_by_us(text, HEADER) and END_LINE not in text:
        raise ValueError(f"{path}: cut short (written by sovits-advisor, but its last line {END_LINE!r} is missing)")
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str = "config") -> tuple[Any, dict[str, int]]:
    try:
        return yaml.safe_load(text), _key_lines(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}: not valid YAML ({problem})") from None


def _key_lines(node: Any, prefix: str = "") -> dict[str, int]:
    """Dotted key -> 1-based line of the key, from a composed YAML node tree."""
    out: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}{key_node.value}"
            out[path] = key_node.start_mark.line + 1
            out.update(_key_lines(value_node, f"{path}."))
    return out


def dump_config(cfg: TrainConfig) -> str:
    """Documented YAML: every field on its own line with its meaning as a comment."""
    header = (
        f"{HEADER} (advisor train; run by python -m advisor.child RUN_DIR).\n"
        "# Every field has a default; unknown keys and wrong types are errors.\n"
    )
    return header + "".join(_dump_section(cfg, 0)) + END_LINE + " (a file without this line was cut short)\n"


def _dump_section(obj: Any, depth: int) -> list[str]:
    out = []
    pad = "  " * depth
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.append(f"{pad}{f.name}:  # {f.metadata['help']}\n")
            out.extend(_dump_section(value, depth + 1))
        else:
            out.append(f"{pad}{f.name}: {_flow(value)}  # {f.metadata['help']}\n")
    return out


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


# --- overrides ----------------------------------------------------------------------------


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any], source: str = "command line") -> TrainConfig:
    """A new config with dotted fields replaced (`{"batch.micro": 2}`), validated like a file."""
    data = cfg.to_dict()
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"{source}: unknown key {dotted!r}{did_you_mean(dotted, data)}")
            node = node[part]
        if leaf not in node and not (parents and parents[-1] in ("lr", "lr_scale")):
            raise ValueError(f"{source}: unknown key {dotted!r}{did_you_mean(dotted, data)}")
        node[leaf] = value
    return from_dict(data, source=source)


def parse_assignment(text: str) -> tuple[str, Any]:
    """'schedule.warmup_steps=100' -> ('schedule.warmup_steps', 100): the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {text!r}: expected KEY=VALUE (e.g. schedule.warmup_steps=100)")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ValueError(f"--set {text!r}: the value is not valid YAML") from None
