"""Exact resume: a real trainer process killed with SIGKILL, resumed, ends where an
uninterrupted run ends; a damaged newest checkpoint is skipped, never loaded."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_data import demo_dataset, kinds, one_thread, read_events, tiny_config  # noqa: F401 (fixture)

from trainer.loop.checkpoint import Checkpointer, Manifest
from trainer.config import apply_overrides, dump_config
from trainer.loop import train
from trainer.policy import Decision, Policy
from trainer.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, one_thread):
    return demo_dataset(tmp_path_factory)


def trainer_process(config: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # same threads in every run: same floats
    return subprocess.Popen(
        [sys.executable, "-m", "advisor.child", str(config.parent), "--quiet"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def final_state(run: Path) -> dict:
    latest = Manifest.read(run / "manifest.json", "val_ce").latest
    return torch.load(run / latest.file, weights_only=True)


def losses_by_step(run: Path) -> dict[int, float]:
    return {e["step"]: e["losses"]["total"] for e in kinds(read_events(run), "step")}


def write_run(folder: Path, cfg) -> Path:
    folder.mkdir()
    (folder / "config.yaml").write_text(dump_config(cfg))
    return folder / "config.yaml"


def test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run(dataset, tmp_path):
    # s1 with DPO: dropout (torch RNG), rejected sequences (collate generator), AdamW state,
    # warm-up + cosine, 2 micro-steps per step; a checkpoint after every step.
    cfg = tiny_config(dataset, workload="s1", dpo=True, epochs=3, **{
        "batch.micro": 2, "batch.effective": 4, "optim.lr.gpt": 1e-3,
        "schedule.warmup_steps": 2, "checkpoint.every_steps": 1, "checkpoint.keep_last": 2,
    })
    whole = write_run(tmp_path / "whole", cfg)
    done = trainer_process(whole)
    assert done.wait(timeout=300) == 0, done.stderr.read()

    kill_at = random.Random().randint(2, 10)  # of 12 steps
    broken = write_run(tmp_path / "broken", cfg)
    victim = trainer_process(broken)
    deadline = time.monotonic() + 300
    while not any(e["step"] >= kill_at for e in _steps_so_far(broken.parent)):
        assert victim.poll() is None, f"trainer ended before step {kill_at}: {victim.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not kinds(read_events(broken.parent), "end"), f"killed at step {kill_at} too late"

    resumed = trainer_process(broken)  # the same command line: it continues from the manifest
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()

    restart = kinds(read_events(broken.parent), "resume")
    # a checkpoint after every step (at an epoch end only after validation): at most one step lost
    assert len(restart) == 1 and kill_at - 1 <= restart[0]["from_step"] < 12, f"kill at {kill_at}: {restart}"
    a, b = final_state(whole.parent), final_state(broken.parent)
    assert a["position"] == b["position"]
    for name in a["models"]["gpt"]:
        torch.testing.assert_close(a["models"]["gpt"][name], b["models"]["gpt"][name], rtol=1e-5, atol=1e-6, msg=f"{name} (killed at {kill_at})")
    expected, got = losses_by_step(whole.parent), losses_by_step(broken.parent)
    assert got.keys() == expected.keys()
    for step in expected:  # the same loss trajectory, steps after the restart included
        assert got[step] == pytest.approx(expected[step], rel=1e-5), f"step {step} (killed at {kill_at})"


def _steps_so_far(run: Path) -> list[dict]:
    try:
        return kinds(read_events(run), "step")
    except (FileNotFoundError, ValueError):  # not started yet, or a line being written
        return []


@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # fp16: the GradScaler's state must come back too
def test_a_truncated_newest_checkpoint_is_skipped_and_the_run_still_matches(dataset, tmp_path, precision):
    # A constant LR: the cosine's length follows the epochs, which this test extends.
    cfg = tiny_config(dataset, workload="s1", precision=precision, **{
        "batch.micro": 4, "schedule.kind": "constant", "checkpoint.every_steps": 1, "checkpoint.keep_last": 5,
    })
    first = RunDir(tmp_path / "resumed")
    train(cfg, first)  # 1 epoch: checkpoints at steps 0..4
    manifest = Manifest.read(first.manifest, "val_ce")
    newest = first.root / manifest.latest.file
    assert manifest.latest.step == 4
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn write

    longer = apply_overrides(cfg, {"epochs": 2})
    train(longer, first)
    (restart,) = kinds(read_events(first.root), "resume")
    assert restart["from_step"] == 3
    assert restart["skipped"] == [{"file": manifest.latest.file, "problem": restart["skipped"][0]["problem"]}]
    assert "truncated" in restart["skipped"][0]["problem"]

    straight = RunDir(tmp_path / "straight")
    train(longer, straight)
    a, b = final_state(first.root), final_state(straight.root)
    assert a["position"] == b["position"] and a["scaler"] == b["scaler"]
    assert (a["scaler"] is None) == (precision == "fp32")
    for name, tensor in a["models"]["gpt"].items():
        torch.testing.assert_close(tensor, b["models"]["gpt"][name], rtol=1e-5, atol=1e-6, msg=name)


class Counter(Policy):
    """A policy whose state must survive a resume."""

    name = "counter"

    def __init__(self) -> None:
        self.steps = 0

    def on_step(self, info):
        self.steps += 1
        return []

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_policy_state_and_micro_batch_come_back_on_resume(dataset, tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = tiny_config(dataset, workload="s1", **{"batch.micro": 4})
    first = Counter()
    train(cfg, run, policies=[first])
    assert first.steps == 4
    state = final_state(run.root)
    state["micro_batch"] = 2  # as if the watchdog had halved it
    ckpt = Checkpointer(run, 3, "val_ce")
    ckpt.save({k: v for k, v in state.items() if k not in ("format", "version")}, 4, 1, None, True)
    second = Counter()
    train(apply_overrides(cfg, {"epochs": 2}), run, policies=[second])
    assert second.steps == 8  # 4 restored + 4 new
    start = kinds(read_events(run.root), "start")[-1]
    assert start["micro_batch"] == 2 and start["accumulation"] == 2 and start["resumed"]


class StopAt(Policy):
    """Asks for a stop at one step, as the supervisor's SIGTERM handler does."""

    name = "stop_at"

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, info):
        return [Decision("stop", "SIGTERM received", self.name)] if info.step == self.step else []


def test_a_clean_stop_then_resume_matches_an_uninterrupted_run(dataset, tmp_path):
    cfg = tiny_config(dataset, workload="s1", epochs=2, **{"batch.micro": 2, "batch.effective": 4, "optim.lr.gpt": 1e-3})
    stopped = RunDir(tmp_path / "stopped")
    assert train(cfg, stopped, policies=[StopAt(5)]) == "stopped"  # mid-epoch, between checkpoints
    assert train(cfg, stopped) == "epochs"
    straight = RunDir(tmp_path / "straight")
    train(cfg, straight)
    a, b = final_state(stopped.root), final_state(straight.root)
    assert a["position"] == b["position"]
    for name, tensor in a["models"]["gpt"].items():
        torch.testing.assert_close(tensor, b["models"]["gpt"][name], rtol=1e-5, atol=1e-6, msg=name)
    assert losses_by_step(stopped.root) == pytest.approx(losses_by_step(straight.root), rel=1e-5)
