"""Workload registry: `get_workload("s1"|"s2", size="full"|"tiny")`."""

from __future__ import annotations

from trainer.workload import Workload, check_size

WORKLOAD_NAMES = ("s1", "s2")


def get_workload(name: str, size: str = "full", **options) -> Workload:
    """Build a workload object by name. Raises ValueError naming what is allowed."""
    check_size(size)
    if name == "s1":
        from trainer.workloads.s1 import S1Workload

        return S1Workload(size=size, **options)
    if name == "s2":
        from trainer.workloads.s2 import S2Workload

        return S2Workload(size=size, **options)
    raise ValueError(f"unknown workload {name!r}: expected one of {', '.join(WORKLOAD_NAMES)}")
