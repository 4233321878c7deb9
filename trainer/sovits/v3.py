"""GPT-SoVITS v3 / v4's s2 model (`SynthesizerTrnV3`): the v2 text side and a DiT mel decoder.

Parts, in GPT-SoVITS's registration (= state_dict) order (INTEROP-v3v4.md section 1):
  enc_p       v2 text encoder (SSL content + phonemes + style -> (B, 192, T) at 50 Hz)
  ref_enc     style encoder on the lowest 704 spectrogram bins -> (B, 512, 1)
  ssl_proj    Conv1d 768 -> 768, k2 s2 (50 -> 25 Hz)
  quantizer   1 codebook 1024 x 768 (buffers only)
  bridge      Conv1d 192 -> 512 (k1) + LeakyReLU
  wns1        WaveNet encoder (pre, enc, proj) at 512, 8 layers, k5, gin 512
  linear_mel  Conv1d 512 -> 100: built and saved, never called (upstream's too)
  cfm         the flow-matching wrapper around the DiT (`cfm.estimator`)
382,821,064 parameters at full size; v3 and v4 have the same shapes and differ
only in the mel they predict and the condition upsampling (x1.875 / x2).

Frozen in both recipes, as GPT-SoVITS's `freeze_quantizer: true`: ssl_proj,
quantizer and enc_p (no gradient, always in eval mode: no EMA, no dropout).
`frozen_style=True` (the advisor recipe) also freezes ref_enc and linear_mel:
upstream trains them, yet neither ever receives a gradient (docs/ARCHITECTURE.md).
The DiT's own freezing and LoRA are `trainer/sovits/lora.py`'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.sovits.attention import sequence_mask
from trainer.sovits.cfm import CFM
from trainer.sovits.config import V3Config
from trainer.sovits.quantizer import ResidualVectorQuantizer
from trainer.sovits.style import StyleEncoder
from trainer.sovits.text_encoder import TextEncoder
from trainer.sovits.wavenet import WaveNet

PARTS = ("enc_p", "ref_enc", "ssl_proj", "quantizer", "bridge", "wns1", "linear_mel", "cfm")
FROZEN_PARTS = ("ssl_proj", "quantizer", "enc_p")  # freeze_quantizer
UNUSED_PARTS = ("ref_enc", "linear_mel")  # trained upstream, never given a gradient


class WaveNetEncoder(nn.Module):
    """wns1: (B, C, T), lengths (B,), style (B, gin, 1) -> (B, C, T); pre 1x1 -> WaveNet -> proj 1x1.

    The style is detached, as upstream's Encoder does: ref_enc gets no gradient through here."""

    def __init__(self, channels: int, kernel: int, layers: int, gin: int) -> None:
        super().__init__()
        self.pre = nn.Conv1d(channels, channels, 1)
        self.enc = WaveNet(channels, kernel, layers, gin)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        mask = sequence_mask(lengths, x.shape[-1]).to(x.dtype)  # (B, 1, T)
        x = self.pre(x) * mask
        return self.proj(self.enc(x, mask, style.detach())) * mask


class SynthesizerTrnV3(nn.Module):
    """Inputs: ssl (B, 768, T) and spec (B, 1025, T) at 50 Hz (T even), spec_lens (B,),
    phonemes (B, P), phoneme_lens (B,); mel (B, 100, M) normalised, mel_lens (B,)."""

    def __init__(self, cfg: V3Config, frozen_style: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.frozen_style = frozen_style
        text = cfg.text
        self.enc_p = TextEncoder(text)
        self.ref_enc = StyleEncoder(text)
        self.ssl_proj = nn.Conv1d(text.ssl_dim, text.quant_dim, 2, stride=2)
        self.quantizer = ResidualVectorQuantizer(text.quant_dim, text.codebook_size)
        self.bridge = nn.Sequential(nn.Conv1d(text.hidden, cfg.channels, 1), nn.LeakyReLU())
        self.wns1 = WaveNetEncoder(cfg.channels, cfg.wns1_kernel, cfg.wns1_layers, text.gin)
        self.linear_mel = nn.Conv1d(cfg.channels, cfg.dit.mel_dim, 1)
        self.cfm = CFM(cfg.dit)
        for part in self.frozen_parts():
            getattr(self, part).requires_grad_(False)

    def frozen_parts(self) -> tuple[str, ...]:
        """Parts outside the DiT whose parameters never train (the DiT: lora.py)."""
        return FROZEN_PARTS + (UNUSED_PARTS if self.frozen_style else ())

    def train(self, mode: bool = True) -> "SynthesizerTrnV3":
        super().train(mode)
        for part in self.frozen_parts():
            getattr(self, part).eval()
        return self

    def condition(
        self, ssl: torch.Tensor, spec: torch.Tensor, spec_lens: torch.Tensor, phonemes: torch.Tensor, phoneme_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(content (B, hidden, T) from enc_p, style (B, gin, 1)); upstream runs this in fp32,
        the caller keeps it outside autocast. Only ref_enc can build a graph here."""
        mask = sequence_mask(spec_lens, spec.shape[-1])  # (B, 1, T)
        style = self.ref_enc(spec[:, : self.cfg.text.style_bins] * mask, mask)
        with torch.no_grad():
            tokens = self.ssl_proj(ssl)  # (B, D, T/2): unmasked, as upstream
            quantized, _, _ = self.quantizer(tokens, torch.ones_like(tokens[:, :1]))
            quantized = F.interpolate(quantized, scale_factor=2, mode="nearest")  # (B, D, T)
            mask = sequence_mask(spec_lens, quantized.shape[-1])
            phoneme_mask = sequence_mask(phoneme_lens, phonemes.shape[-1])
            content = self.enc_p.hidden(quantized, mask, phonemes, phoneme_mask, style)
        return content, style

    def features(self, content: torch.Tensor, mel_lens: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The DiT's condition (B, C, floor(T x 1.875 | 2)): bridge -> nearest upsample to the mel rate -> wns1."""
        fea = F.interpolate(self.bridge(content), scale_factor=self.cfg.mel_upsample, mode="nearest")
        return self.wns1(fea, mel_lens, style)
