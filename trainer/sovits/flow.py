"""Normalising flow between posterior z and the prior space (VITS residual coupling, mean-only)."""

from __future__ import annotations

import torch
from torch import nn

from trainer.sovits.config import GeneratorConfig
from trainer.sovits.wavenet import WaveNet


class CouplingLayer(nn.Module):
    """Shift the second half of the channels by a WaveNet of the first half (volume-preserving)."""

    def __init__(self, channels: int, kernel: int, layers: int, gin: int) -> None:
        super().__init__()
        half = channels // 2
        self.pre = nn.Conv1d(half, channels, 1)
        self.enc = WaveNet(channels, kernel, layers, gin)
        self.post = nn.Conv1d(channels, half, 1)
        nn.init.zeros_(self.post.weight)  # starts as the identity map
        nn.init.zeros_(self.post.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        x0, x1 = x.chunk(2, dim=1)  # (B, C/2, T) each
        shift = self.post(self.enc(self.pre(x0) * mask, mask, g)) * mask
        x1 = (x1 - shift) * mask if reverse else (x1 + shift) * mask
        return torch.cat([x0, x1], dim=1)


class Flip(nn.Module):
    """Reverse the channel order (its own inverse); no parameters."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        return torch.flip(x, dims=[1])


class Flow(nn.Module):
    """(B, hidden, T), mask (B, 1, T), style (B, gin, 1) -> same shape.

    `flows` alternates coupling layers and flips (indices 0, 2, 4, 6 hold the
    parameters: GPT-SoVITS's key names)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(cfg.flows):
            self.flows.append(CouplingLayer(cfg.hidden, cfg.flow_kernel, cfg.flow_layers, cfg.gin))
            self.flows.append(Flip())

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        for layer in (reversed(self.flows) if reverse else self.flows):
            x = layer(x, mask, g, reverse=reverse)
        return x
