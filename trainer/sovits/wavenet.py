"""WaveNet-style non-causal stack (VITS "WN"), conditioned on a global vector g.

Used by the posterior encoder (16 layers) and by every flow coupling layer (4).
Weight norm with GPT-SoVITS's parameter names `weight_g` / `weight_v`
(`weight_norm.py`); submodule names and order are GPT-SoVITS's (`in_layers`,
`res_skip_layers`, `cond_layer`).
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.sovits.weight_norm import weight_norm


class WaveNet(nn.Module):
    """(B, hidden, T), mask (B, 1, T), g (B, gin, 1) -> (B, hidden, T) sum of skips."""

    def __init__(self, hidden: int, kernel: int, layers: int, gin: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = hidden
        self.layers = layers
        self.in_layers = nn.ModuleList(weight_norm(nn.Conv1d(hidden, 2 * hidden, kernel, padding=kernel // 2)) for _ in range(layers))
        # The last layer only feeds the skip sum, so it needs half the channels.
        self.res_skip_layers = nn.ModuleList(
            weight_norm(nn.Conv1d(hidden, 2 * hidden if i < layers - 1 else hidden, 1)) for i in range(layers)
        )
        self.drop = nn.Dropout(dropout)
        # One 1x1 conv makes every layer's conditioning at once: (B, 2*hidden*layers, 1).
        self.cond_layer = weight_norm(nn.Conv1d(gin, 2 * hidden * layers, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        cond = self.cond_layer(g)  # (B, 2*hidden*layers, 1)
        h = self.hidden
        skips = torch.zeros_like(x)
        for i, (conv, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            z = conv(x) + cond[:, 2 * h * i : 2 * h * (i + 1)]  # (B, 2h, T)
            acts = self.drop(torch.tanh(z[:, :h]) * torch.sigmoid(z[:, h:]))  # gated activation
            out = res_skip(acts)
            if i < self.layers - 1:
                x = (x + out[:, :h]) * mask
                skips = skips + out[:, h:]
            else:
                skips = skips + out
        return skips * mask
