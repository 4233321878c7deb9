"""The loader alone: s2 v2Pro batches (B = 8, ~7 s clips) delivered while the training thread is busy.

    python -m pytest benchmarks/bench_loader.py --benchmark-only -q

Results: benchmarks/results/buckets.md. Data: 64 clips of 6.5-7.5 s written as
`advisor prepare` writes them (benchmarks/length_mix.py), sha256 already
verified (the first epoch's check is not what is measured), 8 batches of 8 an
epoch. The "training thread" is another thread multiplying 512x512 matrices
without pause (one torch thread, so it holds one of the machine's cores), as a
busy trainer does; the consumer takes batches as fast as they come.
Samples/s of one epoch, three ways, run A B C A B C... so that load from
other jobs falls on all (the benchmark's own timing is one round of all three):

- sync: today's loop: load and collate (slice-padded to 8 s, the spectrogram
  of the padded batch on the CPU) on the consumer's thread, between steps;
- thread+spec: the Prefetcher, each batch padded to its own longest with the
  per-clip spectrogram made in the loader thread (a CPU run);
- thread: the Prefetcher without the spectrogram, what a CUDA run's loader
  thread does (`finish=add_spectrogram` then makes it on the GPU).

The target: 3x 26 samples/s (a 4080 Super trains v2 s2 at batch 14, 1.89
it/s). A second test steps like that GPU (0.31 s of matrix work per batch of 8
on the consumer's thread) and records how long each batch kept it waiting.
"""

from __future__ import annotations

import random
import statistics
import threading
import time

import pytest
import torch

from length_mix import write_prepared
from trainer.data.loader import PreparedDataset
from trainer.workloads import get_workload
from trainer.data.padding import pad_batch
from trainer.data.prefetch import Prefetcher, clip_loader

B, CLIPS, SLICE = 8, 64, 8.0
GPU_STEP_S = B / 26.0  # seconds per batch of 8 at 26 samples/s
ROUNDS = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = random.Random(0)
    root = write_prepared(tmp_path_factory.mktemp("loader") / "ds", [round(rng.uniform(6.5, 7.5), 2) for _ in range(CLIPS)], slice_seconds=SLICE)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    ds = PreparedDataset(root)
    for i in range(len(ds)):
        ds[i]  # the first load checks each file's sha256; later epochs do not
    yield ds
    torch.set_num_threads(before)


class Busy:
    """A thread doing matrix products until stopped: the training thread's load on the CPU."""

    def __enter__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        return self

    def _spin(self):
        a = torch.randn(512, 512)
        while not self.stop.is_set():
            a = torch.tanh(a @ a)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def batches_of(ds) -> list[list[int]]:
    order = list(range(len(ds)))
    random.Random(1).shuffle(order)
    return [order[k : k + B] for k in range(0, len(order), B)]


def sync_epoch(ds) -> float:
    start = time.perf_counter()
    for clips in batches_of(ds):
        get_workload("s2", size="tiny").collate([ds[i] for i in clips], SLICE)
    return CLIPS / (time.perf_counter() - start)


def thread_epoch(ds, spectrogram: bool) -> float:
    load = clip_loader(ds, lambda samples: pad_batch("s2", samples, spectrogram=spectrogram))
    start = time.perf_counter()
    with Prefetcher(batches_of(ds), load, depth=4, workers=2) as batches:
        for _ in batches:
            pass
    return CLIPS / (time.perf_counter() - start)


def test_samples_per_second_while_busy(benchmark, dataset):
    rates: dict[str, list[float]] = {"sync": [], "thread+spec": [], "thread": []}

    def one_round():
        with Busy():
            rates["sync"].append(sync_epoch(dataset))
            rates["thread+spec"].append(thread_epoch(dataset, True))
            rates["thread"].append(thread_epoch(dataset, False))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    for name, values in rates.items():
        benchmark.extra_info[f"{name}_samples_per_s"] = round(statistics.median(values), 1)
        benchmark.extra_info[f"{name}_all"] = [round(v, 1) for v in values]


def test_no_wait_in_steady_state(benchmark, dataset):
    """The consumer steps like the GPU (matrix work for GPU_STEP_S a batch): waits per batch."""
    waits: list[list[float]] = []

    def step():
        a, end = torch.randn(512, 512), time.perf_counter() + GPU_STEP_S
        while time.perf_counter() < end:
            a = torch.tanh(a @ a)

    def epoch():
        load = clip_loader(dataset, lambda samples: pad_batch("s2", samples))  # the CPU run's worst case: spectrogram in the thread
        with Prefetcher(batches_of(dataset), load, depth=2) as batches:
            for _ in batches:
                step()
        waits.append(batches.waits)

    benchmark.pedantic(epoch, rounds=ROUNDS, iterations=1)
    steady = [w for run in waits for w in run[1:]]  # the first batch of an epoch is loaded while nothing else runs
    benchmark.extra_info["first_wait_s"] = round(statistics.median(run[0] for run in waits), 4)
    benchmark.extra_info["steady_wait_median_s"] = round(statistics.median(steady), 4)
    benchmark.extra_info["steady_wait_max_s"] = round(max(steady), 4)
