"""Argument checks of the workload contract, without torch: the CLI's plan path and the config use them.

Each returns the checked value or raises a one-line ValueError naming it and what was expected.
`trainer.workload` re-exports them.
"""

from __future__ import annotations

from trainer.audio_constants import MAX_SLICE_SECONDS
from trainer.versions import ALL, DEFAULT, V3_FAMILY

PRECISIONS = ("fp32", "fp16", "bf16")
SIZES = ("full", "tiny")
WORKLOADS = ("s1", "s2")
# GPT-SoVITS model versions: trainer/versions.py is the one list (config, CLI choices, tables, the s2
# registry; which stage trains which); these names are it. s1 is one GPT for all.
VERSIONS = ALL
DEFAULT_VERSION = DEFAULT  # GPT-SoVITS's default


def table_name(workload: str, version: str | None = None) -> str:
    """The name tables and the probe give (workload, s2 version): "s1", "s2" (the default
    version) or "s2-<version>", e.g. "s2-v2"."""
    if workload != "s2" or version in (None, DEFAULT_VERSION):
        return workload
    return f"s2-{check_version(version)}"


TABLE_NAMES = ("s1", "s2", *(f"s2-{v}" for v in VERSIONS if v != DEFAULT_VERSION))
# the workloads with gradient checkpointing as an option (--grad-ckpt; a table's `grad_ckpt`): s2 of v3 / v4
GRAD_CKPT_WORKLOADS = tuple(f"s2-{v}" for v in V3_FAMILY)


def check_grad_ckpt(workload: str, grad_ckpt: bool) -> bool:
    """grad_ckpt for a table name; ValueError for a workload without the option."""
    if grad_ckpt and workload not in GRAD_CKPT_WORKLOADS:
        raise ValueError(f"--grad-ckpt: gradient checkpointing is an option of {', '.join(GRAD_CKPT_WORKLOADS)} only, not {workload}")
    return bool(grad_ckpt)


def split_table_name(name: str) -> tuple[str, str | None]:
    """"s2-v2" -> ("s2", "v2"); "s2" -> ("s2", None); "s1" -> ("s1", None): the older
    table-name form of `--workload` as (workload, version)."""
    if name in WORKLOADS:
        return name, None
    if name.startswith("s2-") and name[3:] in VERSIONS:
        return "s2", name[3:]
    raise ValueError(f"unknown workload {name!r}: expected s1 or s2 (with --version {'|'.join(VERSIONS)})")


def resolve_workload(workload: str, version: str | None = None) -> tuple[str, str | None, str]:
    """`--workload` and `--version` as every command takes them -> (workload, version, note).
    The older table-name form (`--workload s2-v2`) is accepted; `note` then names the flags
    it stands for ("" otherwise). A version that contradicts it is a ValueError."""
    base, named = split_table_name(workload)
    if version is not None:
        check_version(version)
    if named is None:
        return base, version, ""
    if version is not None and version != named:
        raise ValueError(f"--workload {workload} is version {named}, but --version {version}: give one")
    return base, named, f"--workload {workload} is --workload s2 --version {named} (the form every command takes)"


def check_version(version: str) -> str:
    if version not in VERSIONS:
        raise ValueError(f"unknown GPT-SoVITS version {version!r}: expected one of {', '.join(VERSIONS)}")
    return version


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def check_slice_seconds(slice_seconds: float, name: str = "slice seconds", minimum: float | None = None) -> float:
    """The one check of a slice length (the config, the probe, the plan, `advisor prepare`,
    `advisor slice`): a number in (0, 54], or in [minimum, 54] when `minimum` is given
    (prepare and slice cut no pieces shorter than 2 s). `name` is what the error calls it."""
    low = f"[{minimum:g}" if minimum is not None else "(0"
    try:
        value = float(slice_seconds)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {slice_seconds!r} is not a number: expected a value in {low}, {MAX_SLICE_SECONDS:g}]") from None
    if minimum is None and not 0 < value <= MAX_SLICE_SECONDS:
        raise ValueError(f"{name} {slice_seconds!r} is outside (0, {MAX_SLICE_SECONDS:g}]")
    if minimum is not None and not minimum <= value <= MAX_SLICE_SECONDS:
        raise ValueError(f"{name} {value:g} is outside [{minimum:g}, {MAX_SLICE_SECONDS:g}]")
    return value


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size {batch_size!r} is invalid: expected an integer >= 1")
    return batch_size


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}: expected one of {', '.join(SIZES)}")
    return size


def dotted_keys(data: dict, prefix: str = "") -> list[str]:
    """Every field of a (config) dict as a dotted key ("schedule.warmup_steps"), sections too."""
    out = []
    for key, value in data.items():
        out.append(f"{prefix}{key}")
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value) and key not in ("lr", "lr_scale"):
            out += dotted_keys(value, f"{prefix}{key}.")
    return out


def did_you_mean(key: str, data: dict) -> str:
    """" (did you mean 'epochs'?)" for a mistyped key (difflib over every dotted key), else ""."""
    import difflib

    keys = dotted_keys(data)
    leaves = {k.rpartition(".")[2]: k for k in keys}  # "warmup_steps" finds "schedule.warmup_steps"
    close = difflib.get_close_matches(key, keys, n=2, cutoff=0.6) or [
        leaves[m] for m in difflib.get_close_matches(key.rpartition(".")[2], list(leaves), n=2, cutoff=0.6)]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""

