"""Data ahead of the step: batches loaded and collated in a background thread.

    load = clip_loader(dataset, lambda samples: pad_batch("s2", samples, spectrogram=False))
    with Prefetcher([share(s.clips, rank, world) for s in steps[k:]], load, device, finish=add_spectrogram) as batches:
        for batch in batches:                 # on `device`, in the order of the items
            ...train...; batches.last_wait_s  # seconds this batch kept the consumer waiting

Why threads. A batch is `torch.load` of its clips plus padding (and, for
s2 on the CPU, the spectrogram): ~0.1 s for 8 clips of 7 s, as long as a GPU
step. Loading it between steps leaves the GPU idle for that time. Threads
(2 by default; batch k is loaded by thread k % workers, and delivered in
order) load the next batches while the step runs; torch's file reading,
copies and FFTs release the GIL, so they run beside the training thread on
the other cores. (Worker processes would cost a copy of the dataset object
and a pickled round trip per batch, and would redo the sha256 check once
per worker: PreparedDataset remembers the clips it verified in the process
that loaded them, so here each clip is hashed once per run, on its first
load, and never again on the hot path.)

On CUDA the threads pin each batch (page-locked memory) and the consumer
copies it with `non_blocking=True`, so the copy does not stall the host;
`finish` then runs on the consumer's thread and device (s2:
`add_spectrogram`, the spectrogram on the GPU).

Errors. An exception in the thread is raised in the consumer, at the batch
it belongs to, as the same exception (its traceback from the thread);
`clip_loader` names the clip (file) a load failed on. A thread stops at
its first error. Shutdown: `close()` (or leaving the `with`) stops the
threads, drops what they loaded ahead, and joins them; it is safe to call twice
and from a consumer that stopped early (a step's OOM retry, the end of a
run).

`last_wait_s` / `waits` are the seconds the consumer waited for each batch:
0 in steady state when loading keeps up (the step events' `data_wait_s`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch

Batch = dict[str, torch.Tensor]
Item = TypeVar("Item")
DEPTH = 2  # batches loaded ahead (all threads together)
WORKERS = 2  # loader threads: batch k is loaded by thread k % WORKERS
_POLL_S = 0.1  # how often a blocked thread checks for close()


class Prefetcher(Iterator[Batch]):
    """`load(item)` for each item, about `depth` ahead in `workers` threads; iterate for the
    batches on `device`, in the items' order."""

    def __init__(
        self,
        items: Iterable[Item],
        load: Callable[[Item], Batch],
        device: torch.device | str = "cpu",
        finish: Callable[[Batch], Batch] | None = None,
        depth: int = DEPTH,
        workers: int = WORKERS,
    ) -> None:
        if depth < 1 or workers < 1:
            raise ValueError(f"prefetch depth {depth!r} and workers {workers!r}: expected at least 1 each")
        self.device = torch.device(device)
        self.finish = finish
        self.waits: list[float] = []
        self._load = load
        self._pin = self.device.type == "cuda"
        items = list(items)
        self._count = len(items)
        self._next = 0  # index of the next batch the consumer gets
        # worker w loads items w, w + N, ...: one queue each, read in turn, so order holds
        self._queues: list[queue.Queue] = [queue.Queue(maxsize=max(1, -(-depth // workers))) for _ in range(workers)]
        self._stop = threading.Event()
        self._done = False
        self._threads = [
            threading.Thread(target=self._run, args=(items[w::workers], self._queues[w]), name=f"prefetch-{w}", daemon=True)
            for w in range(workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def alive(self) -> bool:
        """Whether a loader thread is still running."""
        return any(t.is_alive() for t in self._threads)

    @property
    def last_wait_s(self) -> float:
        return self.waits[-1] if self.waits else 0.0

    # --- the threads ------------------------------------------------------------------
    def _run(self, items: list, out: queue.Queue) -> None:
        try:
            for item in items:
                if self._stop.is_set():
                    return
                batch = self._load(item)
                if self._pin:
                    batch = {k: v.pin_memory() if v.device.type == "cpu" else v for k, v in batch.items()}
                if not self._put(out, ("batch", batch)):
                    return
        except BaseException as exc:  # everything reaches the consumer, KeyboardInterrupt included
            self._put(out, ("error", exc))

    def _put(self, out: queue.Queue, message: tuple) -> bool:
        """Queue a message unless closed first; False when closed."""
        while not self._stop.is_set():
            try:
                out.put(message, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    # --- the consumer -----------------------------------------------------------------
    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> Batch:
        if self._done or self._next >= self._count:
            self.close()
            raise StopIteration
        start = time.perf_counter()
        kind, value = self._get(self._next % len(self._queues))
        if kind == "error":
            self.close()
            raise value
        self._next += 1
        self.waits.append(time.perf_counter() - start)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in value.items()}
        return self.finish(batch) if self.finish else batch

    def _get(self, w: int) -> tuple:
        while True:
            try:
                return self._queues[w].get(timeout=_POLL_S)
            except queue.Empty:
                if not self._threads[w].is_alive() and self._queues[w].empty():
                    return ("error", RuntimeError("a prefetch thread ended without its batch or an error"))

    def close(self) -> None:
        """Stop the threads, drop the batches loaded ahead, wait for them to end. Idempotent."""
        self._done = True
        self._stop.set()
        for q in self._queues:  # unblock a thread waiting on a full queue
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def clip_loader(dataset, collate: Callable[[list[dict]], Batch]) -> Callable[[Sequence[int]], Batch]:
    """load(clips) for a Prefetcher: dataset[i] for each clip index, then `collate`. A failure
    names its clip: the dataset's errors name the clip's file already; anything else is raised
    as ValueError "<clip file>: <error>" (collate's: "clips <files>: <error>")."""

    def name(i: int) -> str:
        clips = getattr(dataset, "clips", None)
        root = getattr(dataset, "root", None)
        if clips is not None and root is not None:
            return os.fspath(root / clips[i]["file"])
        return f"clip {i}"

    def load(clips: Sequence[int]) -> Batch:
        samples = []
        for i in clips:
            try:
                samples.append(dataset[i])
            except Exception as exc:
                if name(i) in str(exc):
                    raise
                raise ValueError(f"{name(i)}: {type(exc).__name__}: {exc}") from exc
        try:
            return collate(samples)
        except Exception as exc:
            raise ValueError(f"clips {', '.join(name(i) for i in clips)}: {type(exc).__name__}: {exc}") from exc

    return load
