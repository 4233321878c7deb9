"""Multi-period discriminator (HiFi-GAN): periods 2, 3, 5, 7, 11 (v2Pro+: also 17, 23) plus one scale discriminator.

Each sub-discriminator maps a waveform (B, 1, N) to a score map (B, n) and its
feature maps (for feature matching). All convs are weight-normed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from trainer.sovits.config import DiscriminatorConfig
from trainer.sovits.weight_norm import weight_norm

LRELU_SLOPE = 0.1
Scores = list[torch.Tensor]  # one (B, n) score map per sub-discriminator
FeatureMaps = list[list[torch.Tensor]]  # per sub-discriminator, per layer



def conv_stack(convs: nn.ModuleList, conv_post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack then a 1-channel post conv: (flattened scores (B, -1), every layer's output)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = conv_post(x)
    features.append(x)
    return torch.flatten(x, 1, -1), features

class PeriodDiscriminator(nn.Module):
    """Folds (B, 1, N) into (B, 1, N/p, p) and runs (5, 1) convs with stride 3 over time."""

    def __init__(self, period: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.period = period
        widths = (1, *channels)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, (5, 1), (3 if i < len(channels) - 1 else 1, 1), padding=(2, 0)))
            for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.conv_post = weight_norm(nn.Conv2d(channels[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, n = wav.shape
        if n % self.period:  # static shape: pad to a whole number of periods
            pad = self.period - n % self.period
            wav = F.pad(wav, (0, pad), mode="reflect")
            n += pad
        x = wav.view(b, c, n // self.period, self.period)  # (B, 1, N/p, p)
        return conv_stack(self.convs, self.conv_post, x)


class ScaleDiscriminator(nn.Module):
    """Strided grouped 1-D convs over the raw waveform (MelGAN style)."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        c = channels
        layers = [nn.Conv1d(1, c[0], 15, 1, padding=7)]
        # Four grouped stride-4 convs, 4 input channels per group, then a plain one.
        for c_in, c_out in zip(c[:4], c[1:5]):
            layers.append(nn.Conv1d(c_in, c_out, 41, 4, groups=max(c_in // 4, 1), padding=20))
        layers.append(nn.Conv1d(c[4], c[5], 5, 1, padding=2))
        self.convs = nn.ModuleList(weight_norm(layer) for layer in layers)
        self.conv_post = weight_norm(nn.Conv1d(c[5], 1, 3, 1, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return conv_stack(self.convs, self.conv_post, wav)


class MultiPeriodDiscriminator(nn.Module):
    """wav (B, 1, N) -> (scores, feature maps) of the scale and every period discriminator."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        subs: list[nn.Module] = [ScaleDiscriminator(cfg.scale_channels)]
        subs += [PeriodDiscriminator(p, cfg.period_channels) for p in cfg.periods]
        self.discriminators = nn.ModuleList(subs)

    def forward(self, wav: torch.Tensor) -> tuple[Scores, FeatureMaps]:
        outputs = [d(wav) for d in self.discriminators]
        return [score for score, _ in outputs], [features for _, features in outputs]
