"""Largest batch that fits a memory budget, for one cell at a time.

A cell is (workload, slice seconds, dpo, precision); a trial runs a few
training steps at one batch size and returns the peak bytes, or None when it
ran out of memory (an OOM never stops the search). Every trial of a cell is
kept in `Trials`, so the tiers of one cell share them: the answer for a
bigger budget starts from what the smaller budgets already learnt.

The search for one budget keeps the bracket (largest batch known to fit,
smallest known not to) and narrows it until the gap is exactly 1: growth
while nothing has failed, then bisection. Peak memory is near-affine in the
batch size, so each split point is first interpolated from two trials far
enough apart that the allocator's rounding cannot tilt the line; when the
line says the answer is a known bound, the next trial steps past it by 1, 2,
4, ... (galloping), and after `INTERPOLATED_TRIES` trials the search falls
back to plain bisection, so it always ends. Usually a budget costs two
trials: the interpolated answer b and b + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

MAX_BATCH = 4096  # never search past this; a row at the cap says so
GROWTH = 8  # growth factor while nothing has failed
INTERPOLATED_TRIES = 8  # per budget; then plain growth/bisection, which always ends


@dataclass
class Trials:
    """Trial results of one cell: batch size -> peak bytes (None: out of memory)."""

    run: Callable[[int], int | None]
    results: dict[int, int | None] = field(default_factory=dict)

    def peak(self, batch_size: int) -> int | None:
        if batch_size not in self.results:
            self.results[batch_size] = self.run(batch_size)
        return self.results[batch_size]

    def fits(self, batch_size: int, budget: int) -> bool:
        peak = self.peak(batch_size)
        return peak is not None and peak <= budget

    def bracket(self, budget: int) -> tuple[int, int | None]:
        """(largest known fitting batch or 0, smallest known failing batch above it or None)."""
        fitting = [b for b, p in self.results.items() if p is not None and p <= budget]
        lo = max(fitting, default=0)
        failing = [b for b, p in self.results.items() if b > lo and (p is None or p > budget)]
        return lo, min(failing, default=None)


def largest_batch(trials: Trials, budget: int, guess: int | None = None, limit: int = MAX_BATCH) -> int:
    """Largest batch whose peak fits `budget` (0 if batch 1 does not), with batch + 1
    known not to fit (or the batch at `limit`). `guess` (e.g. a neighbouring cell's
    answer) is tried when the trials so far cannot be interpolated."""
    if budget < 1:
        return 0
    step, last_fit, tries = 1, None, 0
    while True:
        lo, hi = trials.bracket(budget)
        if lo >= limit:
            return limit
        if hi == lo + 1:
            return lo
        upper = limit if hi is None else hi - 1  # the answer lies in [lo, upper]; try in [lo + 1, upper]
        estimate = _interpolate(trials, budget) if tries < INTERPOLATED_TRIES else None
        if not trials.results:
            candidate = 1  # the base point: does anything fit at all?
        elif estimate is None:
            if guess is not None:
                candidate, guess = guess, None
            else:
                candidate = GROWTH * lo if hi is None else (lo + hi) // 2  # growth, then bisection
        elif estimate <= lo:  # the line says lo is the answer: try above it, galloping while it fits
            candidate = lo + step
        elif hi is not None and estimate >= hi:  # ...says hi fits after all: try below, galloping down
            candidate = hi - step
        else:
            candidate = estimate
        if hi is None:  # nothing failed yet: at tiny batches the peak is nearly flat, so cap the leap
            candidate = min(candidate, GROWTH * max(lo, 1))
        candidate = min(max(candidate, lo + 1), upper)
        fit = trials.fits(candidate, budget)
        step = step * 2 if fit == last_fit else 1
        last_fit, tries = fit, tries + 1


def _interpolate(trials: Trials, budget: int) -> int | None:
    """Batch where a line through two trials reaches the budget.

    The two points are far apart, so that the allocator's rounding (a few MiB
    per trial) does not tilt the line: the nearest trials either side of the
    budget when both exist, else the largest (smallest) trial and one at most
    half (at least twice) its batch. Batch 1 is used only when nothing else is
    known, since at tiny batches the fixed optimiser-step peak hides the slope."""
    known = sorted((b, p) for b, p in trials.results.items() if p is not None)
    if len(known) > 2:
        known = [(b, p) for b, p in known if b > 1]
    if len(known) < 2:
        return None
    below = [(b, p) for b, p in known if p <= budget]
    above = [(b, p) for b, p in known if p > budget]
    if below and above:
        (b1, p1), (b2, p2) = below[-1], above[0]
    elif below:
        b2, p2 = below[-1]
        b1, p1 = max((bp for bp in below if bp[0] <= b2 // 2), default=below[0])
    else:
        b1, p1 = above[0]
        b2, p2 = min((bp for bp in above if bp[0] >= 2 * b1), default=above[-1])
    if b2 == b1 or p2 <= p1:
        return None
    slope = (p2 - p1) / (b2 - b1)  # bytes per sample
    return int(math.floor(b1 + (budget - p1) / slope))


def search_tiers(trials: Trials, budgets: list[int], seeds: list[int | None] | None = None, limit: int = MAX_BATCH) -> list[int]:
    """`largest_batch` for each budget (any order), sharing `trials`. `seeds[i]` is a
    guess for budget i (e.g. the neighbouring cell's answer)."""
    seeds = seeds or [None] * len(budgets)
    answers: dict[int, int] = {}
    for index in sorted(range(len(budgets)), key=lambda i: budgets[i]):
        answers[index] = largest_batch(trials, budgets[index], seeds[index], limit)
    return [answers[i] for i in range(len(budgets))]
