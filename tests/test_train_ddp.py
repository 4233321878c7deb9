"""Data-parallel training with real processes: torchrun, gloo on CPU, 2 ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from train_data import demo_dataset, kinds, read_events, tiny_config

from trainer.config import dump_config

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # a deadlock fails the test instead of hanging CI


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


def launch(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    """Run one process, or torchrun with `nproc` workers on a free port; a hang kills them all."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if nproc == 1:
        command = [sys.executable, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its workers share this session
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def write_run(folder: Path, cfg) -> Path:
    folder.mkdir()
    (folder / "config.yaml").write_text(dump_config(cfg))
    return folder / "config.yaml"


def test_two_processes_follow_the_loss_curve_of_one_with_the_same_effective_batch(dataset, tmp_path):
    cfg = tiny_config(dataset, workload="s1", epochs=2, **{"batch.micro": 2, "batch.effective": 4, "optim.lr.gpt": 1e-3})
    one = write_run(tmp_path / "one", cfg)
    two = write_run(tmp_path / "two", cfg)
    done = launch(["-m", "advisor.child", str(one.parent), "--quiet"], 1)
    assert done.returncode == 0, done.stderr
    done = launch(["-m", "advisor.child", str(two.parent), "--quiet"], 2)
    assert done.returncode == 0, done.stderr

    single, double = read_events(one.parent), read_events(two.parent)
    start = kinds(double, "start")[0]
    assert start["world_size"] == 2 and (start["micro_batch"], start["accumulation"], start["effective_batch"]) == (2, 1, 4)
    assert len(kinds(double, "start")) == 1  # rank 1 writes no events
    a = [e["losses"]["total"] for e in kinds(single, "step")]
    b = [e["losses"]["total"] for e in kinds(double, "step")]
    assert len(a) == len(b) == 8
    assert [e["samples"] for e in kinds(double, "step")] == [e["samples"] for e in kinds(single, "step")]
    # Same samples, same mean gradient; only dropout draws (per rank) and summation order differ.
    for step, (x, y) in enumerate(zip(a, b), 1):
        assert y == pytest.approx(x, rel=0.02), f"step {step}: {a} vs {b}"
    assert b[-1] < b[0] - 0.5 and a[-1] < a[0] - 0.5
    val_a = [e["value"] for e in kinds(single, "val")]
    val_b = [e["value"] for e in kinds(double, "val")]
    assert val_b == pytest.approx(val_a, rel=0.01)
    assert all(c["replicas_in_sync"] for c in kinds(double, "checkpoint"))


OOM_ON_RANK_1 = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from advisor.watchdog import OOMConfig, OOMPolicy, is_oom_error
    from probe.tracker import EmulatedBudget
    from trainer import distributed
    from trainer.config import load_config
    from trainer.loop import train
    from trainer.rundir import RunDir

    config = Path(sys.argv[1])
    cfg = load_config(config)
    dist = distributed.setup(cfg.device)
    guard = EmulatedBudget(int(sys.argv[2])) if dist.rank == 1 else None  # only rank 1 runs out of memory
    try:
        # the watchdog's real OOM policy (default: halve the micro-batch, keep the effective batch)
        train(cfg, RunDir(config.parent), policies=[OOMPolicy(OOMConfig())], memory_guard=guard, dist=dist, is_oom=is_oom_error)
    finally:
        distributed.teardown()
    """
)


def test_an_oom_on_one_rank_makes_every_rank_retry_with_a_smaller_micro_batch(dataset, tmp_path):
    cfg = tiny_config(dataset, workload="s1", **{"batch.micro": 2, "batch.effective": 4})
    config = write_run(tmp_path / "run", cfg)
    script = tmp_path / "oom_on_rank_1.py"
    script.write_text(OOM_ON_RANK_1)
    budget = 20_000_000  # tiny s1 at 6 s: ~5 MB of weights and AdamW state + ~10 MB per sample: 1 fits, 2 do not
    done = launch([str(script), str(config), str(budget)], 2)
    assert done.returncode == 0, done.stderr

    events = read_events(config.parent)
    (oom,) = kinds(events, "oom")
    assert oom["ranks"] == [1] and oom["step"] == 0 and "emulated out of memory" in oom["error"]
    (decision,) = kinds(events, "set_micro_batch")
    assert (decision["previous"], decision["micro_batch"], decision["accumulation"]) == (2, 1, 2)
    steps = kinds(events, "step")
    assert sorted(e["samples"] for e in steps) == [2, 4, 4, 4]  # the same effective batches, now in micro-batches of 1
    assert all(e["micro_batch"] == 1 for e in steps)
    assert all(c["replicas_in_sync"] for c in kinds(events, "checkpoint"))
    assert kinds(events, "end")[-1]["reason"] == "epochs"
