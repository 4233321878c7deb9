"""Conditional flow matching (`cfm`): the loss v3 / v4 train their DiT with.

Per sample i (INTEROP-v3v4.md section 3, GPT-SoVITS's CFM.forward):
  t ~ U[0, 1), x0 ~ N(0, I), v = x1 - x0, x_t = x0 + t v
  the prompt: x1 on frames [0, p_i), zero after; x_t zeroed on those frames
  main pass: v_pred = DiT(x_t, prompt, lengths, t, dt, cond), dt = 0
  loss = mean_i MSE(v_pred[i, :, p_i:len_i], v[i, :, p_i:len_i])
(each sample a mean over mel x (len_i - p_i) elements; samples averaged
without length weighting; the prompt and the padding excluded).

Extra passes (`steps` given; GPT-SoVITS takes them with probability 0.3 per
batch): per sample d = 2^-k, k in {2..7}; the DiT is told d, or 0 where d <
0.01 (k = 7); v1 = DiT(x_t, t, d), v2 = DiT(x_t + d v1, t + d, d), both
detached; the target becomes (v1 + v2) / 2 and the main pass gets dt = 2d.
GPT-SoVITS builds both extra graphs and drops them (`detach_extra=False`:
the same values, two forwards' autograd bookkeeping for nothing);
`detach_extra=True` runs them under no_grad.

Sampling (`CFM.sample`, the validation samples; GPT-SoVITS's CFM.inference with
temperature 1 and no classifier-free guidance, as its inference calls it): x from
N(0, I) over the whole length, the prompt (the known first P frames) given to the
DiT as its audio condition and zeroed in x; `steps` Euler steps of
x <- x + d v(x, t), d = 1 / steps, the DiT told t (0, d, 2d, ...) and dt = d,
x's prompt frames zeroed after each step. Upstream's default steps: v3 32, v4 8.

Every per-sample choice is a mask, never a Python slice: the step traces on
the meta device (the probe's estimator) with no data-dependent control flow.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from trainer.sovits.config import DiTConfig
from trainer.sovits.dit import DiT

EXTRA_PASS_PROBABILITY = 0.3  # GPT-SoVITS: `random.random() < 0.3`, one draw per batch
EXTRA_STEP_EXPONENTS = (2, 8)  # d = 2^-k, k uniform in [2, 8)
EXTRA_STEP_FLOOR = 1e-2  # a d below this is given to the DiT as 0
SAMPLE_STEPS = {"v3": 32, "v4": 8}  # GPT-SoVITS inference's default sampling steps


@dataclass(frozen=True)
class FlowDraws:
    """The random numbers of one flow-matching loss."""

    times: torch.Tensor  # (B,) t in [0, 1)
    noise: torch.Tensor  # (B, mel, N) x0
    prompt_fraction: torch.Tensor  # (B,) u in [0, 1): prompt length = floor(u * len * 2/3)
    steps: torch.Tensor | None = None  # (B,) d = 2^-k for the extra passes; None: no extra passes


def draw(x1: torch.Tensor, extra: bool, generator: torch.Generator | None = None) -> FlowDraws:
    """Fresh draws shaped for x1 (B, mel, N); with a `generator` (CPU) they are reproducible
    and moved to x1's device (validation), else drawn on x1's device from torch's RNG."""
    b = x1.shape[0]
    where = generator.device if generator is not None else x1.device
    times = torch.rand(b, generator=generator, device=where)
    noise = torch.randn(x1.shape, generator=generator, device=where)
    fraction = torch.rand(b, generator=generator, device=where)
    steps = None
    if extra:
        k = torch.randint(*EXTRA_STEP_EXPONENTS, (b,), generator=generator, device=where)
        steps = torch.pow(2.0, -k.float())
    move = lambda t: None if t is None else t.to(x1.device)  # noqa: E731
    return FlowDraws(move(times).to(x1.dtype), move(noise).to(x1.dtype), move(fraction), move(steps))


def prompt_lengths(lengths: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """(B,) int64: floor(u * len * 2/3), GPT-SoVITS's random prompt of at most 2/3 of the clip."""
    return (fraction * (lengths.float() * 2 / 3)).floor().long()


class CFM(nn.Module):
    """Holds the DiT as `estimator` (GPT-SoVITS's name: `cfm.estimator.*`)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.mel_dim = cfg.mel_dim
        self.estimator = DiT(cfg)

    def forward(
        self, x1: torch.Tensor, lengths: torch.Tensor, cond: torch.Tensor, draws: FlowDraws, detach_extra: bool = False
    ) -> torch.Tensor:
        """x1 (B, mel, N) target mel, lengths (B,) valid mel frames, cond (B, C, N) features
        -> the scalar loss (fp32)."""
        prompt_lens = prompt_lengths(lengths, draws.prompt_fraction)
        frames = torch.arange(x1.shape[-1], device=x1.device)[None, :]  # (1, N)
        in_prompt = (frames < prompt_lens[:, None])[:, None, :]  # (B, 1, N)
        t = draws.times
        x0 = draws.noise
        target = x1 - x0
        xt = (x0 + t[:, None, None] * target).masked_fill(in_prompt, 0.0)
        prompt = x1.masked_fill(~in_prompt, 0.0)
        dt = torch.zeros_like(t)
        if draws.steps is not None:
            target, dt = self._extra_passes(xt, prompt, lengths, t, draws.steps, cond, detach_extra)
        predicted = self.estimator(xt, prompt, lengths, t, dt, cond)  # (B, mel, N)
        scored = ((frames >= prompt_lens[:, None]) & (frames < lengths[:, None]))[:, None, :]  # (B, 1, N)
        return masked_mse(predicted, target, scored)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, prompt: torch.Tensor, steps: int, generator: torch.Generator) -> torch.Tensor:
        """cond (B, C, N) features, prompt (B, mel, P) the known first frames (normalised mel)
        -> mel (B, mel, N), its first P frames zero; noise from `generator` (CPU: the same on every device)."""
        b, n, p = cond.shape[0], cond.shape[-1], prompt.shape[-1]
        x = torch.randn((b, self.mel_dim, n), generator=generator, device=generator.device).to(cond.device, cond.dtype)
        x[..., :p] = 0
        known = torch.zeros_like(x)
        known[..., :p] = prompt.to(x.dtype)
        lengths = torch.full((b,), n, dtype=torch.int64, device=cond.device)
        d = 1.0 / steps
        dt = torch.full((b,), d, dtype=x.dtype, device=x.device)
        t = 0.0
        for _ in range(steps):
            v = self.estimator(x, known, lengths, torch.full_like(dt, t), dt, cond)  # (B, mel, N)
            x = x + d * v
            t += d  # accumulated as upstream does (its t drifts from k d by float rounding)
            x[..., :p] = 0
        return x

    def _extra_passes(
        self, xt: torch.Tensor, prompt: torch.Tensor, lengths: torch.Tensor, t: torch.Tensor, d: torch.Tensor, cond: torch.Tensor, detach: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-step target (v1 + v2) / 2 and the main pass's dt = 2d."""
        told = torch.where(d < EXTRA_STEP_FLOOR, torch.zeros_like(d), d).to(t.dtype)
        scale = d.to(xt.dtype)[:, None, None]
        with torch.no_grad() if detach else contextlib.nullcontext():
            v1 = self.estimator(xt, prompt, lengths, t, told, cond).detach()
            v2 = self.estimator(xt + scale * v1, prompt, lengths, t + d.to(t.dtype), told, cond).detach()
        return (v1 + v2) / 2, (2 * d).to(t.dtype)


def masked_mse(predicted: torch.Tensor, target: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Mean over samples of each sample's mean squared error on its scored frames, fp32.

    predicted, target (B, mel, N); scored (B, 1, N) bool. A sample with no
    scored frame (possible only for a 1-frame clip) counts 0, not NaN."""
    weights = scored.float()
    squared = (predicted.float() - target.float()).pow(2) * weights  # (B, mel, N)
    per_sample = squared.sum(dim=(1, 2)) / (weights.sum(dim=(1, 2)) * predicted.shape[1]).clamp(min=1.0)
    return per_sample.mean()
