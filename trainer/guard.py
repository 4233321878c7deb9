"""The memory guard: what `train(memory_guard=...)` is handed (probe/tracker.py's
`EmulatedBudget`, a CPU rehearsal of a card of a given size).

The loop enters it around every micro-step, tells it about the tensors that exist
before the step (weights, optimiser state: a card holds them too), and reads it for
the step events' memory field, then starts the next step's peak afresh.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class MemoryGuard(Protocol):
    budget_bytes: int  # the emulated card (bytes)
    live_bytes: int  # bytes of tensors alive now
    peak_bytes: int  # the most alive at once since the last reset_peak()

    def __enter__(self) -> Any: ...  # raises torch.OutOfMemoryError from the op that crosses the budget

    def __exit__(self, *exc: Any) -> Any: ...

    def count(self, *objects: Any) -> int: ...  # tensors made before the guard was entered

    def reset_peak(self) -> None: ...
