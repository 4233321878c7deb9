"""CLI start-up: wall time of `advisor ...` in a fresh interpreter (what a user waits for).

    /tmp/venv-ux/bin/python -m pytest benchmarks/bench_startup.py --benchmark-only -q

Target: under 0.3 s (median of 10) for `advisor plan --vram 8GiB --workload s1
--slice-seconds 10` on the 2-core machine (issue 22), under 1 s for `--help`. `doctor` imports torch on purpose (it
reports whether torch loads and sees CUDA); `import torch` alone is measured
for comparison. Results: benchmarks/results/startup.md.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PLAN = ["plan", "--vram", "8GiB", "--workload", "s2", "--slice-seconds", "10", "--precision", "fp16", "--device-name", "NVIDIA GeForce RTX 4060"]
PLAN_S1 = ["plan", "--vram", "8GiB", "--workload", "s1", "--slice-seconds", "10"]  # the command
CASES = {
    "help": ["-m", "advisor.cli", "--help"],
    "plan_help": ["-m", "advisor.cli", "plan", "--help"],
    "plan": ["-m", "advisor.cli", *PLAN],
    "plan_this_machine": ["-m", "advisor.cli", "plan", "--vram", "8GiB", "--workload", "s2", "--slice-seconds", "10"],
    "plan_s1_issue22": ["-m", "advisor", *PLAN_S1],
    "plan_s1_pure_yaml": ["-c", f"import sys, yaml; yaml.CSafeLoader = yaml.SafeLoader; from advisor.cli import main; sys.exit(main({PLAN_S1!r}))"],
    "table_list": ["-m", "advisor.cli", "table", "list"],
    "table": ["-m", "advisor", "table"],
    "doctor": ["-m", "advisor.cli", "doctor"],
    "import_torch": ["-c", "import torch"],
    "python_only": ["-c", "pass"],
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tables")  # only the shipped tables: the same answer everywhere
    return {**os.environ, "SOVITS_ADVISOR_TABLES": str(folder), "XDG_DATA_HOME": str(folder)}


@pytest.mark.parametrize("case", list(CASES))
def test_startup(benchmark, env, case):
    def once():
        subprocess.run([sys.executable, *CASES[case]], env=env, check=True, capture_output=True)

    benchmark.pedantic(once, rounds=10, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("loader", ["CSafeLoader", "SafeLoader"])
def test_read_shipped_estimate(benchmark, loader, monkeypatch):
    """The 160 KB tables/estimated.yaml through probe.table.read_table with libyaml's loader
    (what ships when PyYAML has it) and PyYAML's pure-Python one (the fallback)."""
    from pathlib import Path

    import yaml

    import probe.table

    if not hasattr(yaml, loader):
        pytest.skip(f"PyYAML has no {loader}")
    monkeypatch.setattr(probe.table, "_LOADER", getattr(yaml, loader))
    path = Path(__file__).resolve().parents[1] / "tables" / "estimated.yaml"
    benchmark.pedantic(probe.table.read_table, args=(path,), rounds=5, warmup_rounds=1, iterations=1)
