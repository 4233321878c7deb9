"""Early stopping on the validation metric, on the seed article's curve."""

from __future__ import annotations

import math

import pytest

from advisor.watchdog.early_stop import EarlyStopConfig, EarlyStopPolicy
from trainer.policy import ValInfo

ARTICLE = [0.72, 0.58, 0.46, 0.41, 0.45, 0.52, 0.61]  # val mel loss at epochs 1, 3, ..., 13


def run(policy: EarlyStopPolicy, values, metric: str = "val_mel_l1", first_check: int = 1):
    """Feed checks (one every 100 steps); return (1-based check, decision) of the first stop."""
    for check, value in enumerate(values, start=first_check):
        decisions = policy.on_val(ValInfo(step=100 * check, epoch=2 * check - 1, metric_name=metric, value=value))
        if decisions:
            [d] = decisions
            return check, d
    return None, None


def test_article_curve_stops_after_the_sixth_check_and_keeps_the_fourth():
    policy = EarlyStopPolicy(EarlyStopConfig(patience=2))
    check, d = run(policy, ARTICLE)
    assert check == 6
    assert d.action == "stop" and d.policy == "early_stop"
    assert (policy.best_check, policy.best_value, policy.best_step) == (4, 0.41, 400)
    assert d.details == {"metric": "val_mel_l1", "best_value": 0.41, "best_step": 400, "best_check": 4, "checks": 6}
    assert "best 0.41 at check 4 (step 400) is the one to keep" in d.reason


def test_patience_three_needs_the_seventh_check():
    check, _ = run(EarlyStopPolicy(EarlyStopConfig(patience=3)), ARTICLE)
    assert check == 7


def test_min_delta_counts_a_tiny_improvement_as_bad():
    values = [0.50, 0.4999, 0.4998, 0.30]
    check, d = run(EarlyStopPolicy(EarlyStopConfig(patience=2, min_delta=1e-3)), values)
    assert check == 3 and d.details["best_check"] == 1
    assert run(EarlyStopPolicy(EarlyStopConfig(patience=2, min_delta=0.0)), values) == (None, None)


def test_an_improvement_resets_the_count():
    values = [0.5, 0.6, 0.4, 0.45, 0.44, 0.46]
    check, d = run(EarlyStopPolicy(EarlyStopConfig(patience=3)), values)
    assert check == 6 and d.details["best_check"] == 3


def test_survives_resume_between_checks():
    first = EarlyStopPolicy(EarlyStopConfig(patience=2))
    assert run(first, ARTICLE[:5]) == (None, None)  # one bad check so far
    resumed = EarlyStopPolicy(EarlyStopConfig(patience=2))
    resumed.load_state_dict(first.state_dict())
    check, d = run(resumed, ARTICLE[5:], first_check=6)
    assert check == 6 and d.details["best_check"] == 4
    assert resumed.is_best(400) and not resumed.is_best(600)
    with pytest.raises(ValueError, match="lacks"):
        resumed.load_state_dict({"checks": 3})


def test_non_finite_metric_stops_at_once():
    check, d = run(EarlyStopPolicy(), [0.7, 0.6, math.nan])
    assert check == 3 and "val_mel_l1 is nan at check 3" in d.reason and d.details["best_check"] == 2
    check, d = run(EarlyStopPolicy(), [math.inf])
    assert check == 1 and "no finite check yet" in d.reason


def test_a_different_metric_is_an_error():
    policy = EarlyStopPolicy()
    run(policy, [0.5], metric="val_ce")
    with pytest.raises(ValueError, match="watches 'val_ce' but validation reported 'val_mel_l1'"):
        run(policy, [0.4], metric="val_mel_l1")


@pytest.mark.parametrize(
    "kwargs, field", [({"patience": 0}, "patience"), ({"patience": 1.5}, "patience"), ({"min_delta": -1}, "min_delta")]
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"watchdog.early_stop.{field}"):
        EarlyStopConfig(**kwargs)
