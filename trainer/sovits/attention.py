"""Transformer pieces over channels-first sequences (B, C, T), VITS style.

Multi-head attention with 1x1-conv projections and optional relative-position
keys/values (Shaw et al. 2018, window +-4, shared by heads), a conv
feed-forward, a channels-first LayerNorm, and the post-norm encoder stack.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASKED_SCORE = -1e4  # fits fp16; softmax weight ~0


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dim of (B, C, T)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, -1), (x.shape[1],), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class MultiHeadAttention(nn.Module):
    """Attention from x (B, C, Tq) to context (B, C, Tk) -> (B, out_channels, Tq).

    With `window`, self-attention (Tq == Tk) adds learned relative-position
    embeddings for offsets in [-window, window] to keys and values; offsets
    further away get none."""

    def __init__(self, channels: int, out_channels: int, heads: int, dropout: float = 0.0, window: int | None = None) -> None:
        super().__init__()
        assert channels % heads == 0
        self.heads = heads
        self.head_channels = channels // heads
        self.window = window
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(dropout)
        if window is not None:
            # (1, 2w+1, d): one table shared by every head (GPT-SoVITS's shape and names).
            std = self.head_channels**-0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window + 1, self.head_channels) * std)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window + 1, self.head_channels) * std)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """mask (B, 1, Tq, Tk) bool: True where query may attend to key."""
        q, k, v = self._heads(self.conv_q(x)), self._heads(self.conv_k(context)), self._heads(self.conv_v(context))
        q = q / math.sqrt(self.head_channels)  # (B, H, Tq, d)
        scores = q @ k.transpose(-2, -1)  # (B, H, Tq, Tk)
        if self.window is not None:
            rel_k = relative_table(self.emb_rel_k[0], self.window, x.shape[-1])  # (2T-1, d)
            scores = scores + relative_to_absolute(q @ rel_k.transpose(0, 1))
        scores = scores.masked_fill(~mask, MASKED_SCORE)
        weights = self.drop(torch.softmax(scores, dim=-1))
        out = weights @ v  # (B, H, Tq, d)
        if self.window is not None:
            rel_v = relative_table(self.emb_rel_v[0], self.window, x.shape[-1])  # (2T-1, d)
            out = out + absolute_to_relative(weights) @ rel_v
        b, h, t, d = out.shape
        return self.conv_o(out.transpose(2, 3).reshape(b, h * d, t))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H*d, T) -> (B, H, T, d)."""
        b, _, t = x.shape
        return x.view(b, self.heads, self.head_channels, t).transpose(2, 3)


def relative_table(embeddings: torch.Tensor, window: int, length: int) -> torch.Tensor:
    """(2w+1, d) embeddings -> (2T-1, d) for offsets -(T-1)..T-1, zero outside the window."""
    pad = max(length - 1 - window, 0)
    start = max(window - (length - 1), 0)
    table = F.pad(embeddings, (0, 0, pad, pad))
    return table[start : start + 2 * length - 1]


def relative_to_absolute(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, 2T-1) by offset -> (B, H, T, T) by key: out[i, j] = x[i, j - i + T - 1].

    The pad-and-reshape "skewing" trick: no gather, no index tensors."""
    b, h, t, _ = x.shape
    x = F.pad(x, (0, 1)).reshape(b, h, 2 * t * t)  # rows of 2T
    x = F.pad(x, (0, t - 1)).reshape(b, h, t + 1, 2 * t - 1)  # rows of 2T-1 shift by one each
    return x[:, :, :t, t - 1 :]


def absolute_to_relative(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, T) by key -> (B, H, T, 2T-1) by offset: out[i, m] = x[i, m + i - (T-1)] or 0."""
    b, h, t, _ = x.shape
    x = F.pad(x, (0, t - 1)).reshape(b, h, t * (2 * t - 1))
    x = F.pad(x, (t, 0)).reshape(b, h, t, 2 * t)
    return x[:, :, :, 1:]


class FeedForward(nn.Module):
    """conv(k) -> ReLU -> dropout -> conv(k), masked, (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int, filter_channels: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel, padding=kernel // 2)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.conv_1(x * mask)))
        return self.conv_2(x * mask) * mask


class TransformerEncoder(nn.Module):
    """Post-norm self-attention encoder: (B, C, T), mask (B, 1, T) -> (B, C, T)."""

    def __init__(self, channels: int, filter_channels: int, heads: int, layers: int, kernel: int, dropout: float, window: int = 4) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(MultiHeadAttention(channels, channels, heads, dropout, window) for _ in range(layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(layers))
        self.ffn_layers = nn.ModuleList(FeedForward(channels, filter_channels, kernel, dropout) for _ in range(layers))
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(layers))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attn_mask = pair_mask(mask, mask)  # (B, 1, T, T)
        x = x * mask
        for attn, norm_1, ffn, norm_2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm_1(x + self.drop(attn(x, x, attn_mask)))
            x = norm_2(x + self.drop(ffn(x, mask)))
        return x * mask


def pair_mask(query_mask: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, Tq) and (B, 1, Tk) float masks -> (B, 1, Tq, Tk) bool."""
    return (query_mask.unsqueeze(-1) * key_mask.unsqueeze(2)) > 0


def sequence_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, T) float mask, 1 on valid frames (pure tensor ops)."""
    positions = torch.arange(max_length, device=lengths.device)
    return (positions[None, :] < lengths[:, None]).unsqueeze(1).float()
