"""Workload registry: `get_workload("s1"|"s2", size="full"|"tiny")`.

Tables and the probe name s2's versions as workloads of their own: "s2" is the
default version (v2Pro), "s2-v2" and "s2-v2ProPlus" the others
(`table_name(workload, version)`); `get_workload` accepts those names too.
"""

from __future__ import annotations

from trainer.workload import Workload, check_size

WORKLOAD_NAMES = ("s1", "s2")
DEFAULT_S2_VERSION = "v2Pro"
S2_VARIANTS = {"s2": DEFAULT_S2_VERSION, "s2-v2": "v2", "s2-v2ProPlus": "v2ProPlus"}  # table name -> version
TABLE_NAMES = ("s1", *S2_VARIANTS)


def table_name(workload: str, version: str | None = None) -> str:
    """The probe/table workload name of (workload, s2 version)."""
    if workload != "s2" or version in (None, DEFAULT_S2_VERSION):
        return workload
    return f"s2-{version}"


def workload_for_config(cfg) -> Workload:
    """The workload a run trains (`cfg` is a TrainConfig): its size, s2's version, and the
    Recipe built once from `cfg.recipe` (trainer/recipe.py), which the loop reads from it."""
    from trainer.recipe import recipe_for

    options = {"version": cfg.version} if cfg.workload == "s2" else {}
    return get_workload(cfg.workload, size=cfg.size, recipe=recipe_for(cfg.workload, cfg.recipe), **options)


def get_workload(name: str, size: str = "full", **options) -> Workload:
    """Build a workload object by name. Raises ValueError naming what is allowed."""
    check_size(size)
    if name == "s1":
        from trainer.workloads.s1 import S1Workload

        return S1Workload(size=size, **options)
    if name in S2_VARIANTS:
        from trainer.workloads.s2 import S2Workload

        if name != "s2":
            options = {**options, "version": S2_VARIANTS[name]}
        return S2Workload(size=size, **options)
    raise ValueError(f"unknown workload {name!r}: expected one of {', '.join(TABLE_NAMES)}")
