"""The LR schedule: exact factors at chosen steps (warm-up, cosine, restarts), and its use."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.config import ScheduleConfig
from trainer.optim import OptimizerSet
from trainer.loop.schedule import Schedule, cycle_position, lr_factor


def cosine(t: int, period: int, eta_min: float = 0.0) -> float:
    return eta_min + (1 - eta_min) * (1 + math.cos(math.pi * t / period)) / 2


def test_linear_warm_up_reaches_the_peak_on_its_last_step():
    assert [lr_factor(s, total_steps=100, warmup_steps=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_after_warm_up_over_the_rest_of_the_run():
    # warm-up 10, total 110: the cosine spans the remaining 100 steps
    assert lr_factor(10, 110, 10) == 1.0
    assert lr_factor(35, 110, 10) == cosine(25, 100)  # (1 + cos(pi/4)) / 2
    assert lr_factor(60, 110, 10) == pytest.approx(0.5, abs=1e-15)
    assert lr_factor(85, 110, 10) == cosine(75, 100)
    assert lr_factor(110, 110, 10) == 0.0  # past the end: the floor
    assert lr_factor(500, 110, 10, eta_min=0.1) == 0.1
    assert lr_factor(60, 110, 10, eta_min=0.1) == pytest.approx(0.55, abs=1e-15)


def test_warm_restarts_with_t_mult_two():
    # cycles after warm-up 5: [0, 10), [10, 30), [30, 70), ...
    f = lambda s: lr_factor(s, 1000, warmup_steps=5, t_0=10, t_mult=2, eta_min=0.2)  # noqa: E731
    assert f(5) == 1.0
    assert f(10) == cosine(5, 10, 0.2)
    assert f(14) == cosine(9, 10, 0.2)
    assert f(15) == 1.0  # restart
    assert f(25) == cosine(10, 20, 0.2) == pytest.approx(0.6)
    assert f(35) == 1.0  # second restart
    assert f(74) == cosine(39, 40, 0.2)
    assert f(75) == 1.0
    assert cycle_position(69, 10, 2) == (39, 40)
    assert cycle_position(70, 10, 2) == (0, 80)


def test_warm_restarts_with_equal_cycles():
    assert [lr_factor(s, 100, t_0=4) for s in range(9)] == [cosine(t % 4, 4) for t in range(9)]


def test_constant_keeps_the_peak_after_warm_up():
    assert [lr_factor(s, 10, 2, kind="constant") for s in (0, 1, 2, 9, 50)] == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_schedule_sets_each_group_from_its_peak_and_the_watchdog_scale():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "initial_lr": 1e-3}, {"params": [b], "initial_lr": 4e-4}], lr=1e-3)
    schedule = Schedule(ScheduleConfig(warmup_steps=2), total_steps=12)
    schedule.apply(OptimizerSet({"g": opt}), 0)
    assert [g["lr"] for g in opt.param_groups] == [0.5e-3, 2e-4]
    schedule.scale = 0.5
    schedule.apply(OptimizerSet({"g": opt}), 7)  # t = 5 of 10
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.25e-3, 1e-4])
    restored = Schedule(ScheduleConfig(warmup_steps=2), 12)
    restored.load_state_dict(schedule.state_dict())
    assert restored.scale == 0.5


@pytest.mark.parametrize("new_total", [150, 200, 60])
def test_a_re_plan_continues_from_the_current_factor_and_decays_over_the_new_length(new_total):
    schedule = Schedule(ScheduleConfig(warmup_steps=10, eta_min=0.1), total_steps=100)
    before = schedule.factor(50)
    change = schedule.replan(new_total, 50)
    assert change == {"total_steps": [100, new_total], "lr_factor": before}
    factors = [schedule.factor(s) for s in range(50, new_total + 5)]
    assert factors[0] == before  # no jump at the re-plan
    assert all(b <= a + 1e-12 for a, b in zip(factors, factors[1:]))  # only down from there
    assert schedule.factor(new_total) == pytest.approx(0.1) and schedule.factor(new_total + 4) == pytest.approx(0.1)
    restored = Schedule(ScheduleConfig(warmup_steps=10, eta_min=0.1), total_steps=0)
    restored.load_state_dict(schedule.state_dict())  # the anchor travels in the checkpoint
    restored.total_steps = restored.saved_total
    assert [restored.factor(s) for s in range(50, new_total)] == factors[: new_total - 50]


def test_a_re_plan_leaves_length_independent_schedules_alone():
    for cfg in (ScheduleConfig(kind="constant"), ScheduleConfig(t_0=20), ScheduleConfig(warmup_steps=100)):
        schedule = Schedule(cfg, total_steps=200)
        before = [schedule.factor(s) for s in range(0, 60)]
        schedule.replan(400, 30)
        assert [schedule.factor(s) for s in range(0, 60)] == before and schedule.anchor is None
