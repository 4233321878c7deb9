"""Whose trainer a table row, plan or estimate is for (torch-free: the plan path imports it).

  advisor     our `advisor train`
  gpt-sovits  GPT-SoVITS's own s1_train.py / s2_train.py (estimated by probe/upstream.py)
"""

from __future__ import annotations

TRAINERS = ("advisor", "gpt-sovits")
S1_ACCUMULATION = 4  # GPT-SoVITS's s1 steps its optimiser every 4 batches (s1_train.py)


def check_trainer(trainer: str) -> str:
    if trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}: expected advisor (our `advisor train`) or gpt-sovits (GPT-SoVITS's s1_train.py / s2_train.py)")
    return trainer
