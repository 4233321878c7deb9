"""Workload registry: `get_workload("s1"|"s2", size="full"|"tiny")`.

Users name a workload `s1` or `s2` with `--version` (trainer/versions.py, the one
list; trainer.checks.VERSIONS is it). Tables and the probe store s2's versions as
names of their own: "s2" is the default version (v2Pro), "s2-<version>" the others
(`table_name(workload, version)`, in trainer/checks.py without torch);
`get_workload` accepts those names too. s2 of v3 / v4 is a different model and
step (`S2V3Workload`: LoRA on a DiT, flow matching): `get_workload("s2",
version="v4")` returns it.
"""

from __future__ import annotations

from trainer.checks import DEFAULT_VERSION as DEFAULT_S2_VERSION
from trainer.checks import TABLE_NAMES, WORKLOADS, split_table_name, table_name
from trainer.versions import V3_FAMILY  # s2 versions built by S2V3Workload
from trainer.workload import Workload, check_size

WORKLOAD_NAMES = WORKLOADS
__all__ = ["DEFAULT_S2_VERSION", "TABLE_NAMES", "WORKLOAD_NAMES", "get_workload", "table_name"]


def workload_for_config(cfg) -> Workload:
    """The workload a run trains (`cfg` is a TrainConfig): its size, s2's version (v3/v4: with
    `lora_rank` and `grad_ckpt`, which only S2V3Workload takes; the config refuses them
    elsewhere), and the Recipe built once from `cfg.recipe` (trainer/recipe.py), which the
    loop reads from it."""
    from trainer.recipe import recipe_for, recipe_kind

    kind = recipe_kind(cfg.workload, cfg.version)
    options = {"version": cfg.version} if cfg.workload == "s2" else {}
    if kind == "s2-cfm":
        options.update(lora_rank=cfg.lora_rank, grad_ckpt=cfg.grad_ckpt)
    return get_workload(cfg.workload, size=cfg.size, recipe=recipe_for(kind, cfg.recipe), **options)


def get_workload(name: str, size: str = "full", **options) -> Workload:
    """Build a workload object by name. Raises ValueError naming what is allowed."""
    check_size(size)
    if name == "s1":
        from trainer.workloads.s1 import S1Workload

        return S1Workload(size=size, **options)
    if name in TABLE_NAMES:
        version = split_table_name(name)[1]
        if version is not None:
            options = {**options, "version": version}
        if options.get("version") in V3_FAMILY:
            from trainer.workloads.s2v3 import S2V3Workload

            return S2V3Workload(size=size, **options)
        from trainer.workloads.s2 import S2Workload

        return S2Workload(size=size, **options)
    raise ValueError(f"unknown workload {name!r}: expected one of {', '.join(TABLE_NAMES)}")
