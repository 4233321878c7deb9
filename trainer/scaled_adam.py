"""ScaledAdam: the optimiser GPT-SoVITS trains its GPT (s1) with, written from its description.

Published with Zipformer (Yao et al., "Zipformer: A faster and better encoder
for automatic speech recognition", ICLR 2024, section 4 and appendix) and
documented in icefall (k2-fsa). The update of one parameter tensor p (more
than one element) with gradient g, at optimiser step t (0-based):

    delta  <- beta1 * delta                                  (momentum buffer)
    size:  every `size_update_period` (K) steps the overall scale of p is learnt:
           s_t = sum(p * g) (the gradient w.r.t. a scalar multiplier of p), kept for
           the last K steps; at t % K == K-1: rms = RMS(p); for t > 0 also
           v_s <- beta2^K v_s + (1 - beta2^K) mean_k(s_k^2)
           step = -lr * scalar_lr_scale * sqrt(1 - beta2^(K * n)) * sum_k(s_k) / (sqrt(v_s) + eps)
           (0 when rms < param_min_rms; -lr * scalar_lr_scale * K when rms > param_max_rms)
           delta += (1 - beta1) * step * p
    v      <- beta2 v + (1 - beta2) g^2, divided by (1 - beta2^(t+1)) while that is < 0.99
    delta  += -lr * (1 - beta1) * max(rms, param_min_rms) * g / (sqrt(v) + eps)
    p      += delta
One-element parameters (s1's two positional alphas) take plain Adam without
bias correction of the first moment, at lr * scalar_lr_scale, clamped to
[-scalar_max, scalar_max] before the update. So the step size is relative to
each tensor's RMS: LR 0.002 moves every weight by about 0.2 % of its RMS.

Gradient clipping (clipping_scale): the total norm sqrt(sum (g * rms)^2) (plain g
for scalars) is recorded every step; every `clipping_update_period` steps the
threshold becomes clipping_scale x the median of the recorded norms, and from
step `clipping_update_period` on, gradients above it are scaled down.

Where this departs from upstream's code (GPT-SoVITS AR/modules/optim.py, read
to check the update; none of its code is used): parameters are updated one by
one instead of stacked by shape (the same arithmetic); no logging of
dominant parameters. Faithful quirk kept: upstream applies the clipping factor
only to the size-update gradients, the main update reads the unclipped
gradient; so does this class (with GPT-SoVITS's clipping_update_period of 1000,
no clipping happens in the first 1000 steps at all).
"""

from __future__ import annotations

import torch
from torch import Tensor


class ScaledAdam(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float = 0.03,
        betas: tuple[float, float] = (0.9, 0.95),  # GPT-SoVITS's s1 betas
        clipping_scale: float | None = 2.0,
        scalar_lr_scale: float = 0.1,
        eps: float = 1e-8,
        param_min_rms: float = 1e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
        clipping_update_period: int = 1000,  # GPT-SoVITS's s1 setting
        parameter_names: list[list[str]] | None = None,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"ScaledAdam lr {lr!r} must be > 0")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"ScaledAdam betas {betas!r} must be in [0, 1)")
        defaults = dict(
            lr=lr, betas=tuple(betas), clipping_scale=clipping_scale, scalar_lr_scale=scalar_lr_scale, eps=eps,
            param_min_rms=param_min_rms, param_max_rms=param_max_rms, scalar_max=scalar_max,
            size_update_period=size_update_period, clipping_update_period=clipping_update_period,
        )
        super().__init__(params, defaults)
        self.parameter_names = parameter_names  # for messages only

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("ScaledAdam does not support sparse gradients")
            fresh = len(self.state[params[0]]) == 0
            clip = 1.0 if fresh else self._clipping_factor(group, params)
            for p in params:
                state = self.state[p]
                if len(state) == 0:
                    self._init_state(group, p, state)
                self._update(group, p, state, clip)
        return loss

    def _init_state(self, group: dict, p: Tensor, state: dict) -> None:
        state["step"] = 0
        state["delta"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
        if p.numel() > 1:
            rms = p.pow(2).mean().sqrt().reshape(1)  # (1,) the tensor's RMS
            state["param_rms"] = rms
            state["scale_exp_avg_sq"] = torch.zeros_like(rms)
            state["scale_grads"] = torch.zeros(group["size_update_period"], dtype=p.dtype, device=p.device)

    def _clipping_factor(self, group: dict, params: list[Tensor]) -> float:
        """Multiplier <= 1 for this step's gradients (see the module docstring)."""
        scale = group["clipping_scale"]
        first = self.state[params[0]]
        step = first["step"]
        if scale is None or step == 0:
            return 1.0
        period = group["clipping_update_period"]
        sumsq = torch.zeros((), device=params[0].device)
        for p in params:
            g = p.grad.float()
            sumsq += g.pow(2).sum() if p.numel() == 1 else (g * self.state[p]["param_rms"].float()).pow(2).sum()
        norm = sumsq.sqrt()
        norms = first.setdefault("model_norms", torch.zeros(period, device=params[0].device))
        norms[step % period] = norm
        if step % period == 0:
            ordered = norms.sort().values
            first["model_norm_threshold"] = scale * float(ordered[min(period - 1, (period // 4) * 2)])  # the median
            first["num_clipped"] = 0
        if step < period or "model_norm_threshold" not in first:
            return 1.0
        factor = min(1.0, first["model_norm_threshold"] / (float(norm) + 1e-20))
        if factor < 1.0:
            first["num_clipped"] = first.get("num_clipped", 0) + 1
        return factor

    def _update(self, group: dict, p: Tensor, state: dict, clip: float) -> None:
        beta1 = group["betas"][0]
        step = state["step"]
        delta = state["delta"]
        delta.mul_(beta1)
        if p.numel() > 1:
            K = group["size_update_period"]
            g = p.grad if clip == 1.0 else p.grad * clip  # upstream clips only this gradient
            state["scale_grads"][step % K] = (p * g).sum()
            if step % K == K - 1:
                state["param_rms"].copy_(p.pow(2).mean().sqrt())
                if step > 0:
                    self._size_update(group, p, state)
            self._tensor_step(group, p, state)
        else:
            self._scalar_step(group, p, state)
        state["step"] = step + 1

    def _size_update(self, group: dict, p: Tensor, state: dict) -> None:
        """Learn the tensor's overall scale from the last K steps' sum(p * g)."""
        beta1, beta2 = group["betas"]
        grads = state["scale_grads"]  # (K,)
        K = grads.shape[0]
        lr = group["lr"] * group["scalar_lr_scale"]
        beta2_k = beta2**K
        state["scale_exp_avg_sq"].mul_(beta2_k).add_(grads.pow(2).mean(), alpha=1 - beta2_k)
        n = (state["step"] + 1) // K  # size updates so far, this one included
        correction = (1 - beta2_k**n) ** 0.5
        rms = state["param_rms"]
        change = -lr * correction * grads.sum() / (state["scale_exp_avg_sq"].sqrt() + group["eps"])  # (1,)
        change = torch.where(rms < group["param_min_rms"], torch.zeros_like(change), change)
        change = torch.where(rms > group["param_max_rms"], torch.full_like(change, -lr * K), change)
        state["delta"].add_(p * change, alpha=1 - beta1)

    def _tensor_step(self, group: dict, p: Tensor, state: dict) -> None:
        beta1, beta2 = group["betas"]
        g = p.grad
        v = state["exp_avg_sq"]
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        correction = 1 - beta2 ** (state["step"] + 1)
        if correction < 0.99:
            v = v / correction  # a copy: the state keeps the uncorrected average
        step_size = -group["lr"] * (1 - beta1) * state["param_rms"].clamp(min=group["param_min_rms"])
        state["delta"].add_(g / (v.sqrt() + group["eps"]) * step_size)
        p.add_(state["delta"])

    def _scalar_step(self, group: dict, p: Tensor, state: dict) -> None:
        beta1, beta2 = group["betas"]
        g = p.grad
        v = state["exp_avg_sq"]
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        correction = 1 - beta2 ** (state["step"] + 1)
        lr = group["lr"] * group["scalar_lr_scale"]
        state["delta"].add_(g / ((v / correction).sqrt() + group["eps"]), alpha=-lr * (1 - beta1))
        p.clamp_(min=-group["scalar_max"], max=group["scalar_max"])
        p.add_(state["delta"])
