"""trainer/sizing.py: accumulation, the default effective batch and slice shapes, one source
each; and the callers that used to compute them by hand (the OOM policy, the run spec,
`advisor train`'s batch line, the loader, the workloads' synthetic batches)."""

from __future__ import annotations

import math

import pytest

from advisor.launch import Launch, RunSpec, describe_batch
from advisor.watchdog.oom import OOMPolicy
from trainer.checks import check_slice_seconds
from trainer.config import TrainConfig, apply_overrides
from trainer.data.buckets import Bucket, BucketPlan
from trainer.data.collate import padded_sizes
from trainer.data.dataset import PrepareConfig
from trainer.data.slicer import SlicerConfig
from trainer.loop.parts import bucket_plan_for
from trainer.policy import OOMInfo
from trainer.sizing import accumulation, effective_batch, slice_shape
from trainer.workloads import get_workload


def test_accumulation_is_the_largest_share_per_process_in_micro_batches():
    # (effective, micro, world) -> micro-steps on each process
    assert accumulation(16, 4) == 4 and accumulation(15, 4) == 4 and accumulation(1, 4) == 1
    assert accumulation(16, 2, world=2) == 4  # 8 samples per rank
    assert accumulation(15, 2, world=2) == 4  # rank 0 takes 8 of 15
    assert accumulation(15, 4, world=2) == 2
    for e in range(1, 40):  # one process: the three formulas it replaces agree with it
        for m in range(1, 9):
            assert accumulation(e, m) == math.ceil(e / m) == -(-e // m)


def config(**overrides) -> TrainConfig:
    return apply_overrides(TrainConfig(), overrides)


def test_the_default_effective_batch_is_micro_x_processes_x_the_recipes_batches_per_step():
    assert effective_batch(config(**{"batch.micro": 3})) == 3
    assert effective_batch(config(**{"batch.micro": 3}), world=2) == 6
    assert effective_batch(config(**{"batch.micro": 3, "batch.effective": 5}), world=2) == 5
    upstream = config(workload="s1", recipe="gpt-sovits", **{"batch.micro": 3})
    assert effective_batch(upstream) == 12 and effective_batch(upstream, world=2) == 24  # a step every 4 batches


def test_an_oom_restart_cap_keeps_the_recipes_effective_batch():
    """The run spec's micro-batch cap after an OOM death fixes the effective batch the loop would
    have taken: with GPT-SoVITS's s1 recipe that is 4 x micro, not micro."""
    spec = RunSpec(config(workload="s1", recipe="gpt-sovits", **{"batch.micro": 4}), None, Launch(oom_restarts=1))
    cfg = spec.trainer_config(world_size=2)
    assert (cfg.batch.micro, cfg.batch.effective) == (2, 32)
    line = describe_batch(config(workload="s1", recipe="gpt-sovits", **{"batch.micro": 4}), {"source": "flag"})
    assert line.startswith("micro-batch 4 x 4 accumulation = effective 16 ")


def test_an_oom_restart_cap_on_a_bucketed_run_keeps_the_plans_effective_batch():
    """After an OOM death of a run with length buckets, the restarted child caps every bucket's
    micro-batch and keeps the plan's effective batch; it sets no batch.effective (which a
    bucketed run refuses to change: the restart in CI died on that)."""
    plan = BucketPlan((Bucket(100, (0, 1), (90, 100), 4), Bucket(300, (2,), (300,), 4)), effective=8)
    spec = RunSpec(config(workload="s1", **{"batch.micro": 4}), None, Launch(micro_cap=2, buckets=plan.to_json()))
    cfg = spec.trainer_config()
    assert (cfg.batch.micro, cfg.batch.effective) == (2, None)
    capped = bucket_plan_for(spec.bucket_plan(), cfg, world=1)
    assert capped.effective == 8 and [b.micro for b in capped.buckets] == [2, 2]


def test_the_oom_policy_counts_accumulation_per_process():
    info = OOMInfo(step=3, micro_batch=4, accumulation=2, effective_batch=16, error="CUDA out of memory", world=2)
    (d,) = OOMPolicy().on_oom(info)
    assert (d.micro_batch, d.details["accumulation"], d.details["effective_batch"]) == (2, 4, 16)
    assert "micro-batch 2 x 4 " in d.reason


def test_slice_shapes_come_from_one_function():
    assert slice_shape(10) == (250, 500, 120) and slice_shape(10).frames == 500
    assert slice_shape(0.01) == (1, 2, 1)  # at least 1 token, 2 frames, 1 phoneme
    assert padded_sizes(3.3) == tuple(slice_shape(3.3)) == (82, 165, 40)
    T, F, P = slice_shape(1.5)
    s1 = get_workload("s1", size="tiny").synthetic_batch(2, 1.5)
    assert s1["semantic_ids"].shape == (2, T) and s1["phoneme_ids"].shape == (2, P)
    s2 = get_workload("s2", size="tiny").synthetic_batch(2, 1.5)
    assert s2["ssl"].shape[-1] == F and s2["wav"].shape[-1] == F * 640 and s2["phoneme_ids"].shape == (2, P)
    with pytest.raises(ValueError, match=r"slice seconds 55 is outside \(0, 54\]"):
        slice_shape(55)


def test_the_slice_length_is_checked_in_one_place():
    assert check_slice_seconds("2.5") == 2.5
    with pytest.raises(ValueError, match=r"^slice seconds 0 is outside \(0, 54\]$"):
        check_slice_seconds(0)
    with pytest.raises(ValueError, match=r"^--slice-seconds 1 is outside \[2, 54\]$"):
        PrepareConfig(list_path="x.list", out="out", slice_seconds=1.0)
    with pytest.raises(ValueError, match=r"^--seconds 60 is outside \[2, 54\]$"):
        SlicerConfig(max_seconds=60.0)
    with pytest.raises(ValueError, match=r"^--seconds 'ten' is not a number: expected a value in \[2, 54\]$"):
        SlicerConfig(max_seconds="ten")
