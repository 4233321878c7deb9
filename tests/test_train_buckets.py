"""Length buckets in the loop, on real data of mixed lengths (eight 2-3 s clips and one 12 s
outlier), tiny s1, CPU, under the probe's emulated budget:

- a budget the plan was made for (each bucket's micro-batch the largest whose emulated peak
  fits it, the probe's own accounting) runs every bucket without an out-of-memory error;
- a budget 20 % below it: the watchdog halves only the bucket that ran out of memory, the
  other buckets keep their micro-batch, and every step still holds the effective batch;
- a resumed bucketed run continues exactly (same losses as an uninterrupted one);
- each micro-batch is padded to its own longest clip (the useful share of the padded work).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import soundfile as sf
import torch
from check_corpus import speech_like
from train_data import kinds, one_thread, read_events, tiny_config  # noqa: F401 (fixture)

from advisor.dashboard.plain import format_event_line
from advisor.report import write_report
from advisor.watchdog import OOMConfig, OOMPolicy
from probe.memory import emulated_peak
from probe.tracker import EmulatedBudget
from trainer.data.buckets import choose_bounds, epoch_padding, make_plan
from trainer.data.dataset import PrepareConfig, prepare
from trainer.data.loader import PreparedDataset
from trainer.loop import train
from trainer.rundir import RunDir
from trainer.workloads import get_workload

SECONDS = [2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 2.1, 2.9, 12.0]  # the outlier: 12 s
EFFECTIVE = 4


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    lines = []
    for i, s in enumerate(SECONDS):
        sf.write(root / f"c{i}.wav", speech_like(s, seed=i, rate=32000), 32000)
        lines.append(f"{root / f'c{i}.wav'}|spk|en|{'hello there ' * max(1, round(s))}")
    (root / "mixed.list").write_text("\n".join(lines) + "\n")
    prepare(PrepareConfig(list_path=root / "mixed.list", out=root / "ds", slice_seconds=12.5, val_fraction=0.0))
    return root / "ds"


@functools.lru_cache(maxsize=64)
def peak(micro: int, seconds: float) -> int:
    """The emulated live-bytes peak of a tiny s1 step at `micro` clips of `seconds` (the probe's backend)."""
    workload = get_workload("s1", size="tiny")
    torch.manual_seed(0)
    models = workload.build("cpu")
    return emulated_peak(workload, models, workload.make_optimizers(models), workload.synthetic_batch(micro, seconds), "fp32").peak_bytes


@functools.lru_cache(maxsize=4)
def planned(mixed: Path, budget: int):
    """Each bucket's micro-batch: the largest of 1..4 whose emulated peak at the bound fits `budget`
    (memoised: every test of the module plans the same budget once)."""
    frames = PreparedDataset(mixed, "train").lengths
    bounds = choose_bounds(frames, 4, min_clips=1)
    micro = [max([m for m in range(1, EFFECTIVE + 1) if peak(m, b / 50) <= budget] or [1]) for b in bounds]
    return make_plan(frames, bounds, micro, EFFECTIVE)


@pytest.fixture(scope="module")
def budget(mixed) -> int:
    return int(peak(2, 12.0) * 1.02)  # the 12 s bucket fits micro-batch 2, the short ones 4


def config(mixed: Path, **more):
    return tiny_config(mixed, workload="s1", epochs=2, **{"batch.micro": EFFECTIVE, "batch.effective": EFFECTIVE,
                                                          "validation.every_epochs": 0, "schedule.kind": "constant", **more})


def test_the_planned_budget_runs_every_bucket_without_running_out_of_memory(mixed, budget, tmp_path, one_thread):  # noqa: F811
    plan = planned(mixed, budget)
    assert len(plan) >= 2 and plan.micro(0) > plan.micro(len(plan) - 1) >= 2  # the outlier's bucket gets a smaller micro-batch
    assert train(config(mixed), RunDir(tmp_path / "run"), buckets=plan, memory_guard=EmulatedBudget(budget)) == "epochs"
    events = read_events(tmp_path / "run")
    steps = kinds(events, "step")
    assert not kinds(events, "oom") and {s["bucket"] for s in steps} == set(range(len(plan)))
    assert all(s["samples"] == EFFECTIVE and s["micro_batch"] == plan.micro(s["bucket"]) for s in steps)
    assert all(s["micro_batch"] * s["accumulation"] >= EFFECTIVE for s in steps) and all(s["data_wait_s"] >= 0 for s in steps)
    start = kinds(events, "start")[0]
    assert [b["micro_batch"] for b in start["buckets"]] == [b.micro for b in plan.buckets]
    # what users read: the report's bucket table (one row per bucket) and the dashboard's step line
    page = write_report(tmp_path / "run").read_text()
    assert "Length buckets" in page and page.count("<tr><td>") - page.count("<tr><td><b>") >= len(plan)
    assert f"(length bucket {steps[-1]['bucket']})" in format_event_line(steps[-1])


def test_a_budget_20_percent_below_the_plan_recovers_in_the_bucket_that_ran_out(mixed, budget, tmp_path, one_thread):  # noqa: F811
    plan = planned(mixed, budget)
    low = int(budget * 0.8)
    run = tmp_path / "run"
    assert train(config(mixed), RunDir(run), buckets=plan, policies=[OOMPolicy(OOMConfig())], memory_guard=EmulatedBudget(low)) == "epochs"
    events = read_events(run)
    shrinks = kinds(events, "set_micro_batch")
    assert kinds(events, "oom") and shrinks and all("bucket" in s for s in shrinks)
    shrunk = {s["bucket"] for s in shrinks}
    steps = kinds(events, "step")
    untouched = [s for s in steps if s["bucket"] not in shrunk]
    assert untouched and all(s["micro_batch"] == plan.micro(s["bucket"]) for s in untouched)  # the others keep theirs
    assert all(s["samples"] == EFFECTIVE for s in steps)  # the effective batch in every step


def test_a_resumed_bucketed_run_continues_exactly(mixed, budget, tmp_path, one_thread):  # noqa: F811
    plan = planned(mixed, budget)
    assert train(config(mixed), RunDir(tmp_path / "straight"), buckets=plan) == "epochs"
    assert train(config(mixed, max_steps=3, **{"checkpoint.every_steps": 1}), RunDir(tmp_path / "resumed"), buckets=plan) == "max_steps"
    assert train(config(mixed), RunDir(tmp_path / "resumed"), buckets=plan) == "epochs"
    straight, resumed = (kinds(read_events(tmp_path / f), "step") for f in ("straight", "resumed"))
    assert [(e["step"], e["bucket"]) for e in resumed] == [(e["step"], e["bucket"]) for e in straight]  # the same steps, same buckets
    assert [e["losses"]["total"] for e in resumed] == pytest.approx([e["losses"]["total"] for e in straight], rel=1e-5)


def test_micro_batches_are_padded_to_their_own_longest_clip(mixed, budget):
    plan = planned(mixed, budget)
    frames = PreparedDataset(mixed, "train").lengths
    bucketed = epoch_padding(plan)
    padded_to_the_slice = len(frames) * max(frames)  # the same clips, every batch padded to the longest
    assert bucketed.useful_fraction > 0.8 > sum(frames) / padded_to_the_slice


def test_under_torchrun_the_plans_effective_batch_is_per_process_unless_the_user_set_one(mixed, budget):
    """As micro x processes without buckets: 2 ranks step on twice the plan's samples; a
    batch.effective the user gave is kept; batch.micro caps every bucket (an OOM restart)."""
    from trainer.loop.parts import bucket_plan_for

    plan = planned(mixed, budget)
    assert bucket_plan_for(plan, config(mixed, **{"batch.effective": None, "batch.micro": 4}), 2).effective == 2 * plan.effective
    assert bucket_plan_for(plan, config(mixed), 2).effective == EFFECTIVE
    capped = bucket_plan_for(plan, config(mixed, **{"batch.micro": 1}), 1)
    assert {b.micro for b in capped.buckets} == {1} and bucket_plan_for(None, config(mixed), 2) is None
