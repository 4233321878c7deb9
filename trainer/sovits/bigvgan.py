"""BigVGAN v2 (NVIDIA), the s2 v3 vocoder: mel (B, num_mels, N) -> waveform (B, 1, prod(rates) N).

GPT-SoVITS v3 voices its mel with `bigvgan_v2_24khz_100band_256x` (100 mels, 24 kHz,
rates 4/4/2/2/2/2 = 256, kernels 8/8/4/4/4/4, 1536 channels halving per stage,
resblock "1" with kernels 3/7/11 and dilations 1/3/5, SnakeBeta with log-scale
parameters, no tanh and no bias at the end: its config.json). Written for this
project from the architecture and key names of NVIDIA/BigVGAN v2.4 (bigvgan.py,
activations.py, alias_free_activation/torch/; GPT-SoVITS's GPT_SoVITS/BigVGAN is
the same network); none of their code copied. Key names are BigVGAN's, so its
`bigvgan_generator.pt` (`{"generator": state_dict}`, weight-normed
`weight_g` / `weight_v`) loads strictly:

    conv_pre                      Conv1d(num_mels, C, 7), weight norm
    ups.<i>.0                     ConvTranspose1d(C / 2^i, C / 2^(i+1), k_i, stride r_i, padding (k_i - r_i) / 2), weight norm
    resblocks.<i * K + j>         AMP block at C / 2^(i+1), kernel j; outputs of a stage's K blocks averaged
      convs1.<m>, convs2.<m>      dilated conv, then conv with dilation 1 ("1"; "2" has only `convs.<m>`)
      activations.<a>             anti-aliased activation before each conv
    activation_post               anti-aliased activation on the last stage's output
    conv_post                     Conv1d(C / 2^stages, 1, 7), weight norm, bias per use_bias_at_final
    then tanh (use_tanh_at_final) or a clamp to [-1, 1]

An anti-aliased activation (`AntiAliased`, BigVGAN's Activation1d) upsamples x2
with a windowed-sinc (Kaiser) filter, applies Snake / SnakeBeta, and low-passes
and decimates x2 with the same kind of filter: `upsample.filter` and
`downsample.lowpass.filter` are persistent buffers (the checkpoint carries them).
Snake: x + sin^2(a x) / a; SnakeBeta: x + sin^2(a x) / b, per channel; with
`snake_logscale` the stored parameters are ln a, ln b.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer.sovits.weight_norm import remove_weight_norm, weight_norm

TINY = 1e-9  # keeps 1 / b finite where b = 0
RESAMPLE_RATIO = 2  # the activations run at twice the rate
RESAMPLE_KERNEL = 12


def kaiser_sinc(cutoff: float, half_width: float, kernel: int) -> torch.Tensor:
    """A low-pass FIR filter (1, 1, kernel), cutoff and transition half-width as fractions of
    the sample rate: sinc at 2 cutoff, Kaiser window whose beta follows Kaiser's formula for
    the attenuation the width allows; normalised to unit DC gain."""
    half = kernel // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95  # dB
    if attenuation > 50:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel, periodic=False, beta=beta)
    if kernel % 2 == 0:  # taps sit between samples: -half + 0.5 ... half - 0.5
        time = torch.arange(-half, half) + 0.5
    else:
        time = torch.arange(kernel) - half
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps / taps.sum()).view(1, 1, kernel)


class LowPass(nn.Module):
    """Depthwise FIR low-pass with replicate padding, then keeps every `stride`-th sample."""

    def __init__(self, cutoff: float, half_width: float, stride: int, kernel: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = (kernel // 2 - (kernel % 2 == 0), kernel // 2)  # (left, right)
        self.register_buffer("filter", kaiser_sinc(cutoff, half_width, kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.filter.expand(x.shape[1], -1, -1)  # (C, 1, K)
        return F.conv1d(F.pad(x, self.pad, mode="replicate"), taps, stride=self.stride, groups=x.shape[1])


class Downsample(nn.Module):
    """(B, C, T) -> (B, C, T / ratio): low-pass at the new Nyquist, decimate."""

    def __init__(self, ratio: int = RESAMPLE_RATIO, kernel: int = RESAMPLE_KERNEL) -> None:
        super().__init__()
        self.lowpass = LowPass(0.5 / ratio, 0.6 / ratio, ratio, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class Upsample(nn.Module):
    """(B, C, T) -> (B, C, ratio T): zero-stuffing through a transposed depthwise FIR (gain `ratio`),
    with replicate padding at both ends trimmed back off."""

    def __init__(self, ratio: int = RESAMPLE_RATIO, kernel: int = RESAMPLE_KERNEL) -> None:
        super().__init__()
        self.ratio = ratio
        self.pad = kernel // ratio - 1  # input samples replicated at each end
        self.trim = (self.pad * ratio + (kernel - ratio) // 2, self.pad * ratio + (kernel - ratio + 1) // 2)
        self.register_buffer("filter", kaiser_sinc(0.5 / ratio, 0.6 / ratio, kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.filter.expand(x.shape[1], -1, -1)
        y = self.ratio * F.conv_transpose1d(F.pad(x, (self.pad, self.pad), mode="replicate"), taps, stride=self.ratio, groups=x.shape[1])
        return y[..., self.trim[0] : y.shape[-1] - self.trim[1]]


class Snake(nn.Module):
    """x + sin^2(a x) / a per channel (SnakeBeta: / b, a second parameter); log-scale: stored ln a (ln b)."""

    def __init__(self, channels: int, log_scale: bool, beta: bool) -> None:
        super().__init__()
        self.log_scale = log_scale
        start = torch.zeros(channels) if log_scale else torch.ones(channels)
        self.alpha = nn.Parameter(start.clone())
        if beta:
            self.beta = nn.Parameter(start.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha[None, :, None]
        b = self.beta[None, :, None] if hasattr(self, "beta") else a
        if self.log_scale:
            a, b = a.exp(), b.exp()
        return x + torch.sin(x * a).pow(2) / (b + TINY)


class AntiAliased(nn.Module):
    """BigVGAN's Activation1d: upsample x2 -> activation -> low-pass and decimate x2."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act
        self.upsample = Upsample()
        self.downsample = Downsample()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


def _conv(channels: int, kernel: int, dilation: int) -> nn.Module:
    return weight_norm(nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=(kernel * dilation - dilation) // 2))


class AMPBlock(nn.Module):
    """Residual anti-aliased multi-periodicity block: (B, C, T) -> (B, C, T).
    kind "1": per dilation, act -> dilated conv -> act -> conv (dilation 1), added back;
    kind "2": per dilation, act -> dilated conv, added back."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...], kind: str, activation) -> None:
        super().__init__()
        self.kind = kind
        if kind == "1":
            self.convs1 = nn.ModuleList(_conv(channels, kernel, d) for d in dilations)
            self.convs2 = nn.ModuleList(_conv(channels, kernel, 1) for _ in dilations)
            count = 2 * len(dilations)
        else:
            self.convs = nn.ModuleList(_conv(channels, kernel, d) for d in dilations)
            count = len(dilations)
        self.activations = nn.ModuleList(AntiAliased(activation(channels)) for _ in range(count))

    def convolutions(self) -> list[nn.Module]:
        return [*self.convs1, *self.convs2] if self.kind == "1" else list(self.convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "1":
            for m, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
                x = x + c2(self.activations[2 * m + 1](c1(self.activations[2 * m](x))))
            return x
        for conv, act in zip(self.convs, self.activations):
            x = x + conv(act(x))
        return x


class BigVGAN(nn.Module):
    """Built from BigVGAN's config.json fields (a dict); weight-normed as NVIDIA ships its checkpoints."""

    def __init__(self, h: dict) -> None:
        super().__init__()
        channels = int(h["upsample_initial_channel"])
        rates, kernels = list(h["upsample_rates"]), list(h["upsample_kernel_sizes"])
        self.kernels = len(h["resblock_kernel_sizes"])
        log_scale = bool(h["snake_logscale"])

        def activation(ch: int) -> nn.Module:
            return Snake(ch, log_scale, beta=h["activation"] == "snakebeta")

        self.conv_pre = weight_norm(nn.Conv1d(int(h["num_mels"]), channels, 7, padding=3))
        self.ups = nn.ModuleList(
            nn.ModuleList([weight_norm(nn.ConvTranspose1d(channels >> i, channels >> (i + 1), k, r, padding=(k - r) // 2))])
            for i, (r, k) in enumerate(zip(rates, kernels))
        )
        self.resblocks = nn.ModuleList(
            AMPBlock(channels >> (i + 1), k, tuple(d), str(h["resblock"]), activation)
            for i in range(len(rates)) for k, d in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"])
        )
        last = channels >> len(rates)
        self.activation_post = AntiAliased(activation(last))
        self.conv_post = weight_norm(nn.Conv1d(last, 1, 7, padding=3, bias=bool(h.get("use_bias_at_final", True))))
        self.tanh = bool(h.get("use_tanh_at_final", True))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, num_mels, N), natural-log magnitudes -> (B, 1, prod(rates) N) in [-1, 1]."""
        x = self.conv_pre(mel)
        for i, stage in enumerate(self.ups):
            for up in stage:
                x = up(x)
            blocks = self.resblocks[i * self.kernels : (i + 1) * self.kernels]
            x = sum(block(x) for block in blocks) / self.kernels
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x) if self.tanh else x.clamp(-1.0, 1.0)

    def weight_normed(self) -> list[nn.Module]:
        return [self.conv_pre, *(up for stage in self.ups for up in stage), *(c for b in self.resblocks for c in b.convolutions()), self.conv_post]

    def remove_weight_norm(self) -> "BigVGAN":
        for module in self.weight_normed():
            remove_weight_norm(module)
        return self
