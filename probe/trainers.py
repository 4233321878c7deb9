"""Whose trainer a table row, plan or estimate is for (torch-free: the plan path imports it).

  advisor     our `advisor train`
  gpt-sovits  GPT-SoVITS's own s1_train.py / s2_train.py (estimated by probe/upstream.py)
"""

from __future__ import annotations

from trainer.recipe import UPSTREAM_BATCHES_PER_STEP as S1_ACCUMULATION  # noqa: F401 (GPT-SoVITS's s1: a step every 4 batches)

TRAINERS = ("advisor", "gpt-sovits")


def check_trainer(trainer: str) -> str:
    if trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}: expected advisor (our `advisor train`) or gpt-sovits (GPT-SoVITS's s1_train.py / s2_train.py)")
    return trainer
