"""Workload registry: `get_workload("s1"|"s2", size="full"|"tiny")`.

Tables and the probe name s2's versions as workloads of their own: "s2" is the
default version (v2Pro), "s2-v2", "s2-v2ProPlus", "s2-v3" and "s2-v4" the others
(`table_name(workload, version)`); `get_workload` accepts those names too.
s2 of v3 / v4 is a different model and step (`S2V3Workload`: LoRA on a DiT,
flow matching): `get_workload("s2", version="v4")` returns it.
"""

from __future__ import annotations

from trainer.workload import Workload, check_size

WORKLOAD_NAMES = ("s1", "s2")
DEFAULT_S2_VERSION = "v2Pro"  # = trainer.versions.DEFAULT (GPT-SoVITS webui default)
S2_VARIANTS = {"s2": DEFAULT_S2_VERSION, "s2-v2": "v2", "s2-v2ProPlus": "v2ProPlus", "s2-v3": "v3", "s2-v4": "v4"}  # table name -> version
from trainer.versions import V3_FAMILY  # noqa: E402  s2 versions built by S2V3Workload
from trainer.versions import table_name  # noqa: E402,F401  (torch-free; re-exported: launch and child import it from here)
TABLE_NAMES = ("s1", *S2_VARIANTS)




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
    if name in S2_VARIANTS:
        if name != "s2":
            options = {**options, "version": S2_VARIANTS[name]}
        if options.get("version") in V3_FAMILY:
            from trainer.workloads.s2v3 import S2V3Workload

            return S2V3Workload(size=size, **options)
        from trainer.workloads.s2 import S2Workload

        return S2Workload(size=size, **options)
    raise ValueError(f"unknown workload {name!r}: expected one of {', '.join(TABLE_NAMES)}")
