"""Reference encoder `ref_enc`: spectrogram bins -> one style vector (StyleSpeech mel-style encoder).

Reads the lowest 704 of the 1025 linear-spectrogram bins of the same
utterance; spectral MLP, two gated temporal convs, masked self-attention,
projection to gin and a masked average over time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer.sovits.attention import MASKED_SCORE
from trainer.sovits.config import GeneratorConfig


class GatedConv(nn.Module):
    """Residual GLU conv over time: (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 2 * channels, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(F.glu(self.conv(x), dim=1))


class StyleAttention(nn.Module):
    """Residual masked self-attention over (B, T, C) with linear projections."""

    def __init__(self, channels: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.w_q = nn.Linear(channels, channels)
        self.w_k = nn.Linear(channels, channels)
        self.w_v = nn.Linear(channels, channels)
        self.fc = nn.Linear(channels, channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), key_mask (B, T) bool."""
        b, t, c = x.shape
        d = c // self.heads
        q, k, v = (w(x).view(b, t, self.heads, d).transpose(1, 2) for w in (self.w_q, self.w_k, self.w_v))  # (B, H, T, d)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (B, H, T, T)
        scores = scores.masked_fill(~key_mask[:, None, None, :], MASKED_SCORE)
        out = self.drop(torch.softmax(scores, dim=-1)) @ v  # (B, H, T, d)
        return x + self.drop(self.fc(out.transpose(1, 2).reshape(b, t, c)))


class StyleEncoder(nn.Module):
    """spec bins (B, 704, T), mask (B, 1, T) -> style (B, gin, 1)."""

    def __init__(self, cfg: GeneratorConfig, dropout: float = 0.1) -> None:
        super().__init__()
        h = cfg.style_hidden
        self.spectral_1 = nn.Linear(cfg.style_bins, h)
        self.spectral_2 = nn.Linear(h, h)
        self.temporal = nn.Sequential(GatedConv(h, cfg.style_kernel, dropout), GatedConv(h, cfg.style_kernel, dropout))
        self.attention = StyleAttention(h, cfg.style_heads, dropout)
        self.out = nn.Linear(h, cfg.gin)
        self.drop = nn.Dropout(dropout)

    def forward(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = spec.transpose(1, 2)  # (B, T, bins)
        x = self.drop(F.mish(self.spectral_1(x)))
        x = self.drop(F.mish(self.spectral_2(x)))  # (B, T, h)
        x = self.temporal(x.transpose(1, 2)) * mask  # (B, h, T)
        x = self.attention(x.transpose(1, 2), mask[:, 0] > 0)  # (B, T, h)
        x = self.out(x)  # (B, T, gin)
        weights = mask.transpose(1, 2)  # (B, T, 1)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # masked mean over time: (B, gin)
        return pooled.unsqueeze(-1)
