"""Posterior encoder `enc_q`: linear spectrogram -> z ~ N(mean, std) (VITS)."""

from __future__ import annotations

import torch
from torch import nn

from trainer.sovits.config import GeneratorConfig
from trainer.sovits.wavenet import WaveNet


class PosteriorEncoder(nn.Module):
    """spec (B, 1025, T), mask (B, 1, T), style (B, gin, 1) -> (z, mean, log_std), each (B, hidden, T)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.pre = nn.Conv1d(cfg.spec_bins, cfg.hidden, 1)
        self.enc = WaveNet(cfg.hidden, cfg.posterior_kernel, cfg.posterior_layers, cfg.gin)
        self.proj = nn.Conv1d(cfg.hidden, 2 * cfg.hidden, 1)

    def forward(self, spec: torch.Tensor, mask: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pre(spec) * mask
        x = self.enc(x, mask, style)
        mean, log_std = (self.proj(x) * mask).chunk(2, dim=1)
        z = (mean + torch.randn_like(mean) * torch.exp(log_std)) * mask  # reparameterised sample
        return z, mean, log_std
