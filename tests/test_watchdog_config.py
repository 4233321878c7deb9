"""WatchdogConfig and default_policies: the policies honour the Policy contract."""

from __future__ import annotations

import json
import math

import pytest

from advisor.watchdog import (
    EarlyStopConfig,
    OscillationConfig,
    WatchdogConfig,
    default_policies,
)
from trainer.policy import ACTIONS, OOMInfo, Policy, StepInfo, ValInfo


def test_default_policies_in_order_with_unique_names():
    policies = default_policies()
    assert [p.name for p in policies] == ["oom", "spike", "oscillation", "early_stop"]


def test_none_turns_a_policy_off():
    policies = default_policies(WatchdogConfig(oscillation=None, early_stop=None))
    assert [p.name for p in policies] == ["oom", "spike"]


def test_precision_fp16_tells_the_spike_policy_about_the_grad_scaler():
    spike = {p.name: p for p in default_policies(precision="fp16")}["spike"]
    assert spike.grad_scaler
    assert not {p.name: p for p in default_policies()}["spike"].grad_scaler


def test_advice_reaches_the_oom_policy():
    [oom] = default_policies(WatchdogConfig(spike=None, oscillation=None, early_stop=None), advice=lambda: "use 5 s slices")
    [d] = oom.on_oom(OOMInfo(step=3, micro_batch=1, accumulation=2, effective_batch=2, error="CUDA out of memory"))
    assert d.action == "stop" and d.reason.endswith("use 5 s slices")


def test_every_policy_answers_every_moment_and_its_state_is_json():
    """The loop calls the moments on every policy (on_step, on_val, on_oom here; on_checkpoint before
    each save) and saves state_dict into checkpoints."""
    for policy in default_policies():
        out = policy.on_step(StepInfo(step=0, epoch=0, loss=math.nan, losses={}, grad_norm=math.nan, lr=1e-3))
        out += policy.on_val(ValInfo(step=0, epoch=0, metric_name="val_ce", value=1.0))
        out += policy.on_oom(OOMInfo(step=0, micro_batch=4, accumulation=1, effective_batch=4, error="oom"))
        assert all(d.action in ACTIONS and d.policy == policy.name and d.reason for d in out)
        state = json.loads(json.dumps(policy.state_dict()))
        fresh = [p for p in default_policies() if p.name == policy.name][0]
        fresh.load_state_dict(state)
        assert fresh.state_dict() == state


def test_every_policy_is_a_policy_whose_handlers_are_the_loop_moments():
    """Composer's rule: the handlers a policy can override are exactly the documented moments."""
    from advisor.child import StopRequest

    handlers = sorted(n for n in vars(Policy) if n.startswith("on_"))
    assert handlers == sorted(Policy.MOMENTS)
    for policy in [*default_policies(), StopRequest()]:
        assert isinstance(policy, Policy), type(policy).__name__
        extra = sorted(n for n in dir(policy) if n.startswith("on_") and n not in Policy.MOMENTS)
        assert extra == [], f"{type(policy).__name__} has handlers the loop never calls: {extra}"
        before = json.dumps(policy.state_dict(), sort_keys=True)
        assert json.dumps(policy.state_dict(), sort_keys=True) == before  # reading state has no side effect


def test_round_trip_through_a_dict():
    config = WatchdogConfig(oscillation=OscillationConfig(window=50), early_stop=None)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["early_stop"] is None and data["oscillation"]["window"] == 50
    assert WatchdogConfig.from_dict(data) == config
    assert WatchdogConfig.from_dict(None) == WatchdogConfig()
    assert WatchdogConfig.from_dict({"early_stop": {"patience": 2}}).early_stop == EarlyStopConfig(patience=2)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"spikes": {}}, "watchdog: unknown section 'spikes'"),
        ({"spike": {"sigma": 6}}, "watchdog.spike: unknown field 'sigma'"),
        ({"spike": 6}, "watchdog.spike: expected a mapping"),
        ({"early_stop": {"patience": -1}}, "watchdog.early_stop.patience: expected an integer >= 1, got -1"),
        ([1], "watchdog: expected a mapping"),
    ],
)
def test_from_dict_errors_name_the_field(data, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        WatchdogConfig.from_dict(data)


def test_wrong_section_type_is_rejected():
    with pytest.raises(ValueError, match="watchdog.spike: expected a SpikeConfig or None"):
        WatchdogConfig(spike=EarlyStopConfig())
