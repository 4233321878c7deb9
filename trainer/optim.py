"""OptimizerSet: several optimisers (s2 has G and D) behind one torch-like API.

The loop never cares how many optimisers a workload has: it calls
`zero_grad`, `step(scaler, max_grad_norm)`, `state_dict` and `load_state_dict`.
"""

from __future__ import annotations

import torch


class OptimizerSet:
    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("an OptimizerSet needs at least one optimiser")
        self.optimizers = dict(optimizers)

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        return self.optimizers[name]

    def items(self):
        return self.optimizers.items()

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self, scaler: torch.amp.GradScaler | None = None, max_grad_norm: float | None = None) -> dict[str, float]:
        """Unscale, clip (if `max_grad_norm`), step every optimiser, update the scaler.

        Returns the total gradient norm per optimiser (before clipping; inf/nan
        when the fp16 step overflowed and was skipped by the scaler)."""
        norms: dict[str, float] = {}
        for name, opt in self.optimizers.items():
            if scaler is not None:
                scaler.unscale_(opt)
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if max_grad_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            else:
                norm = grad_norm(params)
            norms[name] = float(norm)
            if scaler is not None:
                scaler.step(opt)
            else:
                opt.step()
        if scaler is not None:
            scaler.update()
        return norms

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


def adamw_kernel(groups: list[dict]) -> dict:
    """AdamW's implementation for these param groups: {"fused": True} when every parameter is a
    floating CUDA tensor (one kernel for all parameters: fewer launches, no parameter-sized
    temporaries), else {"foreach": True} (grouped ops; CPU and meta, where the probe's
    estimate models it). The numbers agree to rounding (tests/test_optim_kernel.py)."""
    params = [p for g in groups for p in g["params"]]
    if params and all(p.device.type == "cuda" and p.is_floating_point() for p in params):
        return {"fused": True}
    return {"foreach": True}
