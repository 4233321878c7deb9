"""Length buckets (trainer/data/buckets.py): bounds, the plan value, the epoch's steps."""

import json
import math
import random

import pytest

from trainer.data.buckets import (
    BucketPlan,
    assign,
    choose_bounds,
    epoch_padding,
    epoch_plan,
    make_plan,
    micro_batches,
    seconds_to_frames,
    share,
)
from trainer.sizing import accumulation


def mix(n=300, seed=0):
    """4-12 s (lognormal, median 6 s) plus 2 % at 20-30 s, in frames."""
    rng = random.Random(seed)
    long = max(1, n // 50)
    seconds = [min(12.0, max(4.0, rng.lognormvariate(math.log(6), 0.3))) for _ in range(n - long)]
    seconds += [rng.uniform(20, 30) for _ in range(long)]
    rng.shuffle(seconds)
    return [seconds_to_frames(s) for s in seconds]


def plan_for(frames, effective=8, world=1, micro=(12, 8, 6, 4, 4, 3, 2, 2)):
    bounds = choose_bounds(frames, max_buckets=8, min_clips=effective)
    return make_plan(frames, bounds, list(micro[: len(bounds)]) + [1] * (len(bounds) - len(micro)), effective, world)


def test_bounds_are_real_lengths_and_every_clip_fits_its_bucket():
    frames = mix()
    bounds = choose_bounds(frames, max_buckets=6, min_clips=8)
    assert bounds == sorted(bounds) and bounds[-1] == max(frames) and set(bounds) <= set(frames)
    where = assign(frames, bounds)
    for f, b in zip(frames, where):
        assert f <= bounds[b] and (b == 0 or f > bounds[b - 1])
    assert min(where.count(b) for b in range(len(bounds))) >= 8


def test_bounds_cut_padding_and_respect_the_limits():
    frames = mix()
    one = sum(max(frames) - f for f in frames)
    bounds = choose_bounds(frames, max_buckets=8, min_clips=8)
    padded = sum(bounds[b] - f for f, b in zip(frames, assign(frames, bounds)))
    assert padded < one / 5
    assert len(choose_bounds(frames, max_buckets=2)) == 2
    assert choose_bounds([100] * 10, max_buckets=8) == [100]  # nothing to gain: one bucket
    assert choose_bounds([50, 60, 70], min_clips=10) == [70]  # fewer clips than min_clips: one bucket


def test_two_clusters_get_two_buckets():
    frames = [200] * 30 + [205] * 30 + [1400] * 10
    assert choose_bounds(frames, max_buckets=8, min_clips=5) == [205, 1400]  # 200 vs 205: not worth a bucket


def test_bad_lengths_and_bounds_are_refused():
    with pytest.raises(ValueError, match="clip 1: length 0"):
        choose_bounds([10, 0])
    with pytest.raises(ValueError, match="clip 1 is 90 frames, longer than the last bucket bound"):
        assign([10, 90], [50])
    with pytest.raises(ValueError, match="strictly ascending"):
        assign([10], [50, 50])


def test_same_effective_batch_in_every_bucket():
    plan = plan_for(mix(), effective=16, world=2)
    for i, b in enumerate(plan.buckets):
        acc = plan.accumulation(i)
        assert acc == accumulation(16, b.micro, 2)
        assert (acc - 1) * b.micro < 16 // 2 <= acc * b.micro  # the micro-steps cover one rank's share exactly
    steps = epoch_plan(plan, seed=0, epoch=0)
    assert {len(s.clips) for s in steps} == {16}  # every step: the effective batch
    assert {i for s in steps for i in s.clips} == set(range(plan.clips))
    repeats = sum(len(s.clips) for s in steps) - plan.clips
    assert repeats == sum(-len(b.clips) % 16 for b in plan.buckets)  # only the last step of a bucket is filled up
    for s in steps:
        assert len(set(s.clips)) == len(s.clips)  # a bucket of >= 16 clips never repeats one inside a step


def test_epoch_plan_is_a_pure_function_of_seed_and_epoch():
    plan = plan_for(mix())
    assert epoch_plan(plan, 3, 5) == epoch_plan(BucketPlan.from_json(json.loads(json.dumps(plan.to_json()))), 3, 5)
    assert epoch_plan(plan, 3, 5) != epoch_plan(plan, 3, 6) != epoch_plan(plan, 4, 5)
    steps = epoch_plan(plan, 0, 0)
    assert {i for s in steps for i in s.clips} == set(range(plan.clips))  # every clip, every epoch
    for s in steps:
        b = plan.buckets[s.bucket]
        assert set(s.clips) <= set(b.clips)
        lengths = [dict(zip(b.clips, b.frames))[i] for i in s.clips]
        assert lengths == sorted(lengths, reverse=True)  # longest first: micro-batches of similar lengths


def test_ddp_ranks_take_equal_shares_of_the_same_step():
    plan = plan_for(mix(301), effective=12, world=3)
    steps = epoch_plan(plan, 1, 0)
    for s in steps:
        shares = [share(s.clips, r, 3) for r in range(3)]
        assert len({len(x) for x in shares}) == 1
        assert sorted(i for x in shares for i in x) == sorted(s.clips)
    assert {i for s in steps for i in s.clips} == set(range(plan.clips))
    with pytest.raises(ValueError, match="rank 3"):
        share([1, 2, 3], 3, 3)
    with pytest.raises(ValueError, match="cannot be shared equally by 3"):
        plan_for(mix(), effective=8, world=3)


def test_a_bucket_smaller_than_the_batch_fills_its_step_with_its_own_clips():
    plan = make_plan([100, 100, 100, 500, 510], [100, 510], [4, 4], effective=4)
    steps = epoch_plan(plan, 0, 0)
    long = [s for s in steps if s.bucket == 1]
    assert len(long) == 1 and sorted(set(long[0].clips)) == [3, 4] and len(long[0].clips) == 4


def test_micro_batches_cut_a_share_in_order():
    assert micro_batches([5, 4, 3, 2, 1], 2) == [[5, 4], [3, 2], [1]]
    assert [len(m) for m in micro_batches(list(range(17)), 16)] == [9, 8]  # not 16 + 1
    assert micro_batches(list(range(6)), 6) == [list(range(6))]


def test_json_round_trip_and_named_errors():
    plan = plan_for(mix(), effective=8).halved(0)
    data = json.loads(json.dumps(plan.to_json()))
    assert BucketPlan.from_json(data) == plan
    bad = json.loads(json.dumps(data))
    bad["buckets"][1]["micro"] = "4"
    with pytest.raises(ValueError, match=r"bucket plan.buckets\[1\].micro: '4', expected an integer"):
        BucketPlan.from_json(bad)
    bad = json.loads(json.dumps(data))
    bad["buckets"][0]["frames"][0] = 10**6
    with pytest.raises(ValueError, match=r"buckets\[0\]: a clip of 1000000 frames is longer than its bound"):
        BucketPlan.from_json(bad)
    with pytest.raises(ValueError, match="version"):
        BucketPlan.from_json({**data, "version": 9})


def test_an_oom_halves_one_bucket_and_a_restart_caps_all():
    plan = plan_for(mix(), effective=8, micro=(8, 6, 4, 4, 3, 2, 2, 2))
    before = [b.micro for b in plan.buckets]
    last = len(plan) - 1
    halved = plan.halved(last)
    assert [b.micro for b in halved.buckets] == before[:-1] + [max(1, before[-1] // 2)]
    assert halved.accumulation(last) >= plan.accumulation(last) and halved.effective == plan.effective
    assert plan.micro(last) == before[-1]  # a value: the old plan is unchanged
    assert BucketPlan.from_json(halved.to_json()) == halved  # remembered in checkpoints
    assert [b.micro for b in plan.shifted(1).buckets] == [max(1, m >> 1) for m in before]
    assert [b.micro for b in plan.capped(3).buckets] == [min(m, 3) for m in before]
    one = plan.with_micro(0, 1)
    assert one.halved(0) == one  # nothing left to halve


def test_bucket_of_agrees_with_assign():
    frames = mix()
    bounds = choose_bounds(frames, min_clips=8)
    plan = make_plan(frames, bounds, [4] * len(bounds), effective=8)
    assert [plan.bucket_of(i) for i in range(len(frames))] == assign(frames, bounds)
    with pytest.raises(KeyError, match="clip 9999"):
        plan.bucket_of(9999)


def test_micro_batch_never_exceeds_a_share():
    frames = mix()
    plan = make_plan(frames, [max(frames)], [64], effective=8, world=2)
    assert plan.micro(0) == 4 and plan.accumulation(0) == 1


def test_buckets_compute_few_padded_frames():
    frames = mix(1000)
    bucketed = epoch_padding(plan_for(frames, effective=16))
    one = epoch_padding(make_plan(frames, [max(frames)], [16], 16))
    assert bucketed.useful_fraction >= 0.9 > one.useful_fraction
    assert min(bucketed.useful, one.useful) >= sum(frames)  # every clip (a few twice: filled last steps)
