"""OOM policy: shrink the micro-batch and retry the same batch.

The loop catches the exception, asks `is_oom_error`, clears the partial step
(outputs, gradients, GradScaler state, cache) and calls `on_oom`. Two modes:

- "accumulate" (default, Composer's auto-microbatching): halve the
  micro-batch and raise the accumulation so micro x accumulation still covers
  the effective batch. The optimiser sees the same effective batch, so the
  LR and the loss scale stay as they were.
- "shrink": halve the micro-batch and keep the accumulation, so the effective
  batch shrinks by the same ratio (effective x new_micro // old_micro, which
  holds for any number of DDP ranks); the LR is rescaled by `lr_rule`:
      linear: lr x new_batch / old_batch      (Goyal et al. 2017, for SGD)
      sqrt:   lr x sqrt(new_batch / old_batch) (Adam-family rule of thumb)
  The decision's `effective_batch` tells the loop, which re-plans the rest of
  the epoch from the batch that failed (its samples first) in batches of the
  new size and stretches the LR schedule over the longer run.

At micro-batch 1 there is nothing left to halve: the policy stops the run
with the advisor's advice (what the tables say would fit: shorter slices,
DPO off, lower precision), injected as `advice()` so this module never
imports the probe.

The policy keeps no state: the loop applies the new micro-batch to the run's
batch plan, which checkpoints carry, so a resumed run starts at the size that
fitted; it never grows back (like Composer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from advisor.watchdog.checks import check_choice, check_int
from trainer.policy import Decision, OOMInfo, Policy
from trainer.sizing import accumulation as per_process_accumulation

MODES = ("accumulate", "shrink")
LR_RULES = ("linear", "sqrt")

# Messages of errors that are out-of-memory in disguise (substrings, case-sensitive).
OOM_MESSAGES = (
    "CUDA out of memory",  # older torch raised a plain RuntimeError
    "CUDA error: out of memory",  # cudaMalloc failing inside a kernel launch
    "HIP out of memory",
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED",  # cuDNN could not get its workspace (Lightning treats it as OOM)
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUFFT_INTERNAL_ERROR",  # cuFFT plan creation without memory (NeMo treats it as OOM)
    "CUFFT_ALLOC_FAILED",
    "DefaultCPUAllocator: can't allocate memory",  # host RAM on the CPU backend
)

GENERIC_ADVICE = (
    "to fit, try shorter slices (--slice-seconds), DPO off (s1), or a lower precision (fp16/bf16); "
    "`advisor plan` shows what the tables say fits this card"
)


def is_oom_error(exc: BaseException) -> bool:
    """True for torch.OutOfMemoryError, MemoryError, and the cuDNN/cuBLAS/cuFFT/allocator
    errors that really mean out of memory; follows `raise ... from` chains."""
    import torch  # the advisor imports torch lazily; the loop has it loaded already

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
            return True
        if isinstance(exc, RuntimeError):
            message = str(exc)
            if any(m in message for m in OOM_MESSAGES):
                return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


@dataclass
class OOMConfig:
    mode: str = "accumulate"  # "accumulate": keep the effective batch; "shrink": halve it and rescale the LR
    lr_rule: str = "sqrt"  # shrink mode only: "linear" or "sqrt" (see the module docstring)

    def __post_init__(self) -> None:
        check_choice("watchdog.oom.mode", self.mode, MODES)
        check_choice("watchdog.oom.lr_rule", self.lr_rule, LR_RULES)


def lr_factor(old_batch: int, new_batch: int, rule: str) -> float:
    """LR multiplier when the effective batch goes from `old_batch` to `new_batch`."""
    ratio = new_batch / old_batch
    return ratio if rule == "linear" else math.sqrt(ratio)


class OOMPolicy(Policy):
    name = "oom"

    def __init__(self, config: OOMConfig | None = None, advice: Callable[[], str] | None = None) -> None:
        self.config = config or OOMConfig()
        self.advice = advice

    def on_oom(self, info: OOMInfo) -> list[Decision]:
        check_int("OOMInfo.micro_batch", info.micro_batch, 1)
        where = f"out of memory at micro-batch {info.micro_batch} x {info.accumulation} (step {info.step})"
        if info.micro_batch == 1:
            return [self._stop(info, where)]
        micro = info.micro_batch // 2
        if self.config.mode == "accumulate":
            return [self._accumulate(info, micro, where)]
        return self._shrink(info, micro, where)

    def _accumulate(self, info: OOMInfo, micro: int, where: str) -> Decision:
        effective = info.effective_batch
        accumulation = per_process_accumulation(effective, micro, info.world)  # the last micro-batch may be smaller
        return Decision(
            "set_micro_batch",
            f"{where}: retrying the same batch as micro-batch {micro} x {accumulation} "
            f"(effective batch {effective} and LR unchanged)",
            policy=self.name,
            micro_batch=micro,
            details={"accumulation": accumulation, "effective_batch": effective, "mode": "accumulate"},
        )

    def _shrink(self, info: OOMInfo, micro: int, where: str) -> list[Decision]:
        effective = max(1, info.effective_batch * micro // info.micro_batch)  # all ranks: the share per rank shrinks alike
        factor = lr_factor(info.effective_batch, effective, self.config.lr_rule)
        resize = Decision(
            "set_micro_batch",
            f"{where}: micro-batch {micro} x {info.accumulation}, effective batch "
            f"{info.effective_batch} -> {effective}",
            policy=self.name,
            micro_batch=micro,
            effective_batch=effective,
            details={"accumulation": info.accumulation, "effective_batch": effective, "mode": "shrink"},
        )
        rescale = Decision(
            "scale_lr",
            f"effective batch {info.effective_batch} -> {effective}: LR x {factor:.4g} ({self.config.lr_rule} rule)",
            policy=self.name,
            factor=factor,
            details={"rule": self.config.lr_rule, "old_batch": info.effective_batch, "new_batch": effective},
        )
        return [resize, rescale]

    def _stop(self, info: OOMInfo, where: str) -> Decision:
        return Decision(
            "stop",
            f"{where}: nothing smaller to try; {self._advice_text()}",
            policy=self.name,
            details={"error": info.error[:500]},
        )

    def _advice_text(self) -> str:
        if self.advice is None:
            return GENERIC_ADVICE
        try:
            text = self.advice()
        except Exception as exc:  # advice is a courtesy: never let it hide the stop itself
            return f"{GENERIC_ADVICE} (the advisor's advice failed: {type(exc).__name__}: {exc})"
        return text.strip() or GENERIC_ADVICE
