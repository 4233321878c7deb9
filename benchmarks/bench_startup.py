"""CLI start-up: wall time of `advisor ...` in a fresh interpreter (what a user waits for).

    /tmp/venv-ux/bin/python -m pytest benchmarks/bench_startup.py --benchmark-only -q

Target: under 1 s for `advisor --help` and `advisor plan` (answered from the
shipped table) on the 2-core machine. `doctor` imports torch on purpose (it
reports whether torch loads and sees CUDA); `import torch` alone is measured
for comparison. Results: benchmarks/results/startup.md.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PLAN = ["plan", "--vram", "8GiB", "--workload", "s2", "--slice-seconds", "10", "--precision", "fp16", "--device-name", "NVIDIA GeForce RTX 4060"]
CASES = {
    "help": ["-m", "advisor.cli", "--help"],
    "plan_help": ["-m", "advisor.cli", "plan", "--help"],
    "plan": ["-m", "advisor.cli", *PLAN],
    "plan_this_machine": ["-m", "advisor.cli", "plan", "--vram", "8GiB", "--workload", "s2", "--slice-seconds", "10"],
    "table_list": ["-m", "advisor.cli", "table", "list"],
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

    benchmark.pedantic(once, rounds=7, warmup_rounds=1, iterations=1)
