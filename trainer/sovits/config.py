"""Sizes of the SoVITS v2 generator and discriminator: full (the reference) and tiny (tests).

Full-size parameter counts (GPT-SoVITS v2 facts, reproduced exactly):
  ssl_proj 1,180,416   quantizer 0 (EMA buffers)   enc_p 14,146,048
  enc_q 10,494,336     flow 10,260,096             dec 14,662,144
  ref_enc 567,040      -> generator 51,310,080;  discriminator 46,747,132.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.audio_constants import HOP_LENGTH, PHONEME_VOCAB, SPEC_BINS, SSL_DIM


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
    dropout: float = 0.1
    mrte_heads: int = 4  # MRTE cross-attention runs at width gin
    phoneme_vocab: int = PHONEME_VOCAB
    gin: int = 512  # style vector width (conditions everything)
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
        assert self.hidden % self.heads == 0 and self.gin % self.mrte_heads == 0
        assert self.upsample_channels >> len(self.upsample_rates) >= 1


@dataclass(frozen=True)
class DiscriminatorConfig:
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    scale_channels: tuple[int, ...] = (16, 64, 256, 1024, 1024, 1024)


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
    gin=32,
    style_hidden=16,
    posterior_layers=2,
    flow_layers=1,
    upsample_channels=32,
)
TINY_DISCRIMINATOR = DiscriminatorConfig(period_channels=(4, 8, 16, 32, 32), scale_channels=(4, 8, 16, 32, 32, 32))
