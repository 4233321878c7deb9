"""Reference encoder `ref_enc`: spectrogram bins -> one style vector (StyleSpeech mel-style encoder).

Reads the lowest 704 of the 1025 linear-spectrogram bins of the same
utterance; spectral MLP, two gated temporal convs, masked self-attention,
projection to gin and a masked average over time. Module names are
GPT-SoVITS's (`spectral.0/3.fc`, `temporal.N.conv1.conv`, `slf_attn.w_qs`,
`fc.fc`), so the state_dict is its own.

Attention scores are divided by sqrt(channels) = sqrt(128), not sqrt of the
per-head width, and masked keys get -inf: what GPT-SoVITS computes (an
earlier version of ours divided by sqrt(64)). Every utterance has at least
one valid frame, so no row is all -inf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.sovits.config import GeneratorConfig


class Named(nn.Module):
    """A wrapper that only adds a level to the parameter names (`fc.fc`, `conv1.conv`)."""

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._modules[self.name](x)


class GatedConv(nn.Module):
    """Residual GLU conv over time: (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = Named("conv", nn.Conv1d(channels, 2 * channels, kernel, padding=kernel // 2))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(F.glu(self.conv1(x), dim=1))


class StyleAttention(nn.Module):
    """Residual masked self-attention over (B, T, C) with linear projections."""

    def __init__(self, channels: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = channels**-0.5  # 1/sqrt(128) for every head width (GPT-SoVITS)
        self.w_qs = nn.Linear(channels, channels)
        self.w_ks = nn.Linear(channels, channels)
        self.w_vs = nn.Linear(channels, channels)
        self.fc = nn.Linear(channels, channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), key_mask (B, T) bool."""
        b, t, c = x.shape
        d = c // self.heads
        q, k, v = (w(x).view(b, t, self.heads, d).transpose(1, 2) for w in (self.w_qs, self.w_ks, self.w_vs))  # (B, H, T, d)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, T, T)
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        out = self.drop(torch.softmax(scores, dim=-1)) @ v  # (B, H, T, d)
        return x + self.drop(self.fc(out.transpose(1, 2).reshape(b, t, c)))


class StyleEncoder(nn.Module):
    """spec bins (B, 704, T), mask (B, 1, T) -> style (B, gin, 1)."""

    def __init__(self, cfg: GeneratorConfig, dropout: float = 0.1) -> None:
        super().__init__()
        h = cfg.style_hidden
        # spectral: Linear, Mish, Dropout, Linear, Mish, Dropout (the Linears at 0 and 3)
        self.spectral = nn.Sequential(
            Named("fc", nn.Linear(cfg.style_bins, h)), nn.Mish(), nn.Dropout(dropout),
            Named("fc", nn.Linear(h, h)), nn.Mish(), nn.Dropout(dropout),
        )
        self.temporal = nn.Sequential(GatedConv(h, cfg.style_kernel, dropout), GatedConv(h, cfg.style_kernel, dropout))
        self.slf_attn = StyleAttention(h, cfg.style_heads, dropout)
        self.fc = Named("fc", nn.Linear(h, cfg.gin))

    def forward(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = spec.transpose(1, 2)  # (B, T, bins)
        x = self.spectral(x)  # (B, T, h)
        x = self.temporal(x.transpose(1, 2)) * mask  # (B, h, T)
        x = self.slf_attn(x.transpose(1, 2), mask[:, 0] > 0)  # (B, T, h)
        x = self.fc(x)  # (B, T, gin)
        weights = mask.transpose(1, 2)  # (B, T, 1)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # masked mean over time: (B, gin)
        return pooled.unsqueeze(-1)
