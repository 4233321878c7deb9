"""OptimizerSet: several optimisers (s2 has G and D) behind one torch-like API, and the one
optimiser step every caller runs.

The step, in the order the loop needs it (the watchdog decides between the two halves):

    zero_grad()                                   before the forward
    [step_early(name, scaler)]                    gpt-sovits s2: D steps inside the micro-step
    norms = unscale_and_clip(scaler, max_norm)    fp16 unscale, clip (recipe), norms before clipping
    [the loop: LR, policies.on_step]
    finish(scaler, skip)                          step (unless skipped), GradScaler update, gradients dropped

`step(scaler, max_norm)` is the two halves back to back: what `Workload.train_step`,
the probe's traces (probe/memory.py, probe/upstream.py) and the GPU validation run.
The loop (trainer/loop/step.py) calls the same `unscale_and_clip` and `finish`, so
what the probe measures is what training runs. On the meta device the norms are NaN
(there are no values to read) and the work is the same.
"""

from __future__ import annotations

import math

import torch


class OptimizerSet:
    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("an OptimizerSet needs at least one optimiser")
        self.optimizers = dict(optimizers)
        self.early: dict[str, float] = {}  # optimisers stepped inside this step (step_early) -> grad norm

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        return self.optimizers[name]

    def items(self):
        return self.optimizers.items()

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    # --- the step ------------------------------------------------------------------------
    def step(self, scaler: torch.amp.GradScaler | None = None, max_grad_norm: float | None = None, drop_grads: bool = True) -> dict[str, float]:
        """The whole step: unscale, clip (if `max_grad_norm`), step every optimiser, update the
        scaler, drop the gradients (`drop_grads`; the probe's model of GPT-SoVITS's s1 loop keeps
        them, as its accumulation does). Returns the gradient norm per optimiser, before clipping
        (inf/nan when an fp16 step overflowed and the scaler skipped it; nan on meta)."""
        norms = self.unscale_and_clip(scaler, max_grad_norm)
        self.finish(scaler, drop_grads=drop_grads)
        return norms

    def step_early(self, name: str, scaler: torch.amp.GradScaler | None = None) -> None:
        """Step optimiser `name` now, on the gradients accumulated so far, without clipping
        (the gpt-sovits s2 recipe's discriminator, before the G pass), and drop them; its
        norm joins this step's norms and `finish` leaves it alone."""
        opt = self.optimizers[name]
        if scaler is not None:
            scaler.unscale_(opt)
        self.early[name] = _value(grad_norm(_with_grads(opt)))
        if scaler is not None:
            scaler.step(opt)  # skipped by the scaler itself on an fp16 overflow; update() in finish
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    def unscale_and_clip(self, scaler: torch.amp.GradScaler | None, max_grad_norm: float | None) -> dict[str, float]:
        """Unscale fp16 gradients and clip each optimiser's to `max_grad_norm` (None: no
        clipping); the norms before clipping, those stepped early included."""
        norms = dict(self.early)
        for name, opt in self.optimizers.items():
            if name in self.early:
                continue
            if scaler is not None:
                scaler.unscale_(opt)
            params = _with_grads(opt)
            norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm) if max_grad_norm is not None and params else grad_norm(params)
            norms[name] = _value(norm)
        return norms

    def finish(self, scaler: torch.amp.GradScaler | None, skip: bool = False, drop_grads: bool = True) -> None:
        """Step every optimiser not stepped early (unless `skip`), update the loss scale (which
        also clears its per-step state on a skip), drop the gradients."""
        if not skip:
            for name, opt in self.optimizers.items():
                if name in self.early:
                    continue
                if scaler is not None:
                    scaler.step(opt)  # skips the update itself if fp16 gradients overflowed
                else:
                    opt.step()
        if scaler is not None:
            scaler.update()
        self.early.clear()
        if drop_grads:
            self.zero_grad()

    def drop(self, scaler: torch.amp.GradScaler | None) -> None:
        """Abandon a partial step (an OOM): gradients to None. The GradScaler keeps per-step
        state only from unscale_ on, which has not run, unless an optimiser stepped early:
        then its step state is closed with update()."""
        if self.early and scaler is not None:
            scaler.update()
        self.early.clear()
        self.zero_grad()

    # --- state -----------------------------------------------------------------------------
    def lrs(self) -> dict[str, float]:
        """Current LR of every param group, keyed "optimiser/group"."""
        return {f"{name}/{g.get('name', i)}": g["lr"] for name, opt in self.optimizers.items() for i, g in enumerate(opt.param_groups)}

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.optimizers) ^ set(state)
        if missing:
            raise ValueError(f"optimiser state names {sorted(state)} do not match {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """Total L2 norm of the gradients (no clipping)."""
    if not params:
        return torch.tensor(0.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params]))


def _with_grads(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [q for g in opt.param_groups for q in g["params"] if q.grad is not None]


def _value(norm: torch.Tensor) -> float:
    """A norm as a float; NaN on the meta device (a trace has no values to read)."""
    return math.nan if norm.device.type == "meta" else float(norm)


def adamw_kernel(groups: list[dict]) -> dict:
    """AdamW's implementation for these param groups: {"fused": True} when every parameter is a
    floating CUDA tensor (one kernel for all parameters: fewer launches, no parameter-sized
    temporaries), else {"foreach": True} (grouped ops; CPU and meta, where the probe's
    estimate models it). The numbers agree to rounding (tests/test_optim_kernel.py)."""
    params = [p for g in groups for p in g["params"]]
    if params and all(p.device.type == "cuda" and p.is_floating_point() for p in params):
        return {"fused": True}
    return {"foreach": True}
