"""`advisor doctor` on this (GPU-less) machine, and its report of a GPU snapshot."""

import json
import subprocess
import sys

from advisor.commands.doctor import report_lines
from probe.device import GPUInfo, inventory


def test_doctor_runs_without_gpu_and_exits_zero():
    out = subprocess.run([sys.executable, "-m", "advisor", "doctor"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "torch" in out.stdout and "ram" in out.stdout
    gpu_lines = [line for line in out.stdout.splitlines() if line.startswith("gpu")]
    assert gpu_lines, out.stdout
    if not inventory().gpus:
        assert len(gpu_lines) == 1 and "none found" in gpu_lines[0]


def test_doctor_json_has_versions_and_memory():
    out = subprocess.run([sys.executable, "-m", "advisor", "doctor", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["torch"] and data["ram_total_bytes"] > 0 and data["cpu_cores_logical"] >= 1
    assert data["best_precision"] in ("fp32", "fp16", "bf16")


def test_report_lists_each_gpu_with_memory_driver_and_capability():
    snapshot = inventory()
    gpu = GPUInfo(index=0, name="NVIDIA H100 80GB HBM3", total_bytes=80 * 1024**3, free_bytes=79 * 1024**3,
                  compute_capability="9.0", driver="550.54.15")
    lines = report_lines(type(snapshot)(**{**snapshot.__dict__, "gpus": [gpu], "cuda_available": True}))
    line = next(line for line in lines if line.startswith("gpu 0"))
    assert "H100" in line and "80.0 GiB" in line and "79.0 GiB free" in line and "9.0" in line and "550.54.15" in line
    assert lines[-1].startswith("precision   bf16")
