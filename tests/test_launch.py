"""One run specification, one way to run it: supervised, in-process and under torchrun alike.

Real processes throughout: `advisor train` writes the spec, `python -m advisor.child
RUN_DIR` (directly or under torchrun with gloo) runs it, signals are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_here import advisor_here
from train_data import demo_dataset

from advisor.launch import LAUNCH_FILE, Launch, RunSpec, load_launch
from trainer.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TIMEOUT = 300


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


def advisor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=TIMEOUT)


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


def kinds(run: Path, kind: str) -> list[dict]:
    return [e for e in events(run) if e["kind"] == kind]


def tiny_s1(dataset: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--workload", "s1", "--data", str(dataset), "--out", str(run), "--size", "tiny", *extra]


def wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def steps_done(run: Path) -> int:
    return len(kinds(run, "step")) if (run / "events.jsonl").exists() else 0


def test_torchrun_ranks_get_the_watchdog_the_emulated_budget_and_early_stopping(dataset, tmp_path):
    """2 gloo ranks: an emulated budget too small for micro-batch 4 -> OOM recovery at the same
    effective batch; a high LR -> early stop on validation; the dashboard shows it all."""
    run = tmp_path / "run"
    out = advisor_here(*tiny_s1(dataset, run, "--epochs", "12", "--micro-batch", "4", "--effective-batch", "8",
                                "--emulate-vram", "40MiB", "--max-buckets", "0", "--set", "optim.lr.gpt=0.05",
                                "--set", "watchdog.early_stop.patience=2", "--set", "watchdog.oscillation=null", "--write-config"))
    assert out.returncode == 0, out.stderr
    assert "torchrun --nproc-per-node N -m advisor.child" in out.stdout + out.stderr
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "advisor.child", str(run), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    start = kinds(run, "start")[0]
    assert start["world_size"] == 2
    shrinks = kinds(run, "set_micro_batch")
    assert kinds(run, "oom") and shrinks and shrinks[0]["policy"] == "oom"
    assert all(e["micro_batch"] * e["accumulation"] * 2 >= 8 for e in kinds(run, "step"))  # effective batch kept
    assert kinds(run, "end")[-1]["reason"] == "stopped" and kinds(run, "stop")[-1]["policy"] == "early_stop"
    shown = advisor_here("dashboard", str(run), "--once")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.lower()
    assert "early_stop" in text and "set_micro_batch" in text and "val_ce" in text


def test_torchrun_ranks_take_equal_shares_of_one_length_bucket(dataset, tmp_path):
    """The run spec's length buckets under 2 gloo ranks: every step draws from one bucket, holds
    the effective batch (2 per rank), and the ranks stay in sync."""
    run = tmp_path / "run"
    out = advisor_here(*tiny_s1(dataset, run, "--epochs", "1", "--micro-batch", "2", "--effective-batch", "4", "--write-config"))
    assert out.returncode == 0, out.stderr
    assert "length buckets" in out.stdout + out.stderr and RunSpec.load(RunDir(run)).launch.buckets is not None
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "advisor.child", str(run), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    start, steps = kinds(run, "start")[0], kinds(run, "step")
    assert start["world_size"] == 2 and len(start["buckets"]) >= 2
    assert steps and all(s["samples"] == 4 and "bucket" in s and s["micro_batch"] * s["accumulation"] * 2 == 4 for s in steps)
    assert all(c.get("replicas_in_sync", True) for c in kinds(run, "checkpoint"))


def test_a_resume_without_flags_keeps_the_emulated_budget_recipe_and_batch_plan(dataset, tmp_path):
    run = tmp_path / "run"
    first = advisor(*tiny_s1(dataset, run, "--epochs", "1", "--micro-batch", "4", "--effective-batch", "8",
                             "--emulate-vram", "64MiB", "--set", "recipe=gpt-sovits", "--no-supervisor"))
    assert first.returncode == 0, first.stderr
    spec = RunSpec.load(RunDir(run))
    assert spec.launch.emulate_vram_bytes == 64 * 1024**2 and spec.config.recipe == "gpt-sovits"
    again = advisor("train", "--out", str(run), "--resume", "--epochs", "2", "--no-supervisor")
    assert again.returncode == 0, again.stderr
    resumed = RunSpec.load(RunDir(run))
    assert resumed.launch.emulate_vram_bytes == 64 * 1024**2  # still emulated
    assert resumed.config.recipe == "gpt-sovits"
    assert (resumed.config.batch.micro, resumed.config.batch.effective) == (4, 8)
    starts = kinds(run, "start")
    assert len(starts) == 2 and starts[-1]["resumed"] and starts[-1]["effective_batch"] == 8
    assert all("memory" not in e or e["memory"].get("source") == "emulated" for e in kinds(run, "step"))
    off = advisor("train", "--out", str(run), "--resume", "--epochs", "3", "--emulate-vram", "0", "--no-supervisor")
    assert off.returncode == 0, off.stderr
    assert RunSpec.load(RunDir(run)).launch.emulate_vram_bytes is None  # `0` turns the saved budget off
    last = kinds(run, "step")[-1]
    assert "memory" not in last or last["memory"].get("source") != "emulated"


@pytest.mark.parametrize("how", ["supervised", "no-supervisor", "torchrun"])
def test_sigterm_checkpoints_and_stops_cleanly_however_the_run_was_started(dataset, tmp_path, how):
    run = tmp_path / "run"
    args = tiny_s1(dataset, run, "--epochs", "30", "--set", "watchdog.early_stop=null", "--json")
    if how == "torchrun":
        assert advisor_here(*args, "--write-config").returncode == 0
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "advisor.child", str(run), "--quiet"]
    else:
        command = [sys.executable, "-m", "advisor", *args, *(["--no-supervisor"] if how == "no-supervisor" else [])]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT, start_new_session=True)
    try:
        wait_for(lambda: steps_done(run) >= 3 or proc.poll() is not None, "three training steps")
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        os.killpg(proc.pid, signal.SIGTERM) if how == "torchrun" else proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if how != "torchrun":  # torchrun's own agent reports a signal it received as a failure (exit 1, its traceback)
        assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    end = kinds(run, "end")[-1]
    assert end["reason"] == "stopped" and "SIGTERM" in end["detail"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["latest"]["step"] == end["step"]  # the stop was checkpointed where it happened


def test_the_spec_files_round_trip_and_a_damaged_launch_file_is_one_line(tmp_path):
    (tmp_path / LAUNCH_FILE).write_text(json.dumps({"format": "sovits-advisor-launch", "version": 1, "emulate_vram_bytes": 123, "oom_restarts": 2, "batch": {"source": "flag"}}))
    assert load_launch(tmp_path) == Launch(123, 2, {"source": "flag"})
    (tmp_path / LAUNCH_FILE).write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match=f"{LAUNCH_FILE}: not a JSON launch file"):
        load_launch(tmp_path)
    (tmp_path / LAUNCH_FILE).write_text(json.dumps({"format": "sovits-advisor-launch", "version": 1, "oom_restarts": -1}))
    with pytest.raises(ValueError, match="oom_restarts"):
        load_launch(tmp_path)
