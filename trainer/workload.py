"""The Workload contract shared by the probe and the trainer.

A workload owns its model(s), how to make a batch (synthetic or real, same
shapes), and one training / validation step. The probe measures exactly what
`train_step` allocates; the trainer's loop calls `forward_backward` per
micro-batch and `OptimizerSet`'s step (unscale_and_clip, then finish) once per
effective batch, the same step `train_step` runs. Each workload collates its own
batches (`collate`) and declares its recipe (`recipe`: trainer/recipe.py).

Batches are plain dicts of tensors; the batch dimension is dim 0 of every
tensor, so `split_batch` works for every workload.
"""

from __future__ import annotations

import abc
import math
import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from trainer.checks import PRECISIONS, SIZES, check_batch_size, check_precision, check_size, check_slice_seconds  # noqa: F401 (re-exported)
from trainer.optim import OptimizerSet, adamw_kernel
from trainer.recipe import Recipe

Batch = dict[str, torch.Tensor]


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for a forward pass: fp32 is a no-op."""
    check_precision(precision)
    device_type = torch.device(device).type
    if precision == "fp32" or device_type == "meta":
        # torch.autocast has no "meta" backend: a meta trace runs in fp32 and the
        # probe's estimator accounts for the low-precision copies itself.
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device_type, dtype=dtype)


def make_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (None otherwise: bf16 and fp32 need no loss scaling)."""
    if check_precision(precision) != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def split_batch(batch: Batch, micro_batch_size: int, parts: list[int] | None = None) -> list[Batch]:
    """Split along dim 0 into micro-batches of at most `micro_batch_size` samples.

    `parts`: the sizes of consecutive groups that no micro-batch may straddle (the
    batches GPT-SoVITS's s1 trainer accumulates into one step); None: one group."""
    check_batch_size(micro_batch_size)
    n = batch_size_of(batch)
    sizes = parts if parts is not None else [n]
    if sum(sizes) != n or any(s < 1 for s in sizes):
        raise ValueError(f"split_batch: parts {sizes} do not add up to the batch's {n} samples")
    bounds, start = [], 0
    for size in sizes:
        bounds += [(i, min(i + micro_batch_size, start + size)) for i in range(start, start + size, micro_batch_size)]
        start += size
    return [{k: v[a:b] for k, v in batch.items()} for a, b in bounds]


def backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None, loss_scale: float = 1.0) -> None:
    """loss x loss_scale backward, through the GradScaler in fp16."""
    loss = loss * loss_scale
    (scaler.scale(loss) if scaler is not None else loss).backward()


def to_floats(named: dict[str, torch.Tensor]) -> dict[str, float]:
    """Detached tensors -> floats with one device sync; NaN on meta (no values to read)."""
    values = torch.stack([t.detach().float().reshape(()) for t in named.values()])
    if values.device.type == "meta":
        return {k: math.nan for k in named}
    return dict(zip(named, values.cpu().tolist()))


def batch_size_of(batch: Batch) -> int:
    return int(next(iter(batch.values())).shape[0])


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; works on the meta device."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable


@dataclass(frozen=True)
class StepResult:
    """What one micro-batch forward/backward produced (floats, detached)."""

    losses: dict[str, float]  # named loss components; "total" is what was optimised
    samples: int  # batch size of the micro-batch


class Workload(abc.ABC):
    """One trainable GPT-SoVITS stage. Subclasses: `S1Workload`, `S2Workload`."""

    name: str = ""
    metric_name: str = ""  # what validation_step returns (watched by early stopping)
    recipe: Recipe  # set by each subclass from its `recipe` argument (trainer/recipe.py)

    def __init__(self, size: str = "full") -> None:
        self.size = check_size(size)

    # --- building -----------------------------------------------------------------
    @abc.abstractmethod
    def build(self, device: torch.device | str = "cpu") -> nn.ModuleDict:
        """Fresh model(s), in train mode, on `device` (may be "meta")."""

    @abc.abstractmethod
    def param_groups(self, models: nn.ModuleDict) -> dict[str, list[dict]]:
        """Optimiser name -> torch param groups. Every group has a "name" and an
        "lr_scale" (multiplier on the configured LR of its optimiser)."""

    def make_optimizers(self, models: nn.ModuleDict, lr: dict[str, float] | None = None) -> OptimizerSet:
        """AdamW per optimiser name with the workload's defaults (see `default_lr`)."""
        lr = {**self.default_lr(), **(lr or {})}
        optimizers = {}
        for opt_name, groups in self.param_groups(models).items():
            base = lr[opt_name]
            for g in groups:
                g["lr"] = base * g.get("lr_scale", 1.0)
                g["initial_lr"] = g["lr"]
            optimizers[opt_name] = torch.optim.AdamW(groups, lr=base, **adamw_kernel(groups), **self.adamw_options())
        return OptimizerSet(optimizers)

    @abc.abstractmethod
    def default_lr(self) -> dict[str, float]:
        """Optimiser name -> base learning rate."""

    def adamw_options(self) -> dict:
        return {}

    # --- data -----------------------------------------------------------------------
    @abc.abstractmethod
    def synthetic_batch(
        self,
        batch_size: int,
        slice_seconds: float,
        dpo: bool = False,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Batch:
        """A batch with exactly the shapes/dtypes real data of `slice_seconds` has."""

    @abc.abstractmethod
    def collate(
        self,
        samples: list[dict[str, torch.Tensor]],
        slice_seconds: float | None,
        dpo: bool = False,
        generator: torch.Generator | None = None,
        later: bool = False,
    ) -> Batch:
        """Samples of a prepared dataset (trainer/data/loader.py) padded into one batch with the
        shapes of `synthetic_batch(len(samples), slice_seconds, dpo)` (trainer/data/collate.py);
        `slice_seconds` None: padded to the batch's own longest sample (length buckets,
        trainer/data/padding.py). `later`: leave out what `finish` makes better on the training
        device (s2: the spectrogram, on CUDA). ValueError if a sample is longer than the slice."""

    def finish(self, batch: Batch) -> Batch:
        """Complete a batch collated with `later` on its device (the prefetcher calls it on the
        training thread once the batch is there); nothing to do by default."""
        return batch

    @abc.abstractmethod
    def audio_seconds(self, batch: Batch) -> float:
        """Audio seconds in a batch (for audio-seconds/s throughput)."""

    # --- steps ----------------------------------------------------------------------
    @abc.abstractmethod
    def forward_backward(
        self,
        models: nn.ModuleDict,
        batch: Batch,
        precision: str,
        scaler: torch.amp.GradScaler | None = None,
        loss_scale: float = 1.0,
    ) -> StepResult:
        """Forward one micro-batch and accumulate gradients into every model.

        `loss_scale` divides the loss for gradient accumulation (1/accum steps)."""

    @abc.abstractmethod
    @torch.no_grad()
    def validation_step(self, models: nn.ModuleDict, batch: Batch, precision: str = "fp32") -> float:
        """The watched metric on one batch (s1: cross-entropy; s2: mel L1)."""

    def train_step(
        self,
        models: nn.ModuleDict,
        optimizers: OptimizerSet,
        batch: Batch,
        precision: str,
        scaler: torch.amp.GradScaler | None = None,
        max_grad_norm: float | None = None,
    ) -> dict[str, float]:
        """One whole optimiser step on one batch (no accumulation): what the probe runs, through
        the same `OptimizerSet` step as the loop (trainer/optim.py)."""
        optimizers.zero_grad()
        result = self.forward_backward(models, batch, precision, scaler, **self.early_steps(optimizers, scaler))
        norms = optimizers.step(scaler, max_grad_norm)
        return {**result.losses, **{f"grad_norm/{k}": v for k, v in norms.items()}}

    def early_steps(self, optimizers: OptimizerSet, scaler: torch.amp.GradScaler | None) -> dict:
        """Keyword arguments of `forward_backward` that step an optimiser inside it (none here;
        s2's gpt-sovits recipe steps D before the G pass). The loop passes them only when one
        micro-step makes the whole step (trainer/loop/parts.py `discriminator_first`)."""
        return {}

    # --- description ---------------------------------------------------------------
    def module_parameters(self, models: nn.ModuleDict) -> dict[str, int]:
        """Named modules -> parameter count, for `advisor workloads`."""
        return {name: count_parameters(m)[0] for name, m in models.items()}

    def describe(self) -> dict:
        """Parameter counts of the full-size model, built on the meta device (instant)."""
        with torch.device("meta"):
            models = self.build("meta")
        total, trainable = count_parameters(models)
        return {
            "name": self.name,
            "parameters": {"total": total, "trainable": trainable},
            "modules": self.module_parameters(models),
        }


def configured_optimizers(workload: "Workload", models: nn.ModuleDict, optim: Any) -> OptimizerSet:
    """The workload's optimisers with the config's base LRs and per-group LR scales (`optim` is a
    trainer.config.OptimConfig; ValueError naming optim.lr.<name> / optim.lr_scale.<group>)."""
    base = {**workload.default_lr(), **optim.lr}
    unknown = sorted(set(optim.lr) - set(workload.default_lr()))
    if unknown:
        raise ValueError(f"optim.lr.{unknown[0]}: workload {workload.name} has optimisers {', '.join(workload.default_lr())}")
    optimizers = workload.make_optimizers(models, base)
    groups = {f"{name}/{g['name']}": (name, g) for name, opt in optimizers.items() for g in opt.param_groups}
    for key, scale in optim.lr_scale.items():
        if key not in groups:
            raise ValueError(f"optim.lr_scale.{key}: no such group in workload {workload.name} (groups: {', '.join(groups)})")
        name, g = groups[key]
        g["lr_scale"], g["initial_lr"], g["lr"] = scale, base[name] * scale, base[name] * scale
    return optimizers


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients flowing into `module`'s parameters (GAN G-pass)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)
