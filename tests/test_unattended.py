"""Unattended runs end to end: `advisor train` with the supervisor, the watchdog and real
processes on the demo dataset (tiny models, CPU).

  - an emulated VRAM budget too small for the starting micro-batch: the run recovers
    by itself and keeps its effective batch;
  - early stopping: the run stops after `patience` checks without improvement and
    export/ holds the best checkpoint's weights;
  - kill -9 of the trainer child: the supervisor restarts it and the run finishes;
  - kill -9 of the supervisor: its trainer stops cleanly, and `advisor train --resume`
    takes over without a second trainer;
  - --detach, then `advisor stop`.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_here import advisor_here
from train_data import demo_dataset

from advisor.supervisor import lock_held, pid_alive, read_lock_info
from trainer.events import read_events

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return demo_dataset(tmp_path_factory)


def advisor(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def start_advisor(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "advisor", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=ENV)


def events_of(run: Path) -> list[dict]:
    return read_events(run / "events.jsonl")[0]


def kinds(run: Path, kind: str) -> list[dict]:
    return [e for e in events_of(run) if e["kind"] == kind]


def wait_for(predicate, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def tiny_s1(dataset, run: Path, *extra: str) -> list[str]:
    return ["train", "--workload", "s1", "--data", str(dataset), "--out", str(run), "--size", "tiny", *extra]


def test_emulated_vram_too_small_recovers_with_the_same_effective_batch(dataset, tmp_path):
    run = tmp_path / "run"
    out = advisor(*tiny_s1(dataset, run, "--epochs", "1", "--micro-batch", "8", "--effective-batch", "8",
                           "--emulate-vram", "30MiB"))
    assert out.returncode == 0, out.stdout + out.stderr
    ooms, shrinks = kinds(run, "oom"), kinds(run, "set_micro_batch")
    assert ooms and len(shrinks) == len(ooms)
    assert [s["micro_batch"] for s in shrinks] == [8 // 2 ** (i + 1) for i in range(len(shrinks))]
    assert all(s["micro_batch"] * s["accumulation"] == 8 for s in shrinks)  # effective batch kept
    steps = kinds(run, "step")
    last = shrinks[-1]["micro_batch"]
    assert steps and all(e["micro_batch"] == last and e["micro_batch"] * e["accumulation"] == 8 for e in steps)
    assert steps[0]["samples"] == 8  # the batch that ran out of memory was retried whole
    assert kinds(run, "end")[-1]["reason"] == "epochs"


def test_early_stopping_exports_the_best_checkpoint_not_the_last(dataset, tmp_path):
    run = tmp_path / "run"
    # a high LR for the tiny model: val_ce flattens and turns upward near the end
    out = advisor(*tiny_s1(dataset, run, "--epochs", "12", "--set", "optim.lr.gpt=0.03",
                           "--set", "watchdog.early_stop.patience=2", "--set", "watchdog.oscillation=null"))
    assert out.returncode == 0, out.stdout + out.stderr
    vals = kinds(run, "val")
    end = kinds(run, "end")[-1]
    assert end["reason"] == "stopped" and kinds(run, "stop")[-1]["policy"] == "early_stop"
    best_val = min(vals, key=lambda e: e["value"])
    assert vals.index(best_val) == len(vals) - 3  # stopped `patience` checks after the best
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["best"]["step"] == best_val["step"] < manifest["latest"]["step"]
    exported = torch.load(run / "export" / "gpt.pt", weights_only=True)
    best = torch.load(run / manifest["best"]["file"], weights_only=False)
    latest = torch.load(run / manifest["latest"]["file"], weights_only=False)
    assert all(torch.equal(exported[k], best["models"]["gpt"][k]) for k in exported)
    assert not all(torch.equal(exported[k], latest["models"]["gpt"][k]) for k in exported)


def test_kill_9_of_the_trainer_child_is_restarted_and_the_run_finishes(dataset, tmp_path):
    run = tmp_path / "run"
    sup = start_advisor(*tiny_s1(dataset, run, "--epochs", "5", "--set", "watchdog.early_stop=null", "--restart-wait", "0.5"))
    wait_for(lambda: len(kinds(run, "step")) >= 3, what="training steps")
    child = read_lock_info(run)["child_pid"]
    os.kill(child, signal.SIGKILL)
    output, _ = sup.communicate(timeout=300)
    assert sup.returncode == 0, output
    (restart,) = [e for e in kinds(run, "restart") if e.get("source") == "supervisor"]
    assert "SIGKILL" in restart["reason"] and restart["attempt"] == 1
    assert "restart 1/3 in 0.5 s" in output  # --restart-wait
    assert kinds(run, "end")[-1]["reason"] == "epochs"
    assert len(kinds(run, "val")) >= 5


def test_kill_9_of_the_supervisor_then_resume_takes_over_without_a_second_trainer(dataset, tmp_path):
    run = tmp_path / "run"
    sup = start_advisor(*tiny_s1(dataset, run, "--epochs", "5", "--set", "watchdog.early_stop=null"))
    wait_for(lambda: len(kinds(run, "step")) >= 3, what="training steps")
    old_child = read_lock_info(run)["child_pid"]
    sup.kill()  # kill -9 the supervisor
    sup.wait()
    # the orphaned trainer was told to stop (PR_SET_PDEATHSIG) and holds the lock until it exits
    resumed = advisor("train", "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not pid_alive(old_child)
    ends = kinds(run, "end")
    assert ends[0]["reason"] == "stopped" and ends[-1]["reason"] == "epochs"
    # one trainer at a time: every event of the new trainer comes after the old one's end
    events = events_of(run)
    first_end = events.index(ends[0])
    assert [e["kind"] for e in events[first_end + 1 :]].count("end") == 1
    assert read_lock_info(run)["child_pid"] != old_child


def test_resume_of_a_live_run_is_refused(dataset, tmp_path):
    run = tmp_path / "run"
    sup = start_advisor(*tiny_s1(dataset, run, "--epochs", "12"))
    try:
        wait_for(lambda: len(kinds(run, "step")) >= 1, what="training steps")
        second = advisor_here("train", "--out", str(run), "--resume")
        assert second.returncode == 2
        assert "is live" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.communicate(timeout=120)


def test_detach_then_stop_then_resume(dataset, tmp_path):
    run = tmp_path / "run"
    out = advisor(*tiny_s1(dataset, run, "--epochs", "30", "--set", "watchdog.early_stop=null", "--detach"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == str(run)
    assert lock_held(run)
    wait_for(lambda: len(kinds(run, "step")) >= 2, what="training steps")
    stopped = advisor("stop", str(run))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert not lock_held(run)
    end = kinds(run, "end")[-1]
    assert end["reason"] == "stopped" and "SIGTERM" in end["detail"]
    stop_step = end["step"]
    resumed = advisor("train", "--out", str(run), "--resume", "--max-steps", str(stop_step + 2))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert kinds(run, "end")[-1]["step"] == stop_step + 2


def test_dashboard_once_renders_a_finished_supervised_run(dataset, tmp_path):
    run = tmp_path / "run"
    assert advisor(*tiny_s1(dataset, run, "--epochs", "1")).returncode == 0
    out = advisor_here("dashboard", str(run), "--once")
    assert out.returncode == 0, out.stderr
    assert "val_ce" in out.stdout and "ended" in out.stdout.lower()


def test_a_budget_too_small_for_micro_batch_1_stops_with_advice_and_exit_3(dataset, tmp_path):
    run = tmp_path / "run"
    out = advisor(*tiny_s1(dataset, run, "--epochs", "1", "--micro-batch", "2", "--emulate-vram", "8MiB"))
    assert out.returncode == 3, out.stdout + out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("advisor train: error: oom:") and "micro-batch 1" in line and "fit" in line
    assert [e["micro_batch"] for e in kinds(run, "set_micro_batch")] == [1]
    assert kinds(run, "end")[-1]["reason"] == "stopped"


def test_an_oom_death_after_the_loop_shrank_restarts_below_what_the_run_last_used(dataset, tmp_path):
    """The watchdog halves 8 -> 4 -> ... under the emulated budget and checkpoints every step;
    then the child dies as the OS's OOM killer would kill it (SIGKILL). The next child's cap is
    half the micro-batch the run last used (its newest checkpoint's), not half the config's 8."""
    run = tmp_path / "run"
    sup = start_advisor(*tiny_s1(dataset, run, "--epochs", "6", "--micro-batch", "8", "--effective-batch", "8",
                                 "--emulate-vram", "30MiB", "--set", "checkpoint.every_steps=1", "--set", "watchdog.early_stop=null",
                                 "--restart-wait", "0.5"))

    def shrunk_and_saved() -> bool:
        shrinks, saved = kinds(run, "set_micro_batch"), kinds(run, "checkpoint")
        return bool(shrinks) and any(c["step"] > shrinks[-1]["step"] + 1 for c in saved)

    wait_for(shrunk_and_saved, what="a checkpoint after the watchdog's last shrink")
    last = json.loads((run / "manifest.json").read_text())["checkpoints"][-1]["micro_batch"]
    assert 2 <= last < 8  # the loop already shrank, and there is room to halve once more
    os.kill(read_lock_info(run)["child_pid"], signal.SIGKILL)
    output, _ = sup.communicate(timeout=300)
    assert sup.returncode == 0, output
    launch = json.loads((run / "launch.json").read_text())
    assert (launch["oom_restarts"], launch["micro_cap"]) == (1, last // 2)
    resumed = kinds(run, "resume")[-1]
    assert resumed["micro_batch"] == last // 2 and resumed["effective_batch"] == 8
    assert kinds(run, "end")[-1]["reason"] == "epochs"
