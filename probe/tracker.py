"""Live-storage accounting under a TorchDispatchMode, and the emulated memory budget.

`StorageTracker` sees every aten op's outputs (forward, backward and optimiser
ops alike, below autograd) and counts each new untyped storage once, from the
op that created it until the storage is freed (a weakref callback on the
storage). Views share their base's storage, so they cost nothing; in-place ops
return a storage already counted. Tensors that existed before tracking began
(parameters, gradients, optimiser state, the batch) are added with `count()`.

The same class works on the meta device (the estimate: no data, shapes only)
and on real CPU tensors (the emulated budget). It keeps two running totals:
  raw bytes        sum of storage nbytes (what the emulated budget compares)
  allocator bytes  the CUDA caching allocator's view of the same live set:
                   every block rounded to 512 B; blocks <= 1 MiB share 2 MiB
                   segments, blocks of 1-10 MiB share 20 MiB segments
                   (anchors.md figures). Bigger blocks get segments rounded
                   up to 2 MiB, but a remainder over 1 MiB is split off and
                   reused, so they count at their block size: rounding them
                   per block would swing the total by hundreds of MiB between
                   neighbouring batch sizes (hundreds of same-size blocks
                   rounding together), which the allocator's reuse does not.
and the peak of each.

`EmulatedBudget(budget_bytes)` is a tracker that raises `torch.OutOfMemoryError`
from the op whose outputs would take the live raw bytes past the budget,
mid-forward or mid-backward, as the CUDA allocator would.
"""

from __future__ import annotations

import weakref
from typing import Any, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

MIB = 1024**2
BLOCK = 512  # CUDA caching allocator: every block is a multiple of 512 B
SMALL_LIMIT = 1 * MIB  # blocks up to this size come from the small pool...
SMALL_SEGMENT = 2 * MIB  # ...carved from 2 MiB segments
MID_LIMIT = 10 * MIB  # blocks of 1-10 MiB share...
MID_SEGMENT = 20 * MIB  # ...20 MiB segments


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def allocator_bytes(small: int, mid: int, large: int) -> int:
    """Reserved-memory model of live pool bytes (see the module docstring)."""
    return _round_up(small, SMALL_SEGMENT) + _round_up(mid, MID_SEGMENT) + large


def _pool(nbytes: int) -> tuple[int, int]:
    """(pool index 0 small / 1 mid / 2 large, bytes the block takes in that pool)."""
    block = _round_up(max(nbytes, 1), BLOCK)
    if block <= SMALL_LIMIT:
        return 0, block
    if block <= MID_LIMIT:
        return 1, block
    return 2, block


class StorageTracker(TorchDispatchMode):
    """Counts live untyped storages. `events`, when set to a list, receives
    (raw, small, mid, large) after every op that allocated, so a stretch of
    ops can be replayed on top of a different starting state (`replay_peak`)."""

    def __init__(self, shape_cache: "ShapeCache | None" = None) -> None:
        super().__init__()
        self.shape_cache = shape_cache
        self.events: list[tuple[int, int, int, int]] | None = None
        self._live: dict[int, tuple[weakref.ref, int, int, int]] = {}  # id(storage) -> (ref, nbytes, pool, pool bytes)
        self._pools = [0, 0, 0]  # small, mid, large pool bytes (rounded)
        self.live_bytes = 0
        self.peak_bytes = 0
        self.peak_allocator_bytes = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing here is compiled: spare every op torch's dynamo-disable wrapper

    # --- totals --------------------------------------------------------------------------
    @property
    def allocator_bytes(self) -> int:
        """Reserved-memory model of the live set (see the module docstring)."""
        return allocator_bytes(*self._pools)

    @property
    def state(self) -> tuple[int, int, int, int]:
        """(raw, small, mid, large) bytes live now."""
        return (self.live_bytes, *self._pools)

    def reset_peak(self) -> None:
        """Start a new peak from what is live now."""
        self.peak_bytes = self.live_bytes
        self.peak_allocator_bytes = self.allocator_bytes

    def replay_peak(self, start: tuple[int, int, int, int], events: list[tuple[int, int, int, int]]) -> None:
        """Raise the peaks as if the ops that produced `events` (recorded from the
        state `start`) ran again now, from the current state."""
        now = self.state
        for event in events:
            raw, small, mid, large = (n + e - s for n, e, s in zip(now, event, start))
            self.peak_bytes = max(self.peak_bytes, raw)
            self.peak_allocator_bytes = max(self.peak_allocator_bytes, allocator_bytes(small, mid, large))

    # --- counting ------------------------------------------------------------------------
    def count(self, *objects: Any) -> int:
        """Add tensors that already exist: tensors, modules (parameters, gradients,
        buffers), optimisers (state), OptimizerSets, dicts/lists/tuples of these.
        Returns the bytes newly counted (storages already counted are skipped)."""
        before = self.live_bytes
        for tensor in _tensors_in(objects):
            self._add(tensor)
        self._update_peak()
        return self.live_bytes - before

    def _add(self, tensor: torch.Tensor) -> int:
        """Count `tensor`'s storage if new; returns the raw bytes added."""
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse / nested tensors have no single storage
            return 0
        key = id(storage)
        if key in self._live:
            return 0
        nbytes = storage.nbytes()
        pool, pooled = _pool(nbytes)
        self._live[key] = (weakref.ref(storage, self._freed_callback(key)), nbytes, pool, pooled)
        self._pools[pool] += pooled
        self.live_bytes += nbytes
        return nbytes

    def _freed_callback(self, key: int):
        def freed(_ref: weakref.ref) -> None:
            entry = self._live.pop(key, None)
            if entry is not None:
                self.live_bytes -= entry[1]
                self._pools[entry[2]] -= entry[3]

        return freed

    def _update_peak(self) -> None:
        allocator = self.allocator_bytes
        if self.events is not None:
            self.events.append(self.state)
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
        if allocator > self.peak_allocator_bytes:
            self.peak_allocator_bytes = allocator

    # --- dispatch ------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = self.shape_cache.run(func, args, kwargs) if self.shape_cache is not None else func(*args, **kwargs)
        added = 0
        if isinstance(out, torch.Tensor):
            added = self._add(out)
        elif isinstance(out, (tuple, list)):
            for item in out:
                if isinstance(item, torch.Tensor):
                    added += self._add(item)
                elif isinstance(item, list):  # e.g. a tuple of tensor lists
                    for t in item:
                        if isinstance(t, torch.Tensor):
                            added += self._add(t)
        if added:
            self._check(func, added)
            self._update_peak()
        return out

    def _check(self, func, added: int) -> None:
        """Hook for budgets: called after an op's new storages were counted."""


class ShapeCache:
    """Remembers the output shapes of meta ops, so a repeated op (24 identical
    layers, the same step traced again) skips torch's meta kernel, many of which
    are written in Python and cost ~100 us each.

    Only ops that return fresh tensors (no view, no in-place, no out=) are cached,
    keyed by the op and every argument's shape, stride, dtype and value; all
    tensors must be on meta. Anything else runs the op."""

    def __init__(self) -> None:
        self._outputs: dict[tuple, Any] = {}
        self._cacheable: dict[Any, bool] = {}

    def run(self, func, args, kwargs):
        kind = self._cacheable.get(func)
        if kind is None:
            kind = self._cacheable[func] = _kind(func)
        if kind == "inplace" and _all_meta(args):  # shapes cannot change: skip the kernel
            return args[0] if func._schema.returns else None
        if kind != "fresh":
            return func(*args, **kwargs)
        try:
            key = (func, _signature(args), _signature(tuple(kwargs.items())))
        except _Uncacheable:
            return func(*args, **kwargs)
        spec = self._outputs.get(key)
        if spec is None:
            out = func(*args, **kwargs)
            self._outputs[key] = _spec_of(out)
            return out
        return _build(spec)


class _Uncacheable(Exception):
    """An op whose output shapes depend on data: run it, do not cache it."""


_META = torch.device("meta")


# In-place ops that change a tensor's shape or storage: they must run.
_METADATA_INPLACE = {"resize_", "resize_as_", "set_", "as_strided_", "squeeze_", "unsqueeze_", "transpose_", "t_", "swapdims_", "swapaxes_", "detach_", "unsafe_split_"}  # fmt: skip


def _kind(func) -> str:
    """"fresh": returns new tensors only (cacheable); "inplace": mutates its first
    argument's values only (skippable on meta); "other": must run."""
    schema = func._schema
    name = func._schema.name.split("::")[-1]
    if schema.is_mutable:
        args = schema.arguments
        first_written = bool(args) and args[0].alias_info is not None and args[0].alias_info.is_write
        others_written = any(a.alias_info is not None and a.alias_info.is_write for a in args[1:])
        returns_self = len(schema.returns) == 1 and schema.returns[0].alias_info is not None
        if name.endswith("_") and name not in _METADATA_INPLACE and first_written and not others_written and (returns_self or not schema.returns):
            return "inplace"
        return "other"
    if not schema.returns:
        return "other"
    for ret in schema.returns:
        if ret.alias_info is not None or str(ret.type) not in ("Tensor", "Tensor?", "List[Tensor]", "Tensor[]"):
            return "other"
    return "fresh"


def _all_meta(values) -> bool:
    for v in values:
        if isinstance(v, torch.Tensor):
            if not v.is_meta:
                return False
        elif isinstance(v, (list, tuple)):
            if not _all_meta(v):
                return False
    return True


def _signature(values) -> tuple:
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            if not v.is_meta:
                raise _Uncacheable
            out.append((v.shape, v.stride(), v.dtype))
        elif isinstance(v, (list, tuple)):
            out.append(("seq", _signature(v)))
        elif v is None or isinstance(v, (int, float, bool, str, torch.dtype, torch.device, torch.layout, torch.memory_format)):
            out.append(v)
        else:
            raise _Uncacheable
    return tuple(out)


def _spec_of(out):
    """("T", shape, stride, dtype) for a tensor, ("U", [specs]) for a tuple, None for None."""
    if isinstance(out, torch.Tensor):
        return ("T", tuple(out.shape), out.stride(), out.dtype)
    if isinstance(out, tuple):
        return ("U", tuple(_spec_of(o) for o in out))
    if isinstance(out, list):
        return ("L", tuple(_spec_of(o) for o in out))
    if out is None:
        return None
    raise AssertionError(f"unexpected meta op output {type(out)}")


def _build(spec):
    if spec is None:
        return None
    if spec[0] == "U":
        return tuple(_build(s) for s in spec[1])
    if spec[0] == "L":
        return [_build(s) for s in spec[1]]
    _, shape, stride, dtype = spec
    return torch.empty_strided(shape, stride, dtype=dtype, device=_META)


class EmulatedBudget(StorageTracker):
    """A memory budget for real tensors on any device: the op whose new storages take
    the live bytes past `budget_bytes` raises `torch.OutOfMemoryError`.

    A context manager, usable around any code and entered as often as needed:
        budget = EmulatedBudget(2 * 1024**3)
        budget.count(models, optimizers)   # what existed before (optional)
        with budget:
            train_step(...)                # raises torch.OutOfMemoryError past 2 GiB
    Storages allocated while it is not entered are not seen; frees always are.
    `peak_bytes`, `live_bytes`, `reset_peak()` as on `StorageTracker`."""

    def __init__(self, budget_bytes: int) -> None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 1:
            raise ValueError(f"budget_bytes {budget_bytes!r} is invalid: expected a positive integer")
        super().__init__()
        self.budget_bytes = budget_bytes
        self.ooms = 0  # OutOfMemoryErrors raised so far

    def _check(self, func, added: int) -> None:
        if self.live_bytes > self.budget_bytes:
            self.ooms += 1
            wanted = self.live_bytes
            raise torch.OutOfMemoryError(
                f"emulated out of memory: {func} needed {added} more bytes with {wanted - added} live "
                f"(budget {self.budget_bytes} bytes)"
            )


def _tensors_in(objects: Iterable[Any]) -> Iterable[torch.Tensor]:
    """Every tensor reachable from modules, optimisers, OptimizerSets and containers."""
    for obj in objects:
        if obj is None:
            continue
        if isinstance(obj, torch.Tensor):
            yield obj
            if obj.grad is not None:
                yield obj.grad
        elif isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                yield p
                if p.grad is not None:
                    yield p.grad
            yield from obj.buffers()
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                yield from _tensors_in(state.values())
        elif hasattr(obj, "optimizers") and isinstance(obj.optimizers, dict):  # trainer.optim.OptimizerSet
            yield from _tensors_in(obj.optimizers.values())
        elif isinstance(obj, dict):
            yield from _tensors_in(obj.values())
        elif isinstance(obj, (list, tuple)):
            yield from _tensors_in(obj)
