"""What the training tests share: the demo dataset (built once per pytest session) and configs.

Not a test module: `tests/test_train_*.py` import it (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainer.config import TrainConfig, apply_overrides

SLICE_SECONDS = 6.0  # the demo clips are 4.1-5.9 s


def demo_dataset(tmp_path_factory) -> Path:
    """The 16-clip demo (synthetic voice) prepared at 6 s slices: 14 train, 2 val clips."""
    from trainer.data.dataset import PrepareConfig, prepare
    from trainer.data.demo import make_demo

    root = tmp_path_factory.getbasetemp() / "train-demo-dataset"
    dataset = root / "ds"
    if not (dataset / "manifest.json").is_file():
        made = make_demo(root / "demo", voice="synthetic", seed=0)
        prepare(PrepareConfig(list_path=Path(made["list"]), out=dataset, slice_seconds=SLICE_SECONDS))
    return dataset


def tiny_config(dataset: Path, **overrides) -> TrainConfig:
    """A tiny-model CPU config on `dataset`; overrides are dotted fields ("batch.micro": 2)."""
    base = {"size": "tiny", "dataset": str(dataset), "device": "cpu", "epochs": 1}
    return apply_overrides(TrainConfig(), {**base, **overrides})


def read_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines() if line]


def kinds(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: tiny models gain nothing from more, and spinning OpenMP
    threads on a shared 2-core machine slow a run down several times over."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
