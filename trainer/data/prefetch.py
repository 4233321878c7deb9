"""Data ahead of the step: batches loaded and collated in a background thread.

    load = clip_loader(dataset, lambda samples: pad_batch("s2", samples, spectrogram=False))
    with Prefetcher([share(s.clips, rank, world) for s in steps[k:]], load, device, finish=add_spectrogram) as batches:
        for batch in batches:                 # on `device`, in the order of the items
            ...train...; batches.last_wait_s  # seconds this batch kept the consumer waiting

Why a thread. A batch is `torch.load` of its clips plus padding (and, for
s2 on the CPU, the spectrogram): ~0.1 s for 8 clips of 7 s, as long as a GPU
step. Loading it between steps leaves the GPU idle for that time. A thread
loads the next `depth` batches while the step runs; torch's file reading,
copies and FFTs release the GIL, so it runs beside the training thread on
the other core. (Worker processes would cost a copy of the dataset object
and a pickled round trip per batch, and would redo the sha256 check once
per worker: PreparedDataset remembers the clips it verified in the process
that loaded them.)

On CUDA the thread pins each batch (page-locked memory) and the consumer
copies it with `non_blocking=True`, so the copy does not stall the host;
`finish` then runs on the consumer's thread and device (s2:
`add_spectrogram`, the spectrogram on the GPU).

Errors. An exception in the thread is raised in the consumer, at the batch
it belongs to, as the same exception (its traceback from the thread);
`clip_loader` names the clip (file) a load failed on. The thread stops at
the first error. Shutdown: `close()` (or leaving the `with`) stops the
thread, drops what it loaded ahead, and joins it; it is safe to call twice
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
DEPTH = 2  # batches loaded ahead: one being consumed, one ready, one in progress
_POLL_S = 0.1  # how often a blocked thread checks for close()


class Prefetcher(Iterator[Batch]):
    """`load(item)` for each item, `depth` ahead in a thread; iterate for the batches on `device`."""

    def __init__(
        self,
        items: Iterable[Item],
        load: Callable[[Item], Batch],
        device: torch.device | str = "cpu",
        finish: Callable[[Batch], Batch] | None = None,
        depth: int = DEPTH,
    ) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth {depth!r}: expected at least 1")
        self.device = torch.device(device)
        self.finish = finish
        self.waits: list[float] = []
        self._load = load
        self._pin = self.device.type == "cuda"
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(iter(items),), name="prefetch", daemon=True)
        self._thread.start()

    @property
    def last_wait_s(self) -> float:
        return self.waits[-1] if self.waits else 0.0

    # --- the thread -------------------------------------------------------------------
    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if self._stop.is_set():
                    return
                batch = self._load(item)
                if self._pin:
                    batch = {k: v.pin_memory() if v.device.type == "cpu" else v for k, v in batch.items()}
                if not self._put(("batch", batch)):
                    return
        except BaseException as exc:  # everything reaches the consumer, KeyboardInterrupt included
            self._put(("error", exc))
            return
        self._put(("end", None))

    def _put(self, message: tuple) -> bool:
        """Queue a message unless closed first; False when closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    # --- the consumer -----------------------------------------------------------------
    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> Batch:
        if self._done:
            raise StopIteration
        start = time.perf_counter()
        kind, value = self._get()
        if kind == "end":
            self.close()
            raise StopIteration
        if kind == "error":
            self.close()
            raise value
        self.waits.append(time.perf_counter() - start)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in value.items()}
        return self.finish(batch) if self.finish else batch

    def _get(self) -> tuple:
        while True:
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return ("error", RuntimeError("the prefetch thread ended without a batch or an error"))

    def close(self) -> None:
        """Stop the thread, drop the batches loaded ahead, wait for it to end. Idempotent."""
        self._done = True
        self._stop.set()
        while True:  # unblock a thread waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

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
