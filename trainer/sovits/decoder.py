"""HiFi-GAN decoder `dec`: z segment (B, hidden, T) -> waveform (B, 1, 640 T) in [-1, 1].

Upsampling 10 x 8 x 2 x 2 x 2 = 640 (the STFT hop), channels halving from
512 (v2ProPlus: 768, first kernel 20); multi-receptive-field fusion with resblock "1" (kernels 3, 7, 11 with
dilations 1, 3, 5); conditioned on the style vector at the input.

The same class (GPT-SoVITS's `Generator`) is v4's vocoder (trainer/sovits/vocoder.py):
mel (B, 100, N) -> (B, 1, 480 N), gin 0 (no `cond`), conv_post with a bias, weight
norm removed (`remove_weight_norm`) so its keys are plain weight / bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from trainer.sovits.config import GeneratorConfig
from trainer.sovits.weight_norm import remove_weight_norm, weight_norm

LRELU_SLOPE = 0.1


def _init_small(conv: nn.Module) -> nn.Module:
    """HiFi-GAN init: N(0, 0.01) weights, applied before weight norm."""
    nn.init.normal_(conv.weight, 0.0, 0.01)
    return conv


def _same_padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """Three (dilated conv, conv) pairs with leaky-ReLU and residuals: (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()

        def conv(d: int) -> nn.Module:
            return weight_norm(_init_small(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_same_padding(kernel, d))))

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x

    def remove_weight_norm(self) -> None:
        for conv in (*self.convs1, *self.convs2):
            remove_weight_norm(conv)


class Decoder(nn.Module):
    """cfg: a GeneratorConfig, or any object with its decoder fields (hidden, upsample_*,
    resblock_*, gin; gin 0: no style input). post_bias: conv_post has a bias (v4's vocoder)."""

    def __init__(self, cfg: GeneratorConfig, post_bias: bool = False) -> None:
        super().__init__()
        ch = cfg.upsample_channels
        self.kernels = len(cfg.resblock_kernels)
        self.conv_pre = nn.Conv1d(cfg.hidden, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        # One flat list, `kernels` blocks per upsampling stage (GPT-SoVITS's layout).
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernels)):
            c_in, c_out = ch >> i, ch >> (i + 1)
            # padding (k - r) / 2 makes the output exactly r times longer.
            self.ups.append(weight_norm(_init_small(nn.ConvTranspose1d(c_in, c_out, kernel, rate, padding=(kernel - rate) // 2))))
            self.resblocks.extend(ResBlock(c_out, k, cfg.resblock_dilations) for k in cfg.resblock_kernels)
        self.conv_post = nn.Conv1d(ch >> len(cfg.upsample_rates), 1, 7, padding=3, bias=post_bias)
        if cfg.gin:
            self.cond = nn.Conv1d(cfg.gin, ch, 1)

    def forward(self, z: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, hidden, T), style (B, gin, 1) or None (gin 0) -> (B, 1, hop T), hop = the product of the rates."""
        x = self.conv_pre(z)  # (B, 512, T)
        if style is not None:
            x = x + self.cond(style)
        k = self.kernels
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))  # (B, C/2, rate * T)
            x = sum(block(x) for block in self.resblocks[i * k : (i + 1) * k]) / k  # multi-receptive-field fusion
        return torch.tanh(self.conv_post(F.leaky_relu(x)))

    def remove_weight_norm(self) -> "Decoder":
        """Plain `weight` parameters in ups and resblocks (conv_pre and conv_post never had weight norm)."""
        for up in self.ups:
            remove_weight_norm(up)
        for block in self.resblocks:
            block.remove_weight_norm()
        return self
