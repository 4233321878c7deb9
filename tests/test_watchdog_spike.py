"""NaN / spike policy: skip, cut the LR on repeats, roll back when persistent.

Losses come from a real tiny s1 model where the values matter (a poisoned
parameter gives a real non-finite loss and gradient norm)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advisor.watchdog.spike import RollingStats, SpikeConfig, SpikePolicy
from trainer.optim import grad_norm
from trainer.policy import StepInfo
from trainer.workloads import get_workload


def info(i: int, loss: float, grad: float = 1.0, lr: float = 1e-3) -> StepInfo:
    return StepInfo(step=i, epoch=0, loss=loss, losses={"total": loss}, grad_norm=grad, lr=lr)


def warm(policy: SpikePolicy, n: int = 80, seed: int = 0) -> int:
    """Feed `n` ordinary steps (loss ~ 2.0 +- 0.05, grad ~ 1.0 +- 0.1); return the next index."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        assert policy.on_step(info(i, 2.0 + rng.normal(0, 0.05), 1.0 + rng.normal(0, 0.1))) == []
    return n


def actions(decisions) -> list[str]:
    return [d.action for d in decisions]


def real_nonfinite_step() -> tuple[float, float]:
    """(loss, grad norm) of a real tiny s1 step whose output head was poisoned with inf."""
    torch.manual_seed(0)
    w = get_workload("s1", size="tiny")
    models = w.build("cpu")
    batch = w.synthetic_batch(2, 1.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        list(models.parameters())[-1].fill_(math.inf)  # the output head: every logit goes non-finite
    result = w.forward_backward(models, batch, "fp32")
    norm = float(grad_norm([p for p in models.parameters() if p.grad is not None]))
    return result.losses["total"], norm


def test_real_non_finite_loss_is_skipped():
    loss, norm = real_nonfinite_step()
    assert not math.isfinite(loss) and not math.isfinite(norm)
    policy = SpikePolicy()
    [d] = policy.on_step(info(0, loss, norm))
    assert d.action == "skip_step" and d.policy == "spike"
    assert d.reason.startswith(f"loss is {loss}: step skipped (1 bad in the last 100 batches)")
    assert len(policy.loss_stats) == 0  # bad values never enter the window


def test_non_finite_gradient_alone_is_skipped_unless_a_grad_scaler_handles_it():
    assert actions(SpikePolicy().on_step(info(0, 2.0, math.inf))) == ["skip_step"]
    scaled = SpikePolicy(grad_scaler=True)  # fp16: the GradScaler skips overflowed steps itself
    assert scaled.on_step(info(0, 2.0, math.inf)) == []
    assert actions(scaled.on_step(info(1, math.nan, math.nan))) == ["skip_step"]  # a non-finite loss still counts


def test_spike_over_six_sigma_is_skipped_only_once_active():
    early = SpikePolicy()
    for i in range(63):  # fewer than min_samples: no spike test yet
        early.on_step(info(i, 2.0 + 0.01 * (i % 3)))
    assert early.on_step(info(63, 50.0)) == []  # 64th value; the window held only 63 before it
    policy = SpikePolicy()
    i = warm(policy)
    mean, std = policy.loss_stats.mean_std()
    assert policy.on_step(info(i, mean + 5.9 * std)) == []  # under 6 sigma: fine
    [d] = policy.on_step(info(i + 1, mean + 6.5 * std + 0.5))
    assert d.action == "skip_step" and "loss" in d.reason and "spiked above" in d.reason


def test_gradient_norm_spike_is_skipped():
    policy = SpikePolicy()
    i = warm(policy)
    assert actions(policy.on_step(info(i, 2.0, 25.0))) == ["skip_step"]
    assert SpikePolicy(SpikeConfig(watch_grad_norm=False)).on_step(info(0, 2.0, 25.0)) == []


def test_min_jump_guards_a_near_constant_loss():
    policy = SpikePolicy()
    for i in range(80):
        policy.on_step(info(i, 2.0 + 1e-6 * (i % 2)))
    assert policy.on_step(info(80, 2.1)) == []  # 1e5 sigma, but only 5 % above the mean
    assert actions(policy.on_step(info(81, 2.3))) == ["skip_step"]  # 15 % above


def test_repeated_bad_steps_cut_the_lr_then_persistent_ones_roll_back():
    policy = SpikePolicy()
    i = warm(policy)
    seen = []
    for k in range(6):  # six non-finite losses in a row
        seen.append(policy.on_step(info(i + k, math.nan, math.nan, lr=1e-3)))
    assert [actions(d) for d in seen] == [
        ["skip_step"],
        ["skip_step"],
        ["skip_step", "scale_lr"],  # 3rd bad step: cut
        ["skip_step"],  # at most one cut per memory window
        ["skip_step"],
        ["rollback", "scale_lr"],  # 6th: roll back, then cut the reloaded LR
    ]
    assert seen[2][1].factor == 0.5
    rollback, cut = seen[5]
    assert rollback.skip_batches == 6  # the offending batches: first bad one to this one
    assert rollback.details["first_bad_step"] == i and rollback.details["last_bad_step"] == i + 5
    assert cut.factor == 0.5 and "after rollback 1" in cut.reason
    assert policy.rollbacks == 1 and len(policy.bad) == 0


def test_rollback_skips_from_the_checkpoint_past_the_bad_batches():
    """The loop reloads the checkpoint, then skips skip_batches: it must land past the bad batches."""
    policy = SpikePolicy(SpikeConfig(max_rollbacks=5))
    i = warm(policy, 70)
    policy.on_checkpoint()  # the loop checkpoints here (batch position c)
    assert policy.state_dict() == policy.state_dict()  # and reading the state changes nothing
    i = warm(policy, 30, seed=1) + i  # 30 clean batches after the checkpoint
    outs = [policy.on_step(info(i + k, math.nan)) for k in range(6)]
    rollback = outs[-1][0]
    assert rollback.action == "rollback"
    assert rollback.skip_batches == 36  # c + 36 = just past the 6th bad batch
    assert rollback.details["bad_span"] == 6
    # resumed at c + 36; 10 clean batches, then the trouble again: skip from the same checkpoint
    for k in range(10):
        assert policy.on_step(info(200 + k, 2.0)) == []
    outs = [policy.on_step(info(210 + k, math.inf)) for k in range(6)]
    assert outs[-1][0].action == "rollback" and outs[-1][0].skip_batches == 36 + 10 + 6
    policy.on_checkpoint()  # a new checkpoint resets the count
    outs = [policy.on_step(info(300 + k, math.nan)) for k in range(6)]
    assert outs[-1][0].skip_batches == 6


def test_sparse_bad_steps_are_forgotten_after_memory():
    policy = SpikePolicy(SpikeConfig(memory=20))
    i = warm(policy)
    for k in range(10):  # a bad step every 10 batches: at most 2 in any 20
        out = policy.on_step(info(i + 10 * k, math.inf))
        assert actions(out) == ["skip_step"]
        for j in range(1, 10):
            policy.on_step(info(i + 10 * k + j, 2.0))


def test_stops_after_max_rollbacks():
    policy = SpikePolicy(SpikeConfig(cut_after=1, rollback_after=2, max_rollbacks=2, min_lr_fraction=0.0))
    outs = [actions(policy.on_step(info(k, math.nan))) for k in range(6)]
    assert outs == [
        ["skip_step", "scale_lr"],
        ["rollback", "scale_lr"],
        ["skip_step"],  # the cut waits for the memory window
        ["rollback", "scale_lr"],
        ["skip_step"],
        ["skip_step", "stop"],  # the step that stops the run is not taken either
    ]


def test_lr_cut_respects_the_floor():
    policy = SpikePolicy(SpikeConfig(cut_after=1, rollback_after=100, memory=100, min_lr_fraction=0.3))
    policy.on_step(info(0, 2.0, lr=1e-3))  # peak LR 1e-3 -> floor 3e-4
    [_, cut] = policy.on_step(info(1, math.nan, lr=4e-4))
    assert cut.factor == pytest.approx(0.75)  # 4e-4 -> 3e-4, not 2e-4
    policy.last_cut_call = None
    assert actions(policy.on_step(info(2, math.nan, lr=3e-4))) == ["skip_step"]  # at the floor: no cut


def test_state_round_trip_continues_the_ladder():
    a = SpikePolicy()
    i = warm(a)
    a.on_step(info(i, math.nan))
    a.on_step(info(i + 1, math.nan))
    b = SpikePolicy()
    b.load_state_dict(a.state_dict())
    assert b.loss_stats.mean_std() == pytest.approx(a.loss_stats.mean_std())
    assert actions(b.on_step(info(i + 2, math.nan))) == ["skip_step", "scale_lr"]  # the 3rd bad step
    with pytest.raises(ValueError, match="lacks"):
        b.load_state_dict({"calls": 1})


def test_rolling_stats_match_numpy_over_a_long_stream():
    rng = np.random.default_rng(1)
    stats = RollingStats(128)
    values = 1000.0 + rng.normal(0, 0.01, 5000)  # large mean, tiny spread: running sums would drift
    for v in values:
        stats.add(float(v))
    mean, std = stats.mean_std()
    assert mean == pytest.approx(values[-128:].mean(), rel=1e-12)
    assert std == pytest.approx(values[-128:].std(ddof=1), rel=1e-3)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"window": 1}, "window"),
        ({"min_samples": 200}, "min_samples"),
        ({"sigmas": 0}, "sigmas"),
        ({"min_jump": -0.1}, "min_jump"),
        ({"watch_grad_norm": "yes"}, "watch_grad_norm"),
        ({"cut_after": 4, "rollback_after": 3}, "rollback_after"),
        ({"rollback_after": 200}, "rollback_after"),
        ({"factor": 1.5}, "factor"),
        ({"max_rollbacks": -1}, "max_rollbacks"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"watchdog.spike.{field}"):
        SpikeConfig(**kwargs)
