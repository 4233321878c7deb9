"""benchmarks/gpu/validate.sh: its CPU-only dry path lists the cells and checks the environment."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_lists_every_cell_and_checks_the_estimator():
    done = subprocess.run(["sh", str(ROOT / "benchmarks/gpu/validate.sh"), "--dry-run"], capture_output=True, text=True, timeout=120, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    for cell in ("s1 5s", "s1 10s", "s1 30s", "s1 5s dpo", "s1 30s dpo", "s2 5s", "s2 30s"):
        assert cell in done.stdout
    assert "estimator ok: s1" in done.stdout and "estimator ok: s2" in done.stdout


def test_without_a_gpu_the_real_run_refuses_in_one_line():
    import torch

    if torch.cuda.is_available():
        return
    done = subprocess.run(["sh", str(ROOT / "benchmarks/gpu/validate.sh")], capture_output=True, text=True, timeout=120, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "no CUDA GPU" in done.stderr and len(done.stderr.strip().splitlines()) == 1
