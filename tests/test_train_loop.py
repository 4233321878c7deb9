"""The training loop on real tiny models and the real demo dataset (CPU).

Policies here are small scripted watchdogs (the thing under test is the loop
that applies their decisions); the memory guard is the probe's real emulated
budget, raising a real torch.OutOfMemoryError mid-forward.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from train_data import demo_dataset, kinds, one_thread, read_events, tiny_config  # noqa: F401 (fixture)

from probe.tracker import EmulatedBudget
from trainer.checkpoint import Manifest
from trainer.data.loader import collate
from trainer.distributed import Dist
from trainer.loop import accumulate, build, train
from trainer.state import Position
from trainer.policy import Decision
from trainer.rundir import RunDir
from trainer.schedule import lr_factor
from trainer.workload import split_batch


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, one_thread):
    return demo_dataset(tmp_path_factory)


def test_s2_trains_validates_each_epoch_and_exports_plain_state_dicts(dataset, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, workload="s2", epochs=2, **{"batch.micro": 2, "batch.effective": 4, "checkpoint.every_steps": 3})
    assert train(cfg, RunDir(run)) == "epochs"

    events = read_events(run)
    start = kinds(events, "start")[0]
    assert (start["micro_batch"], start["accumulation"], start["effective_batch"]) == (2, 2, 4)
    assert start["batch_source"] == "default" and start["steps_per_epoch"] == 4  # 14 clips / 4, last batch of 2

    steps = kinds(events, "step")
    assert [e["step"] for e in steps] == list(range(1, 9))
    first = steps[0]
    assert {"mel", "kl", "g_adv", "g_fm", "commit", "d", "g", "total"} <= set(first["losses"])
    assert first["lr"]["generator/text_encoder"] == pytest.approx(0.4 * first["lr"]["generator/rest"])  # GPT-SoVITS's 0.4 x
    assert set(first["grad_norm"]) == {"generator", "discriminator"}
    assert first["samples"] == 4 and first["samples_per_s"] > 0 and first["peak_memory_bytes"] > 0
    assert sorted(e["samples"] for e in steps[:4]) == [2, 4, 4, 4]  # 14 clips: one short batch an epoch

    vals = kinds(events, "val")
    assert [(v["epoch"], v["step"], v["metric"]) for v in vals] == [(1, 4, "val_mel_l1"), (2, 8, "val_mel_l1")]
    assert all(math.isfinite(v["value"]) for v in vals)
    assert [c["step"] for c in kinds(events, "checkpoint")] == [0, 3, 4, 6, 8]
    assert kinds(events, "end")[-1]["reason"] == "epochs"

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["latest"]["step"] == 8 and manifest["latest"]["epoch"] == 2
    best_val = min(vals, key=lambda v: v["value"])
    assert manifest["best"]["step"] == best_val["step"] and manifest["best"]["metric"] == pytest.approx(best_val["value"])
    assert len(manifest["checkpoints"]) == 3  # keep_last 3 (best and latest among them)

    # export/ loads with plain torch in a process that cannot import this package
    code = (
        "import sys, torch, json;"
        "gen = torch.load('export/generator.pt', weights_only=True);"
        "disc = torch.load('export/discriminator.pt', weights_only=True);"
        "assert 'trainer' not in sys.modules;"
        "print(json.dumps({'gen': len(gen), 'disc': len(disc), 'tensors': all(isinstance(v, torch.Tensor) for v in gen.values())}))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=run, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    models = build(cfg, run, Dist()).models
    assert loaded == {"gen": len(models["generator"].state_dict()), "disc": len(models["discriminator"].state_dict()), "tensors": True}
    assert json.loads((run / "export" / "info.json").read_text())["file"] == manifest["best"]["file"]


@pytest.mark.parametrize("dpo", [False, True], ids=["s1", "s1-dpo"])
def test_s1_trains_a_few_epochs_and_the_loss_falls(dataset, tmp_path, dpo):
    run = tmp_path / "run"
    overrides = {"batch.micro": 4, "optim.lr.gpt": 1e-3, "schedule.warmup_steps": 2, "validation.every_epochs": 1}
    cfg = tiny_config(dataset, workload="s1", epochs=3, dpo=dpo, **overrides)
    assert train(cfg, RunDir(run)) == "epochs"

    events = read_events(run)
    steps = kinds(events, "step")
    assert len(steps) == 12
    assert ("dpo" in steps[0]["losses"]) == dpo
    ce = [e["losses"]["ce"] for e in steps]
    assert ce[-1] < ce[0] - 0.5  # 12 steps at 1e-3 learn the semantic-token distribution
    vals = kinds(events, "val")
    assert [v["epoch"] for v in vals] == [1, 2, 3] and all(v["metric"] == "val_ce" for v in vals)
    assert vals[-1]["value"] < vals[0]["value"]
    gpt = torch.load(run / "export" / "gpt.pt", weights_only=True)
    assert "head.weight" in gpt


def test_accumulation_gives_the_gradient_of_the_whole_batch(dataset, tmp_path):
    """Micro-batches weighted by their share (3 + 1 samples) sum to the full batch's gradient.

    s1's loss is a mean over tokens, so the batch repeats one real clip: with equal
    lengths the token mean and the sample mean agree and only the weighting is tested."""
    cfg = tiny_config(dataset, workload="s1", **{"batch.micro": 4})
    p = build(cfg, tmp_path, Dist())
    p.models.eval()  # no dropout: the two computations must agree to rounding
    batch = collate("s1", [p.data.train[0]] * 4, p.data.slice_seconds)

    def gradients(micro: int) -> list[torch.Tensor]:
        p.micro_batch = micro
        out, stop = accumulate(p, batch, 4, Position(), watch=_NoWatch(), memory_guard=None)
        assert stop is None and out.samples == 4
        return [q.grad.clone() for q in p.models.parameters()]

    whole, split = gradients(4), gradients(3)
    assert len(split_batch(batch, 3)) == 2
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


class _NoWatch:
    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError)


class HalveOnOOM:
    """The smallest OOM policy: halve the micro-batch."""

    name = "halve"

    def __init__(self) -> None:
        self.calls = 0

    def on_step(self, info):
        return []

    def on_val(self, info):
        return []

    def on_oom(self, info):
        self.calls += 1
        return [Decision("set_micro_batch", f"OOM at {info.micro_batch}", self.name, micro_batch=max(1, info.micro_batch // 2))]

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


BUDGET = 30_000_000  # tiny s1 at 6 s: a micro-step peaks ~10 MB per sample, so 2 fit and 4 do not


def test_oom_halves_the_micro_batch_and_retries_the_same_batch(dataset, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, workload="s1", **{"batch.micro": 4})
    policy = HalveOnOOM()
    guard = EmulatedBudget(BUDGET)
    assert train(cfg, RunDir(run), policies=[policy], memory_guard=guard) == "epochs"

    events = read_events(run)
    assert guard.ooms == 1 and policy.calls == 1
    (oom,) = kinds(events, "oom")
    assert oom["step"] == 0 and oom["micro_batch"] == 4 and "emulated out of memory" in oom["error"]
    (decision,) = kinds(events, "set_micro_batch")
    assert decision["policy"] == "halve" and decision["reason"] == "OOM at 4"
    assert (decision["previous"], decision["micro_batch"], decision["accumulation"]) == (4, 2, 2)
    steps = kinds(events, "step")
    assert sorted(e["samples"] for e in steps) == [2, 4, 4, 4]  # the effective batches never changed
    assert all(e["micro_batch"] == 2 and e["accumulation"] == 2 for e in steps)
    manifest = Manifest.read(run / "manifest.json", "val_ce")
    final = torch.load(run / manifest.latest.file, weights_only=True)
    assert final["micro_batch"] == 2 and final["policies"] == {"halve": {"calls": 1}}


def test_oom_without_a_policy_is_raised(dataset, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, workload="s1", **{"batch.micro": 4})
    with pytest.raises(torch.OutOfMemoryError, match="no watchdog policy"):
        train(cfg, RunDir(run), memory_guard=EmulatedBudget(BUDGET))
    end = kinds(read_events(run), "end")[-1]
    assert end["reason"] == "error" and "OutOfMemoryError" in end["detail"]


class Scripted:
    """Returns the decisions scheduled for a step (on_step) or an epoch (on_val)."""

    name = "scripted"

    def __init__(self, on_step=None, on_val=None) -> None:
        self.step_plan, self.val_plan, self.seen = on_step or {}, on_val or {}, []

    def on_step(self, info):
        self.seen.append(info)
        return self.step_plan.pop(info.step, [])  # once: a step number comes again after a skip or rollback

    def on_val(self, info):
        return self.val_plan.pop(info.epoch, [])

    def on_oom(self, info):
        return []

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        """Stateless: nothing to restore."""


def test_step_decisions_scale_lr_skip_rollback_and_stop(dataset, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, workload="s1", epochs=3, **{"batch.micro": 4, "schedule.kind": "constant", "checkpoint.every_steps": 2})
    policy = Scripted(
        on_step={
            1: [Decision("scale_lr", "loss oscillates", "scripted", factor=0.5)],
            2: [Decision("skip_step", "spike", "scripted")],
            5: [Decision("rollback", "nan", "scripted", skip_batches=1)],
            6: [Decision("stop", "enough", "scripted")],
        }
    )
    assert train(cfg, RunDir(run), policies=[policy]) == "stopped"
    events = read_events(run)
    sequence = [(e["kind"], e["step"]) for e in events if e["kind"] in ("step", "scale_lr", "skip_step", "rollback", "stop", "checkpoint")]
    assert sequence == [
        ("checkpoint", 0),
        ("step", 1),
        ("scale_lr", 1),
        ("step", 2),
        ("checkpoint", 2),
        ("skip_step", 2),  # no optimiser step: the next one is step 3
        ("step", 3),
        ("checkpoint", 3),  # epoch end
        ("step", 4),
        ("checkpoint", 4),
        ("step", 5),
        ("rollback", 5),  # back to the newest finite checkpoint (step 4), one batch skipped
        ("step", 5),
        ("step", 6),
        ("checkpoint", 6),  # epoch end
        ("stop", 6),
        ("step", 7),  # the step in flight finishes
        ("checkpoint", 7),  # the final state, validated
    ]
    steps = kinds(events, "step")
    lr0 = steps[0]["lr"]["gpt/body"]
    assert all(e["lr"]["gpt/body"] == pytest.approx(lr0 * 0.5) for e in steps[1:])
    (scale,) = kinds(events, "scale_lr")
    assert scale["reason"] == "loss oscillates" and scale["policy"] == "scripted" and scale["factor"] == 0.5
    (skip,) = kinds(events, "skip_step")
    assert skip["step"] == 2 and [e["step"] for e in steps].count(3) == 1
    (rollback,) = kinds(events, "rollback")
    assert rollback["to_step"] == 4 and rollback["skip_batches"] == 1
    (stop,) = kinds(events, "stop")
    end = kinds(events, "end")[-1]
    assert end["reason"] == "stopped" and end["detail"] == "scripted: enough"
    assert stop["step"] == 6 and end["step"] == 7


def test_early_stop_on_validation_leaves_the_best_checkpoint_in_export(dataset, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, workload="s1", epochs=5, **{"batch.micro": 4, "optim.lr.gpt": 1e-3})
    policy = Scripted(on_val={
        2: [Decision("scale_lr", "plateau", "scripted", factor=0.1)],
        3: [Decision("stop", "no improvement for 1 check", "scripted")],
    })
    assert train(cfg, RunDir(run), policies=[policy]) == "stopped"
    events = read_events(run)
    assert [v["epoch"] for v in kinds(events, "val")] == [1, 2, 3]  # epochs 4 and 5 never ran
    (scale,) = kinds(events, "scale_lr")
    lrs = {e["step"]: e["lr"]["gpt/body"] for e in kinds(events, "step")}  # step n ran with the LR of index n - 1
    assert scale["step"] == 8 and lrs[8] == pytest.approx(1e-3 * lr_factor(7, 20))
    assert lrs[9] == pytest.approx(1e-4 * lr_factor(8, 20)) and lrs[12] == pytest.approx(1e-4 * lr_factor(11, 20))
    (stop,) = kinds(events, "stop")
    assert stop["step"] == 12 and stop["reason"] == "no improvement for 1 check"
    assert kinds(events, "end")[-1]["detail"] == "scripted: no improvement for 1 check"

    manifest = Manifest.read(run / "manifest.json", "val_ce")
    best_val = min(kinds(events, "val"), key=lambda v: v["value"])
    assert manifest.best.step == best_val["step"]
    info = json.loads((run / "export" / "info.json").read_text())
    assert (info["file"], info["step"], info["metric"]) == (manifest.best.file, best_val["step"], pytest.approx(best_val["value"]))
    best = torch.load(run / manifest.best.file, weights_only=True)["models"]["gpt"]
    exported = torch.load(run / "export" / "gpt.pt", weights_only=True)
    assert all(torch.equal(exported[k], v) for k, v in best.items())
