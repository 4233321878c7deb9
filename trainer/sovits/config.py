"""Sizes of the SoVITS generator and discriminator per GPT-SoVITS version: full (the reference) and tiny (tests).

Full-size parameter counts (GPT-SoVITS facts, reproduced exactly; the
quantizer has none, its codebook is buffers):
  v2         generator 51,310,080  discriminator 46,747,132 (periods 2, 3, 5, 7, 11)
  v2Pro      generator 79,428,096  discriminator 63,189,440 (periods + 17, 23):
             adds sv_emb (Linear 20480 -> 1024), prelu (1024), ge_to512 (1024 -> 512); gin 1024
  v2ProPlus  generator 98,338,432  same discriminator: decoder starts at 768 channels, first kernel 20
v2 parts: ssl_proj 1,180,416  enc_p 14,146,048  enc_q 10,494,336  flow 10,260,096
          dec 14,662,144  ref_enc 567,040.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from trainer.audio_constants import HOP_LENGTH, PHONEME_VOCAB, SPEC_BINS, SSL_DIM
from trainer.checks import VERSIONS
SV_DIM = 20480  # ERes2NetV2 speaker-verification embedding per clip (GPT-SoVITS 7-sv_cn/)


@dataclass(frozen=True)
class GeneratorConfig:
    ssl_dim: int = SSL_DIM  # input SSL features (hubert), 50 Hz
    quant_dim: int = SSL_DIM  # SSL projection / codebook width, 25 Hz
    codebook_size: int = 1024  # 1 codebook of 1024 bins
    hidden: int = 192  # hidden = inter channels (width of z)
    filter_channels: int = 768  # transformer feed-forward width
    heads: int = 2
    layers: int = 6  # text encoder layers; SSL and post encoders get layers // 2
    attn_kernel: int = 3  # feed-forward conv kernel in the transformer
    attn_window: int = 4  # relative-position window of self-attention
    dropout: float = 0.1  # GPT-SoVITS's p_dropout: 0.1 for v2, 0.0 for v2Pro / v2ProPlus
    mrte_heads: int = 4
    mrte_channels: int = 512  # MRTE cross-attention width (the style vector enters enc_p at this width)
    phoneme_vocab: int = PHONEME_VOCAB
    gin: int = 512  # style vector width (conditions enc_q, flow, dec): 512 v2, 1024 v2Pro+
    sv_dim: int = 0  # speaker-verification embedding input (0: none, v2; 20480: v2Pro+)
    spec_bins: int = SPEC_BINS  # 1025-bin linear spectrogram into enc_q
    style_bins: int = 704  # ref_enc reads the lowest 704 spectrogram bins
    style_hidden: int = 128
    style_kernel: int = 5
    style_heads: int = 2
    posterior_layers: int = 16
    posterior_kernel: int = 5
    flows: int = 4  # residual coupling layers
    flow_layers: int = 4  # WaveNet layers inside each coupling layer
    flow_kernel: int = 5
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)  # product = hop 640
    upsample_kernels: tuple[int, ...] = (16, 16, 8, 2, 2)
    upsample_channels: int = 512  # decoder's initial channels, halved per upsample
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)

    def __post_init__(self) -> None:
        hop = 1
        for r in self.upsample_rates:
            hop *= r
        assert hop == HOP_LENGTH, f"decoder upsamples by {hop}, not the hop {HOP_LENGTH}"
        assert self.hidden % self.heads == 0 and self.mrte_channels % self.mrte_heads == 0
        assert self.upsample_channels >> len(self.upsample_rates) >= 1
        assert self.sv_dim > 0 or self.gin == self.mrte_channels, "without sv_emb the style vector feeds MRTE directly"

    @property
    def has_sv(self) -> bool:
        """v2Pro / v2ProPlus: the style vector adds the speaker-verification embedding."""
        return self.sv_dim > 0


@dataclass(frozen=True)
class DiscriminatorConfig:
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    scale_channels: tuple[int, ...] = (16, 64, 256, 1024, 1024, 1024)


PRO_PERIODS = (2, 3, 5, 7, 11, 17, 23)

FULL_GENERATOR = GeneratorConfig()
FULL_DISCRIMINATOR = DiscriminatorConfig()

# Tiny: same modules and the same hop-640 upsampling (so every shape is real),
# small widths and one or two layers each. Inputs keep their real widths.
TINY_GENERATOR = GeneratorConfig(
    quant_dim=32,
    codebook_size=64,
    hidden=16,
    filter_channels=32,
    layers=2,
    mrte_heads=2,
    mrte_channels=32,
    gin=32,
    style_hidden=16,
    posterior_layers=2,
    flow_layers=1,
    upsample_channels=32,
)
TINY_DISCRIMINATOR = DiscriminatorConfig(period_channels=(4, 8, 16, 32, 32), scale_channels=(4, 8, 16, 32, 32, 32))


def check_version(version: str) -> str:
    if version not in VERSIONS:
        raise ValueError(f"unknown GPT-SoVITS version {version!r}: expected one of {', '.join(VERSIONS)}")
    return version


def generator_config(version: str = "v2", size: str = "full") -> GeneratorConfig:
    """GPT-SoVITS's s2 generator sizes for `version` (configs/s2*.json), or the tiny test size."""
    check_version(version)
    base = FULL_GENERATOR if size == "full" else TINY_GENERATOR
    if version == "v2":
        return base
    pro = replace(base, gin=2 * base.gin, sv_dim=SV_DIM, dropout=0.0)
    if version == "v2ProPlus":
        pro = replace(pro, upsample_channels=base.upsample_channels * 3 // 2, upsample_kernels=(20, *base.upsample_kernels[1:]))
    return pro


def discriminator_config(version: str = "v2", size: str = "full") -> DiscriminatorConfig:
    check_version(version)
    base = FULL_DISCRIMINATOR if size == "full" else TINY_DISCRIMINATOR
    return base if version == "v2" else replace(base, periods=PRO_PERIODS)
