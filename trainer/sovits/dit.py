"""The diffusion transformer (DiT) that predicts the flow-matching velocity of v3 / v4's mel.

Architecture facts from INTEROP-v3v4.md section 1 (F5-TTS's DiT as GPT-SoVITS
builds it: dim 1024, 22 blocks, 16 heads of 64, FF x2, ConvNeXtV2 text blocks),
written here from those facts. Module names, registration order and shapes
are GPT-SoVITS's, so `state_dict()` is its own key for key (`cfm.estimator.*`).

Inputs per call, channels first like the rest of trainer/sovits:
  x     (B, mel, N)  noisy mel x_t (zero on prompt frames)
  cond  (B, mel, N)  the prompt: clean mel on prompt frames, zero elsewhere
  text  (B, C, N)    condition features from wns1 (C = text_dim, 512)
  lengths (B,)       valid frames (keys past them are masked; their rows zeroed)
  t, dt (B,)         flow time and the extra-pass step (0 on the main pass)
Output: the velocity (B, mel, N).

Not masked, as upstream: the conv position embedding and the ConvNeXt text
blocks see padded frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from typing import Callable

from trainer.sovits.config import DiTConfig

NORM_EPS = 1e-6
TIME_SCALE = 1000.0  # t in [0, 1) is scaled before the sinusoid
ROPE_BASE = 10000.0


class TimestepEmbedding(nn.Module):
    """(B,) times -> (B, dim): sinusoid(freq_dim) -> Linear -> SiLU -> Linear."""

    def __init__(self, dim: int, freq_dim: int) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        rates = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        angles = TIME_SCALE * t.float()[:, None] * rates[None]  # (B, half)
        return self.time_mlp(torch.cat((angles.sin(), angles.cos()), dim=-1).to(t.dtype))


class GlobalResponseNorm(nn.Module):
    """ConvNeXtV2's GRN over (B, N, C): x + gamma * x * (||x||_N / mean_C ||x||_N) + beta."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # (B, 1, C): L2 over the sequence
        scaled = norm / (norm.mean(dim=-1, keepdim=True) + NORM_EPS)
        return self.gamma * (x * scaled) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Residual (B, N, C): depthwise conv k7 -> LayerNorm -> Linear C->hidden -> GELU -> GRN -> Linear back."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=NORM_EPS)
        self.pwconv1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(hidden)
        self.pwconv2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        return x + self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))


class TextEmbedding(nn.Module):
    """Condition features (B, N, C) + fixed sinusoidal positions -> ConvNeXt blocks -> (B, N, C)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        # (positions, C): cos of C/2 frequencies then their sin; rebuilt, never saved (upstream: non-persistent).
        self.register_buffer("freqs_cis", sinusoid_table(cfg.text_dim, cfg.text_positions), persistent=False)
        self.text_blocks = nn.Sequential(*(ConvNeXtBlock(cfg.text_dim, cfg.text_dim * cfg.conv_mult) for _ in range(cfg.conv_layers)))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        n = text.shape[1]
        positions = torch.arange(n, device=text.device).clamp(max=self.freqs_cis.shape[0] - 1)  # beyond the table: its last row
        return self.text_blocks(text + self.freqs_cis[positions].to(text.dtype))


def sinusoid_table(channels: int, positions: int) -> torch.Tensor:
    """(positions, channels): [cos(p w_i) for i < C/2, sin(p w_i) for i < C/2], w_i = 10000^(-2i/C)."""
    freqs = 1.0 / (10000.0 ** (torch.arange(0, channels, 2)[: channels // 2].float() / channels))
    angles = torch.outer(torch.arange(positions, dtype=torch.float32), freqs)
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


class ConvPositionEmbedding(nn.Module):
    """(B, N, dim) -> (B, N, dim): two grouped convs (k31, 16 groups), each followed by Mish."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, kernel, groups=groups, padding=kernel // 2), nn.Mish(),
            nn.Conv1d(dim, dim, kernel, groups=groups, padding=kernel // 2), nn.Mish(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1d(x.transpose(1, 2)).transpose(1, 2)


class InputEmbedding(nn.Module):
    """[x (mel), cond (mel), text (C)] -> Linear -> dim, plus the conv position embedding."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * cfg.mel_dim + cfg.text_dim, cfg.dim)
        self.conv_pos_embed = ConvPositionEmbedding(cfg.dim, cfg.conv_pos_kernel, cfg.conv_pos_groups)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x = self.proj(torch.cat((x, cond, text), dim=-1))  # (B, N, dim)
        return self.conv_pos_embed(x) + x


class RotaryEmbedding(nn.Module):
    """Rotary position angles for head_dim channels, interleaved pairs (x0,x1),(x2,x3)...
    `inv_freq` (head_dim/2,) is a persistent buffer, as in x_transformers."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2).float() / head_dim)))

    def forward(self, n: int) -> torch.Tensor:
        """(N, head_dim) angles, each frequency repeated for its pair; fp32 (positions up to ~2000)."""
        positions = torch.arange(n, device=self.inv_freq.device, dtype=torch.float32)
        return torch.outer(positions, self.inv_freq.float()).repeat_interleave(2, dim=-1)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first angles.shape[-1] channels of x (B, N, D) by angles (N, r); the rest pass through."""
    r = angles.shape[-1]
    head, rest = x[..., :r], x[..., r:]
    pairs = head.unflatten(-1, (r // 2, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (x0,x1) -> (-x1,x0)
    out = head.float() * angles.cos() + rotated.float() * angles.sin()
    return torch.cat((out.to(x.dtype), rest), dim=-1)


class Attention(nn.Module):
    """Masked self-attention: to_q/to_k/to_v/to_out.0 Linear(dim, dim) with bias, to_out.1 dropout.

    The rotary embedding is applied to the whole (B, N, dim) q and k before the
    head split, so only head 0's channels rotate (upstream's behaviour)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """x (B, N, dim), mask (B, N) bool (valid frames), angles (N, head_dim)."""
        b, n, dim = x.shape
        q = apply_rotary(self.to_q(x), angles)
        k = apply_rotary(self.to_k(x), angles)
        v = self.to_v(x)
        q, k, v = (y.view(b, n, self.heads, dim // self.heads).transpose(1, 2) for y in (q, k, v))  # (B, H, N, d)
        key_mask = mask[:, None, None, :].expand(b, self.heads, n, n)  # (B, H, N, N) view, as upstream passes it
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        out = out.transpose(1, 2).reshape(b, n, dim).to(q.dtype)
        out = self.to_out[1](self.to_out[0](out))
        return out.masked_fill(~mask[..., None], 0.0)  # padded rows are zero


class AdaLayerNormZero(nn.Module):
    """t (B, dim) -> 6 modulations; returns the modulated norm of x and the other five."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shift, scale, gate, shift_ff, scale_ff, gate_ff = self.linear(self.silu(t)).chunk(6, dim=1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None], gate, shift_ff, scale_ff, gate_ff


class FinalAdaLayerNorm(nn.Module):
    """norm_out: t (B, dim) -> (scale, shift) applied to a LayerNorm without affine."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(self.silu(t)).chunk(2, dim=1)  # this order (scale first): upstream's
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class FeedForward(nn.Module):
    """ff.0.0 Linear dim->mult*dim, ff.0.1 GELU(tanh), ff.1 Dropout, ff.2 Linear back."""

    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__()
        inner = dim * mult
        self.ff = nn.Sequential(nn.Sequential(nn.Linear(dim, inner), nn.GELU(approximate="tanh")), nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class DiTBlock(nn.Module):
    """adaLN-zero attention and feed-forward, each with a gated residual."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.attn_norm = AdaLayerNormZero(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.dropout)
        self.ff_norm = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=NORM_EPS)
        self.ff = FeedForward(cfg.dim, cfg.ff_mult, cfg.dropout)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        normed, gate, shift_ff, scale_ff, gate_ff = self.attn_norm(x, t)
        x = x + gate[:, None] * self.attn(normed, mask, angles)
        normed = self.ff_norm(x) * (1 + scale_ff[:, None]) + shift_ff[:, None]
        return x + gate_ff[:, None] * self.ff(normed)


class DiT(nn.Module):
    """The velocity estimator; `checkpoint_blocks` recomputes each block in backward
    (GPT-SoVITS's grad_ckpt: torch.utils.checkpoint, use_reentrant=False).
    `checkpoint_context`: torch.utils.checkpoint's `context_fn` (None: torch's default);
    the probe's meta trace sets it so a recomputation runs under the modes of its forward."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.checkpoint_blocks = False
        self.checkpoint_context: Callable | None = None
        # Registration order = GPT-SoVITS's state_dict order.
        self.time_embed = TimestepEmbedding(cfg.dim, cfg.freq_dim)
        self.d_embed = TimestepEmbedding(cfg.dim, cfg.freq_dim)
        self.text_embed = TextEmbedding(cfg)
        self.input_embed = InputEmbedding(cfg)
        self.rotary_embed = RotaryEmbedding(cfg.head_dim)
        self.transformer_blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.norm_out = FinalAdaLayerNorm(cfg.dim)
        self.proj_out = nn.Linear(cfg.dim, cfg.mel_dim)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, lengths: torch.Tensor, t: torch.Tensor, dt: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        """Shapes in the module docstring; returns (B, mel, N)."""
        x, cond, text = x.transpose(1, 2), cond.transpose(1, 2), text.transpose(1, 2)  # (B, N, .)
        n = x.shape[1]
        mask = torch.arange(n, device=x.device)[None, :] < lengths[:, None]  # (B, N) bool
        time = self.time_embed(t) + self.d_embed(dt)  # (B, dim): conditions every block
        h = self.input_embed(x, cond, self.text_embed(text))  # (B, N, dim)
        angles = self.rotary_embed(n)
        for block in self.transformer_blocks:
            if self.checkpoint_blocks and torch.is_grad_enabled():
                context = {"context_fn": self.checkpoint_context} if self.checkpoint_context else {}
                h = checkpoint(block, h, time, mask, angles, use_reentrant=False, **context)
            else:
                h = block(h, time, mask, angles)
        return self.proj_out(self.norm_out(h, time)).transpose(1, 2)
