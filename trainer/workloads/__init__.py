"""Workload registry: `get_workload("s1"|"s2", size="full"|"tiny")`.

Users name a workload `s1` or `s2` with `--version` (trainer.checks.VERSIONS,
the one list). Tables and the probe store s2's versions as names of their own:
"s2" is the default version (v2Pro), "s2-<version>" the others
(`table_name(workload, version)`, in trainer/checks.py without torch);
`get_workload` accepts those names too.
"""

from __future__ import annotations

from trainer.checks import DEFAULT_VERSION as DEFAULT_S2_VERSION
from trainer.checks import TABLE_NAMES, WORKLOADS, split_table_name, table_name
from trainer.workload import Workload, check_size

WORKLOAD_NAMES = WORKLOADS
__all__ = ["DEFAULT_S2_VERSION", "TABLE_NAMES", "WORKLOAD_NAMES", "get_workload", "table_name"]


def get_workload(name: str, size: str = "full", **options) -> Workload:
    """Build a workload object by name. Raises ValueError naming what is allowed."""
    check_size(size)
    if name == "s1":
        from trainer.workloads.s1 import S1Workload

        return S1Workload(size=size, **options)
    if name in TABLE_NAMES:
        from trainer.workloads.s2 import S2Workload

        version = split_table_name(name)[1]
        if version is not None:
            options = {**options, "version": version}
        return S2Workload(size=size, **options)
    raise ValueError(f"unknown workload {name!r}: expected one of {', '.join(TABLE_NAMES)}")
