"""What a CUDA step would allocate, reproduced on meta tensors.

On the meta device ops only compute shapes, so a training step runs in well
under a second whatever the batch. Three things differ from a CUDA run, and
`CudaOnMeta` (a TorchFunctionMode, above autograd, so its casts are recorded
in the graph exactly like autocast's) puts them back:

1. Autocast. torch has none for meta, so inside the workload's autocast
   regions (see `autocast_regions`) we apply CUDA autocast's rules: matmul-like
   ops (linear, matmul, bmm, conv, sdpa, ...) cast floating inputs to the low
   precision, with the cast of a weight (a leaf that requires grad) made once
   per region and cached, as autocast does; fp32 ops (softmax, log_softmax,
   layer/group norm, exp, log, pow, sum, losses, ...) cast low-precision
   inputs up to fp32; promote ops (cat, stack, ...) cast to the widest input.
2. Attention. `F.scaled_dot_product_attention` on meta takes the math path
   and materialises (B, H, S, S) scores; CUDA runs the memory-efficient
   kernel for a boolean or float mask (flash when there is no mask and the
   inputs are fp16/bf16). We call the kernel CUDA would pick; a boolean mask
   is first turned into an additive mask in the query's dtype, and a mask
   whose last dimension is not a multiple of 8 is copied into a padded one
   (PyTorch's `preprocess_mask`, before the broadcast over batch and heads),
   per call: a (B*H, S, S) float mask (GPT-SoVITS's) costs one padded
   copy per layer, kept for backward.
3. Dropout. Off CUDA (CPU, meta) `F.dropout` multiplies by an fp32 noise
   tensor it keeps for backward; CUDA's fused kernel (`native_dropout`) keeps
   a bool mask, a quarter of the bytes. We call `native_dropout`.
4. The optimiser: on CUDA AdamW defaults to its foreach implementation (one
   extra parameter-sized temporary), on meta to the per-tensor loop;
   `use_foreach(optimizers)` picks the CUDA one.

Not modelled: a region a workload closes itself with
`torch.autocast(enabled=False)` (a no-op on meta, so it stays cast here: s2's
mel loss, a few MB), and kernel workspaces (cuBLAS is added as a constant).
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

LOW_PRECISION = {"fp16": torch.float16, "bf16": torch.bfloat16}
MEM_EFFICIENT_ALIGNMENT = 8  # sdpa pads a mask's last dim to this for the memory-efficient kernel (INTEROP.md)

_T = torch.Tensor
# CUDA autocast's lower-precision list (the entry points our models reach).
LOWER = {
    F.linear, torch.matmul, _T.matmul, _T.__matmul__, _T.__rmatmul__, torch.mm, _T.mm, torch.bmm, _T.bmm,
    torch.baddbmm, _T.baddbmm, torch.addmm, _T.addmm, torch.addbmm, torch.addmv, torch.mv, _T.mv, torch.einsum,
    torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d,
    F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
    torch.prelu, F.prelu, F.scaled_dot_product_attention, torch.chain_matmul, torch.linalg.multi_dot,
}  # fmt: skip
# CUDA autocast's fp32 list (and its "fp32 unless a dtype is given" list).
FP32 = {
    F.layer_norm, torch.layer_norm, F.group_norm, torch.group_norm, F.softmax, torch.softmax, _T.softmax,
    F.log_softmax, torch.log_softmax, _T.log_softmax, torch.exp, _T.exp, torch.log, _T.log, torch.log1p, _T.log1p,
    torch.log2, torch.log10, torch.expm1, _T.expm1, torch.pow, _T.pow, _T.__pow__, torch.rsqrt, _T.rsqrt,
    torch.reciprocal, _T.reciprocal, F.softplus, F.l1_loss, F.mse_loss, F.smooth_l1_loss, F.huber_loss, F.kl_div,
    F.nll_loss, F.cross_entropy, F.binary_cross_entropy_with_logits, torch.logsumexp, _T.logsumexp, torch.cumsum,
    _T.cumsum, torch.cumprod, torch.sum, _T.sum, torch.prod, _T.prod, torch.norm, _T.norm, torch.linalg.vector_norm,
    F.cosine_similarity, torch.dist, torch.cdist, torch.acos, torch.asin, torch.cosh, torch.sinh, torch.tan,
    torch.erfinv, F.interpolate,
}  # fmt: skip
PROMOTE = {torch.cat, torch.stack, torch.addcmul, _T.addcmul, torch.addcdiv, _T.addcdiv, torch.atan2, torch.cross, torch.dot, torch.vdot, torch.tensordot, _T.index_put, _T.index_put_, torch.scatter_add, _T.scatter_add}  # fmt: skip
SDPA = {F.scaled_dot_product_attention, torch._C._nn.scaled_dot_product_attention}
DROPOUT = {F.dropout, torch.dropout, torch.nn.functional.dropout}


def _eligible(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64


class CudaOnMeta(TorchFunctionMode):
    """Model CUDA's autocast and attention kernels for meta tensors (see the module doc).

    `low_dtype` is the autocast dtype (None for fp32); casting only happens
    while a workload's autocast region is open (`enter_region`/`exit_region`)."""

    def __init__(self, low_dtype: torch.dtype | None, cuda_dropout: bool = True) -> None:
        super().__init__()
        self.low_dtype = low_dtype
        self.cuda_dropout = cuda_dropout  # False: the CPU's fp32-noise dropout (to compare with CPU measurements)
        self.depth = 0  # open autocast regions
        self.enabled: list[bool] = []
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(weight) -> (weight, cast)

    def enter_region(self, enabled: bool = True) -> None:
        self.depth += 1
        self.enabled.append(enabled)

    def exit_region(self) -> None:
        self.depth -= 1
        self.enabled.pop()
        if self.depth == 0:
            self._cache.clear()  # autocast drops its weight casts when the outermost region closes

    def recompute_contexts(self) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        """torch.utils.checkpoint's `context_fn`: a checkpointed block is recomputed during
        backward, where this mode and the workload's autocast region are no longer open;
        the recomputation re-enters both as the forward had them (torch's own checkpoint
        restores real autocast the same way), so it saves what the forward saved."""
        return contextlib.nullcontext(), self._recomputing(list(self.enabled))

    @contextlib.contextmanager
    def _recomputing(self, enabled: list[bool]) -> Iterator[None]:
        from torch.overrides import _get_current_function_mode_stack

        saved = self.enabled, self.depth, self._cache
        self.enabled, self.depth, self._cache = enabled, len(enabled), {}  # its own weight casts, dropped after
        try:
            with contextlib.nullcontext() if self in _get_current_function_mode_stack() else self:
                yield
        finally:
            self.enabled, self.depth, self._cache = saved

    @property
    def casting(self) -> bool:
        return self.low_dtype is not None and bool(self.enabled) and self.enabled[-1]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.casting:
            if func in LOWER:
                args, kwargs = self._cast_all(args, kwargs, self.low_dtype, cache=True)
            elif func in FP32 and "dtype" not in kwargs:
                args, kwargs = self._cast_all(args, kwargs, torch.float32, cache=False, only_low=True)
            elif func in PROMOTE:
                args, kwargs = self._promote(args, kwargs)
        if func in SDPA:
            return cuda_attention(*args, **kwargs)
        if func in DROPOUT and self.cuda_dropout:
            return cuda_dropout(*args, **kwargs)
        return func(*args, **kwargs)

    # --- casting ---------------------------------------------------------------------------
    def _cast(self, x: Any, dtype: torch.dtype, cache: bool, only_low: bool) -> Any:
        if isinstance(x, (list, tuple)):
            return type(x)(self._cast(i, dtype, cache, only_low) for i in x)
        if not _eligible(x) or x.dtype == dtype or (only_low and x.dtype == torch.float32):
            return x
        if cache and x.is_leaf and x.requires_grad:
            hit = self._cache.get(id(x))
            if hit is None or hit[0] is not x:
                hit = (x, x.to(dtype))
                self._cache[id(x)] = hit
            return hit[1]
        return x.to(dtype)

    def _cast_all(self, args, kwargs, dtype, cache: bool, only_low: bool = False):
        args = tuple(self._cast(a, dtype, cache, only_low) for a in args)
        kwargs = {k: self._cast(v, dtype, cache, only_low) for k, v in kwargs.items()}
        return args, kwargs

    def _promote(self, args, kwargs):
        dtypes = [t.dtype for t in _flat_tensors(args, kwargs) if _eligible(t)]
        if len(set(dtypes)) < 2:
            return args, kwargs
        widest = max(dtypes, key=lambda d: (torch.finfo(d).bits, d == torch.float32))
        return self._cast_all(args, kwargs, widest, cache=False)


def _flat_tensors(args, kwargs) -> Iterator[torch.Tensor]:
    for x in list(args) + list(kwargs.values()):
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, (list, tuple)):
            yield from (i for i in x if isinstance(i, torch.Tensor))


def cuda_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """The attention kernel CUDA would run for these inputs, called directly (same
    outputs, same saved tensors); falls back to torch's choice for what it cannot model."""
    low = query.dtype in (torch.float16, torch.bfloat16)
    if enable_gqa or query.dim() != 4:
        return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale)
    if attn_mask is None and low and query.shape[-1] <= 256:
        out = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False, scale=scale)
        return out[0]
    bias = None
    if attn_mask is not None:
        bias = attn_mask
        if bias.dtype == torch.bool:  # additive mask in the query's dtype
            bias = torch.where(bias.logical_not(), -math.inf, torch.zeros((), dtype=query.dtype, device=query.device))
        bias = bias.to(query.dtype)
        length = bias.shape[-1]
        if length % MEM_EFFICIENT_ALIGNMENT:  # a padded copy, made per call
            pad = MEM_EFFICIENT_ALIGNMENT - length % MEM_EFFICIENT_ALIGNMENT
            bias = F.pad(bias, (0, pad))[..., :length]
        bias = bias.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    needs_lse = any(t.requires_grad for t in (query, key, value))
    out = torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, bias, needs_lse, dropout_p, is_causal, scale=scale)
    return out[0]


def cuda_dropout(input, p=0.5, training=True, inplace=False):
    """CUDA's dropout: `native_dropout`, which keeps a bool mask for backward
    (the CPU path keeps fp32 noise). In place is modelled as out of place."""
    if not training or p == 0.0 or not input.is_floating_point():
        return input
    if p == 1.0:
        return input * 0.0
    return torch.ops.aten.native_dropout(input, p, True)[0]


# --- workload autocast regions ------------------------------------------------------------


@contextlib.contextmanager
def autocast_regions(mode: CudaOnMeta) -> Iterator[None]:
    """Route the workloads' `autocast(precision, device)` calls on meta to `mode`.

    torch.autocast refuses the meta device, so `trainer.workload.autocast`
    opens nothing there, and the estimate must know where the workload's
    autocast regions begin and end (s2 computes its losses outside them). For
    the duration, every loaded `trainer` module that imported that helper sees
    a wrapper: on meta it opens a region of `mode`; elsewhere it is the helper
    itself. Restored on exit."""
    import trainer.workload as contract

    original = contract.autocast

    def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
        if torch.device(device).type != "meta":
            return original(precision, device)
        contract.check_precision(precision)
        return _region(mode, precision != "fp32")

    modules = [m for name, m in list(sys.modules.items()) if name.startswith("trainer") and getattr(m, "autocast", None) is original]
    for module in modules:
        module.autocast = autocast
    try:
        yield
    finally:
        for module in modules:
            module.autocast = original


@contextlib.contextmanager
def _region(mode: CudaOnMeta, enabled: bool) -> Iterator[None]:
    mode.enter_region(enabled)
    try:
        yield
    finally:
        mode.exit_region()


def use_foreach(optimizers) -> None:
    """Make every optimiser take its foreach path, CUDA's default for AdamW."""
    for _, opt in optimizers.items():
        for group in opt.param_groups:
            if "foreach" in group:
                group["foreach"] = True
