"""Prepare throughput on CPU: audio-seconds prepared per wall second (built-in features).

    /work/venv/bin/python -m pytest benchmarks/bench_prepare.py --benchmark-only -q

The input is `advisor demo-data` (16 clips, 82 s of 32 kHz audio, en + zh).
"fresh" runs everything (decode, checks, phonemes, log-mel projection, s2
quantiser, clip files); "rerun" is the idempotent pass that reuses every clip.
"""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch

from trainer.data.dataset import PrepareConfig, prepare
from trainer.data.demo import make_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    summary = make_demo(folder, voice="synthetic")
    return folder / "demo.list", summary["seconds"]["total"]


def _record(benchmark, audio_seconds: float) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["audio_seconds"] = audio_seconds
    benchmark.extra_info["audio_seconds_per_second"] = round(audio_seconds / mean, 2)
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()


def test_prepare_fresh(benchmark, demo, tmp_path):
    list_path, audio_seconds = demo
    counter = itertools.count()

    def fresh_out():
        out = tmp_path / f"ds{next(counter)}"
        shutil.rmtree(out, ignore_errors=True)
        return (PrepareConfig(list_path, out),), {}

    result = benchmark.pedantic(prepare, setup=fresh_out, rounds=3, iterations=1)
    assert result.computed == 16
    _record(benchmark, audio_seconds)


def test_prepare_rerun_reuses(benchmark, demo, tmp_path):
    list_path, audio_seconds = demo
    config = PrepareConfig(list_path, tmp_path / "ds")
    prepare(config)
    result = benchmark.pedantic(prepare, args=(config,), rounds=5, iterations=1)
    assert result.reused == 16
    _record(benchmark, audio_seconds)
