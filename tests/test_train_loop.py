"""The training loop on real tiny models and the real demo dataset (CPU).

Policies here are small scripted watchdogs (the thing under test is the loop
that applies their decisions), or the real watchdog policies; the memory
guard is the probe's real emulated budget, raising a real
torch.OutOfMemoryError mid-forward; non-finite losses come from the real
model fed NaN inputs.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from train_data import demo_dataset, kinds, one_thread, read_events, tiny_config  # noqa: F401 (fixture)

import trainer.loop.parts
from advisor.watchdog import EarlyStopConfig, EarlyStopPolicy, OOMConfig, OOMPolicy, SpikeConfig, SpikePolicy
from probe.tracker import EmulatedBudget
from trainer.data.batches import Batches
from trainer.loop.checkpoint import Manifest
from trainer.config import apply_overrides
from trainer.data.loader import bucketed_batches
from trainer.data.manifest import run_slice_seconds
from trainer.distributed import Dist
from trainer.loop import train
from trainer.loop.parts import build
from trainer.policy import Decision, Policy
from trainer.rundir import RunDir
from trainer.loop.schedule import lr_factor
from trainer.loop.step import micro_steps
from trainer.workload import split_batch
from trainer.workloads import get_workload, workload_for_config


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
    assert "ar_predict_layer.weight" in gpt


def test_accumulation_gives_the_gradient_of_the_whole_batch(dataset, tmp_path):
    """Micro-batches weighted by their share (3 + 1 samples) sum to the full batch's gradient.

    s1's loss is a mean over tokens, so the batch repeats one real clip: with equal
    lengths the token mean and the sample mean agree and only the weighting is tested."""
    cfg = tiny_config(dataset, workload="s1", **{"batch.micro": 4})
    p = build(cfg, tmp_path, Dist())
    p.models.eval()  # no dropout: the two computations must agree to rounding
    batch = p.workload.collate([p.data.train[0]] * 4, p.data.slice_seconds)

    def gradients(micro: int) -> list[torch.Tensor]:
        p.micro_batch = micro
        sums, error = micro_steps(p, batch, 4, watch=_NoWatch(), memory_guard=None)
        assert error is None and set(sums) >= {"total"}
        return [q.grad.clone() for q in p.models.parameters()]

    whole, split = gradients(4), gradients(3)
    assert len(split_batch(batch, 3)) == 2
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


class _NoWatch:
    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError)


class HalveOnOOM(Policy):
    """The smallest OOM policy: halve the micro-batch."""

    name = "halve"

    def __init__(self) -> None:
        self.calls = 0

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


class Scripted(Policy):
    """Returns the decisions scheduled for a step (on_step) or an epoch (on_val)."""

    name = "scripted"

    def __init__(self, on_step=None, on_val=None) -> None:
        self.step_plan, self.val_plan, self.seen = on_step or {}, on_val or {}, []

    def on_step(self, info):
        self.seen.append(info)
        return self.step_plan.pop(info.step, [])  # once: a step number comes again after a skip or rollback

    def on_val(self, info):
        return self.val_plan.pop(info.epoch, [])


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
        ("checkpoint", 4),  # the rollback's position and settings survive a restart
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


# --- the real watchdog policies on real non-finite losses, OOMs and data ------------------------


class Poisoned:
    """The real workload, with NaN BERT features in the forward/backward calls numbered in
    `bad` (1-based, over the whole run): the real model then gives a real NaN loss and
    NaN gradients. With micro-batch = effective batch, call n is the n-th step attempted."""

    def __init__(self, workload, bad: set[int]) -> None:
        self.workload, self.bad, self.calls = workload, bad, 0

    def __getattr__(self, name: str):
        return getattr(self.workload, name)

    def forward_backward(self, models, batch, *args, **kwargs):
        self.calls += 1
        if self.calls in self.bad:
            batch = {**batch, "bert_features": torch.full_like(batch["bert_features"], math.nan)}
        return self.workload.forward_backward(models, batch, *args, **kwargs)


@pytest.fixture
def poison(monkeypatch):
    """poison({2, 6}): the next run's workload gets NaN inputs in those calls."""

    def install(bad: set[int]) -> None:
        monkeypatch.setattr(trainer.loop.parts, "workload_for_config", lambda cfg: Poisoned(workload_for_config(cfg), bad))

    return install


def final_state(run) -> dict:
    return torch.load(run / Manifest.read(run / "manifest.json", "val_ce").latest.file, weights_only=True)


def test_isolated_nan_is_skipped_persistent_nans_roll_back_with_a_smaller_lr_that_survives(dataset, tmp_path, poison):
    # 4 steps an epoch; a checkpoint every 2 steps and at each epoch end
    run = tmp_path / "run"
    cfg = tiny_config(dataset, workload="s1", epochs=3, **{"batch.micro": 4, "schedule.kind": "constant", "checkpoint.every_steps": 2, "checkpoint.keep_last": 5})
    spike = SpikeConfig(memory=3, cut_after=2, rollback_after=3)
    poison({2, 6, 7, 8})  # step attempts: 2 alone; 6, 7, 8 in a row (the 2nd, 3rd and 4th batches of epoch 2)
    assert train(cfg, RunDir(run), policies=[SpikePolicy(spike)]) == "epochs"

    events = read_events(run)
    sequence = [(e["kind"], e["step"]) for e in events if e["kind"] in ("step", "skip_step", "scale_lr", "rollback", "checkpoint")]
    assert sequence == [
        ("checkpoint", 0),
        ("step", 1),
        ("skip_step", 1),  # isolated: skipped, nothing more
        ("step", 2),
        ("checkpoint", 2),
        ("step", 3),
        ("checkpoint", 3),  # epoch 1 ends
        ("step", 4),
        ("checkpoint", 4),
        ("skip_step", 4),
        ("skip_step", 4),
        ("scale_lr", 4),  # 2 bad in the last 3 batches: LR x 0.5
        ("rollback", 4),  # 3 bad: back to step 4, past the 3 bad batches
        ("scale_lr", 4),  # the cut that came with the rollback, applied after the reload
        ("checkpoint", 4),  # the rollback and its cut, saved
        ("checkpoint", 4),  # epoch 2 ends: the bad batches were its last three
        ("step", 5),
        ("step", 6),
        ("checkpoint", 6),
        ("step", 7),
        ("step", 8),
        ("checkpoint", 8),
    ]
    (rollback,) = kinds(events, "rollback")
    assert (rollback["to_step"], rollback["skip_batches"], rollback["epoch"], rollback["batch"]) == (4, 3, 1, 4)
    assert [e["lr_scale"] for e in kinds(events, "scale_lr")] == [0.5, 0.25]  # the first cut survived the rollback
    assert rollback["lr_scale"] == 0.5
    lrs = [e["lr"]["gpt/body"] for e in kinds(events, "step")]
    assert lrs[4:] == pytest.approx([lrs[0] * 0.25] * 4) and lrs[:4] == pytest.approx([lrs[0]] * 4)
    assert all(math.isfinite(e["losses"]["total"]) for e in kinds(events, "step"))
    assert kinds(events, "end")[-1]["reason"] == "epochs"

    saved = next(e for e in events[events.index(rollback) :] if e["kind"] == "checkpoint")  # written just after the rollback
    after = torch.load(run / saved["file"], weights_only=True)
    assert after["schedule"]["scale"] == 0.25 and (after["position"]["epoch"], after["position"]["batch"]) == (1, 4)
    assert after["policies"]["spike"]["rollbacks"] == 1

    # a resumed run keeps the cut LR
    poison(set())
    assert train(apply_overrides(cfg, {"epochs": 4}), RunDir(run), policies=[SpikePolicy(spike)]) == "epochs"
    events = read_events(run)
    (resume,) = kinds(events, "resume")
    assert resume["from_step"] == 8 and resume["lr_scale"] == 0.25 and not kinds(events, "restart")
    assert [e["lr"]["gpt/body"] for e in kinds(events, "step")][8:] == pytest.approx([lrs[0] * 0.25] * 4)


def test_a_stop_decided_on_a_nan_step_never_applies_it(dataset, tmp_path, poison):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, workload="s1", **{"batch.micro": 4})
    poison({3})
    stop = Scripted(on_step={2: [Decision("stop", "SIGTERM received", "scripted")]})  # the 3rd attempt is step 2
    assert train(cfg, RunDir(run), policies=[stop]) == "stopped"

    events = read_events(run)
    (skip,) = kinds(events, "skip_step")
    assert skip["policy"] == "loop" and skip["step"] == 2 and "not finite" in skip["reason"]
    assert not math.isfinite(stop.seen[-1].loss)
    end = kinds(events, "end")[-1]
    assert (end["step"], end["detail"]) == (2, "scripted: SIGTERM received")
    state = final_state(run)
    assert state["position"]["step"] == 2 and state["position"]["batch"] == 3  # past the bad batch, not stepped on it
    assert all(torch.isfinite(t).all() for t in state["models"]["gpt"].values())
    assert Manifest.read(run / "manifest.json", "val_ce").latest.finite


@pytest.mark.parametrize("rule, factor", [("linear", 0.5), ("sqrt", math.sqrt(0.5))])
def test_oom_in_shrink_mode_halves_the_effective_batch_and_rescales_the_lr(dataset, tmp_path, rule, factor):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, workload="s1", **{"batch.micro": 4, "schedule.kind": "constant"})
    policy = OOMPolicy(OOMConfig(mode="shrink", lr_rule=rule))
    assert train(cfg, RunDir(run), policies=[policy], memory_guard=EmulatedBudget(BUDGET)) == "epochs"

    events = read_events(run)
    assert kinds(events, "start")[0]["effective_batch"] == 4 and kinds(events, "oom")[0]["effective_batch"] == 4
    (resize,) = kinds(events, "set_micro_batch")
    assert (resize["micro_batch"], resize["effective_batch"], resize["previous_effective_batch"], resize["accumulation"]) == (2, 2, 4, 1)
    assert resize["total_steps"] == 7  # the whole epoch, 14 clips, re-planned in batches of 2
    (scale,) = kinds(events, "scale_lr")
    assert scale["factor"] == pytest.approx(factor) and scale["rule"] == rule
    steps = kinds(events, "step")
    assert [e["samples"] for e in steps] == [2] * 7  # every training clip once
    lr = kinds(events, "start")[0]["lr"]["gpt/body"]  # the peak: a constant schedule
    assert all(e["lr"]["gpt/body"] == pytest.approx(lr * factor) for e in steps)
    state = final_state(run)
    assert state["batches"]["changes"] == [[0, 0, 4], [0, 0, 2]] and state["micro_batch"] == 2
    assert state["schedule"]["scale"] == pytest.approx(factor) and state["policies"]["oom"] == {}  # the plan above is the source


def test_oom_in_the_default_mode_keeps_the_effective_batch_and_the_lr(dataset, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, workload="s1", **{"batch.micro": 4, "schedule.kind": "constant"})
    assert train(cfg, RunDir(run), policies=[OOMPolicy()], memory_guard=EmulatedBudget(BUDGET)) == "epochs"
    events = read_events(run)
    (resize,) = kinds(events, "set_micro_batch")
    assert (resize["micro_batch"], resize["effective_batch"], resize["accumulation"]) == (2, 4, 2)
    assert "previous_effective_batch" not in resize and not kinds(events, "scale_lr")
    steps = kinds(events, "step")
    assert sorted(e["samples"] for e in steps) == [2, 4, 4, 4]
    assert {e["lr"]["gpt/body"] for e in steps} == {kinds(events, "start")[0]["lr"]["gpt/body"]}
    assert final_state(run)["batches"]["changes"] == [[0, 0, 4]]


def test_a_run_stopped_after_a_shrink_resumes_exactly(dataset, tmp_path):
    cfg = tiny_config(dataset, workload="s1", epochs=2, **{"batch.micro": 4, "optim.lr.gpt": 1e-3})

    def policies(*extra):
        return [OOMPolicy(OOMConfig(mode="shrink", lr_rule="linear")), *extra]

    straight, stopped = RunDir(tmp_path / "straight"), RunDir(tmp_path / "stopped")
    assert train(cfg, straight, policies=policies(), memory_guard=EmulatedBudget(BUDGET)) == "epochs"
    stop = Scripted(on_step={3: [Decision("stop", "SIGTERM received", "scripted")]})
    assert train(cfg, stopped, policies=policies(stop), memory_guard=EmulatedBudget(BUDGET)) == "stopped"
    assert train(cfg, stopped, policies=policies(), memory_guard=EmulatedBudget(BUDGET)) == "epochs"

    (resume,) = kinds(read_events(stopped.root), "resume")
    assert (resume["micro_batch"], resume["effective_batch"], resume["batch"]) == (2, 2, 4)
    a, b = final_state(straight.root), final_state(stopped.root)
    assert a["position"] == b["position"] and a["position"]["step"] == 14 and a["batches"] == b["batches"]
    for name, tensor in a["models"]["gpt"].items():
        torch.testing.assert_close(tensor, b["models"]["gpt"][name], rtol=1e-5, atol=1e-6, msg=name)
    losses = {e["step"]: e["losses"]["total"] for e in kinds(read_events(straight.root), "step")}
    assert {e["step"]: e["losses"]["total"] for e in kinds(read_events(stopped.root), "step")} == pytest.approx(losses, rel=1e-5)


def test_resize_recuts_the_rest_of_the_epoch_from_the_same_samples(dataset):
    data = Batches(get_workload("s1", size="tiny"), dataset, run_slice_seconds(None, dataset), False, 4, 0, Dist())
    before = data.plan(0)
    assert [len(b) for b in before].count(4) == 3 and data.total_batches(3) == 12
    data.resize(0, 1, 3)
    after = data.plan(0)
    assert after[:1] == before[:1]
    assert sum(after[1:], []) == sum(before[1:], [])  # the same 10 samples in the same order
    assert [len(b) for b in after[1:]] == [3, 3, 3, 1]
    assert data.plan(1) == bucketed_batches(data.train.lengths, 3, 0, 1)  # later epochs: planned with 3
    assert data.effective == 3 and data.steps_per_epoch == 5 and data.total_batches(3) == 5 + 5 + 5

    again = Batches(get_workload("s1", size="tiny"), dataset, run_slice_seconds(None, dataset), False, 4, 0, Dist())
    again.load_state_dict(data.state_dict())
    assert again.plan(0) == after and again.plan(2) == data.plan(2)
    with pytest.raises(ValueError, match="expected changes starting at"):
        again.load_state_dict({"changes": [[1, 0, 2]]})


def test_an_empty_validation_split_skips_validation_and_early_stopping(dataset, tmp_path):
    no_val = tmp_path / "no-val"
    shutil.copytree(dataset, no_val)
    manifest = json.loads((no_val / "manifest.json").read_text())
    for clip in manifest["clips"]:
        clip["splits"] = ["train"]
    (no_val / "manifest.json").write_text(json.dumps(manifest))

    run = tmp_path / "run"
    cfg = tiny_config(no_val, workload="s1", epochs=2, **{"batch.micro": 4})
    assert train(cfg, RunDir(run), policies=[EarlyStopPolicy(EarlyStopConfig(patience=1))]) == "epochs"
    events = read_events(run)
    start = kinds(events, "start")[0]
    assert start["val_clips"] == 0 and start["validation"] is False and start["train_clips"] == 16
    assert not kinds(events, "val") and not kinds(events, "stop")
    assert [e["step"] for e in kinds(events, "step")] == list(range(1, 9))
    assert kinds(events, "export")[-1]["source"] == "latest"


def test_the_latest_finite_checkpoint_outlives_rotation_and_is_what_a_resume_uses(dataset, tmp_path, poison):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, workload="s1", **{"batch.micro": 4, "checkpoint.every_steps": 1, "checkpoint.keep_last": 1})
    poison({3, 4})  # no policy: the NaN gradients reach AdamW and the weights diverge at step 3
    assert train(cfg, RunDir(run)) == "epochs"
    events = read_events(run)
    assert [(c["step"], c["finite"]) for c in kinds(events, "checkpoint")] == [(0, True), (1, True), (2, True), (3, False), (4, False)]
    manifest = Manifest.read(run / "manifest.json", "val_ce")
    assert [(e.step, e.finite) for e in manifest.entries] == [(2, True), (4, False)]  # keep_last 1 + the latest finite
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002.pt", "step_00000004.pt"]
    export = kinds(events, "export")[-1]
    assert (export["source"], export["checkpoint"]) == ("latest_finite", "checkpoints/step_00000002.pt")
    exported = torch.load(run / "export" / "gpt.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in exported.values())

    poison(set())
    assert train(apply_overrides(cfg, {"epochs": 2}), RunDir(run)) == "epochs"
    (resume,) = kinds(read_events(run), "resume")
    assert resume["from_step"] == 2 and resume["skipped"][0]["file"] == "checkpoints/step_00000004.pt"
    assert Manifest.read(run / "manifest.json", "val_ce").latest.finite
