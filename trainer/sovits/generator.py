"""The SoVITS v2 generator ("SynthesizerTrn"): content + phonemes + style -> waveform.

Training path (VITS): the whole padded utterance goes through the style
encoder, SSL projection + quantiser, prior encoder, posterior encoder and
flow; then one random 32-frame window of the posterior z (20480 samples) is
decoded. Synthesis path (inference / validation): prior sample -> reverse flow
-> decoder on a window.

v2Pro / v2ProPlus add a per-clip speaker-verification embedding `sv_emb`
(B, 20480): style = PReLU(ref_enc(spec) + sv_emb Linear(sv)), at gin 1024,
and `ge_to512` brings it to the 512 channels MRTE works at.

`recipe="gpt-sovits"` computes what GPT-SoVITS's trainer does where the two
differ (docs/ARCHITECTURE.md, "s2 recipes"): the SSL projection and the
quantiser frozen (eval, no gradient, commitment loss 0), the SSL features not
masked before `ssl_proj`, and the style vector detached into `enc_q`.
Submodules are registered in GPT-SoVITS's order, so `state_dict()` lists its
keys in its order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.audio_constants import SEGMENT_FRAMES
from trainer.sovits.attention import sequence_mask
from trainer.sovits.config import GeneratorConfig
from trainer.sovits.decoder import Decoder
from trainer.sovits.flow import Flow
from trainer.sovits.posterior import PosteriorEncoder
from trainer.sovits.quantizer import ResidualVectorQuantizer
from trainer.sovits.segment import cut_segments, segment_starts
from trainer.sovits.style import StyleEncoder
from trainer.sovits.text_encoder import TextEncoder

PARTS = ("ssl_proj", "quantizer", "enc_p", "enc_q", "flow", "dec", "ref_enc")
SV_PARTS = ("sv_emb", "ge_to512", "prelu")  # v2Pro / v2ProPlus only


@dataclass
class TrainOutput:
    wav: torch.Tensor  # (B, 1, 32 * 640) decoded window
    starts: torch.Tensor  # (B,) int64 window start, in frames
    mask: torch.Tensor  # (B, 1, T) valid frames
    z_p: torch.Tensor  # (B, hidden, T) posterior sample mapped by the flow
    log_std_q: torch.Tensor  # (B, hidden, T)
    mean_p: torch.Tensor  # (B, hidden, T) prior
    log_std_p: torch.Tensor  # (B, hidden, T)
    commit: torch.Tensor  # () quantiser commitment loss


class Synthesizer(nn.Module):
    """Inputs: ssl (B, 768, T) and spec (B, 1025, T) at 50 Hz, spec_lens (B,),
    phonemes (B, P) int64, phoneme_lens (B,), and for v2Pro+ sv_emb (B, 20480)."""

    def __init__(self, cfg: GeneratorConfig, upstream: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.upstream = upstream  # the gpt-sovits recipe (trainer/recipe.py): upstream's forward where the recipes differ
        self.enc_p = TextEncoder(cfg)
        self.dec = Decoder(cfg)
        self.enc_q = PosteriorEncoder(cfg)
        self.flow = Flow(cfg)
        self.ref_enc = StyleEncoder(cfg)
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, cfg.quant_dim, 2, stride=2)  # 50 Hz -> 25 Hz tokens
        self.quantizer = ResidualVectorQuantizer(cfg.quant_dim, cfg.codebook_size)
        if cfg.has_sv:
            self.sv_emb = nn.Linear(cfg.sv_dim, cfg.gin)
            self.ge_to512 = nn.Linear(cfg.gin, cfg.mrte_channels)
            self.prelu = nn.PReLU(num_parameters=cfg.gin)
        if self.frozen_quantizer:
            for p in (*self.ssl_proj.parameters(), *self.quantizer.parameters()):
                p.requires_grad_(False)

    @property
    def frozen_quantizer(self) -> bool:
        """GPT-SoVITS trains with ssl_proj and the codebook fixed (the pretrained ones)."""
        return self.upstream

    def train(self, mode: bool = True) -> "Synthesizer":
        super().train(mode)
        if self.frozen_quantizer:
            self.ssl_proj.eval()
            self.quantizer.eval()  # no EMA update
        return self

    def forward(
        self,
        ssl: torch.Tensor,
        spec: torch.Tensor,
        spec_lens: torch.Tensor,
        phonemes: torch.Tensor,
        phoneme_lens: torch.Tensor,
        uniform: torch.Tensor | None = None,
        sv_emb: torch.Tensor | None = None,
    ) -> TrainOutput:
        """Training path; `uniform` (B,) in [0, 1) picks the windows (fresh draws if None)."""
        mask = sequence_mask(spec_lens, spec.shape[-1])  # (B, 1, T)
        style = self.style(spec, mask, sv_emb)  # (B, gin, 1)
        mean_p, log_std_p, commit = self.prior(ssl, mask, spec_lens, phonemes, phoneme_lens, style)
        q_style = style.detach() if self.upstream else style
        z, _, log_std_q = self.enc_q(spec, mask, q_style)  # (B, hidden, T)
        z_p = self.flow(z, mask, style)
        if uniform is None:
            uniform = torch.rand(spec.shape[0], device=spec.device)
        starts = segment_starts(spec_lens, SEGMENT_FRAMES, uniform)
        wav = self.dec(cut_segments(z, starts, SEGMENT_FRAMES), style)  # (B, 1, 20480)
        return TrainOutput(wav, starts, mask, z_p, log_std_q, mean_p, log_std_p, commit)

    def synthesize(
        self,
        ssl: torch.Tensor,
        spec: torch.Tensor,
        spec_lens: torch.Tensor,
        phonemes: torch.Tensor,
        phoneme_lens: torch.Tensor,
        noise: torch.Tensor,
        uniform: torch.Tensor,
        noise_scale: float = 0.5,
        sv_emb: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference path on one window: (wav (B, 1, 20480), starts (B,)).

        noise (B, hidden, T) standard normal; the style reference is the same utterance."""
        mask = sequence_mask(spec_lens, spec.shape[-1])
        style = self.style(spec, mask, sv_emb)
        mean_p, log_std_p, _ = self.prior(ssl, mask, spec_lens, phonemes, phoneme_lens, style)
        z_p = (mean_p + noise.to(mean_p.dtype) * torch.exp(log_std_p) * noise_scale) * mask
        z = self.flow(z_p, mask, style, reverse=True)
        starts = segment_starts(spec_lens, SEGMENT_FRAMES, uniform)
        return self.dec(cut_segments(z, starts, SEGMENT_FRAMES), style), starts

    def style(self, spec: torch.Tensor, mask: torch.Tensor, sv_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Style vector (B, gin, 1) from the lowest spectrogram bins (+ sv_emb (B, 20480) for v2Pro+)."""
        style = self.ref_enc(spec[:, : self.cfg.style_bins] * mask, mask)
        if not self.cfg.has_sv:
            return style
        if sv_emb is None:
            raise ValueError(f"sv_emb: a (B, {self.cfg.sv_dim}) speaker embedding is required by this generator (v2Pro / v2ProPlus)")
        return self.prelu(style + self.sv_emb(sv_emb.to(style.dtype)).unsqueeze(-1))

    def prior(
        self,
        ssl: torch.Tensor,
        mask: torch.Tensor,
        lengths: torch.Tensor,
        phonemes: torch.Tensor,
        phoneme_lens: torch.Tensor,
        style: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean_p, log_std_p) each (B, hidden, T), and the commitment loss; style (B, gin, 1)."""
        frames = ssl.shape[-1]
        token_mask = sequence_mask(lengths // 2, frames // 2)
        if self.frozen_quantizer:  # GPT-SoVITS: unmasked SSL, no gradient, no commitment loss
            with torch.no_grad():
                quantized, _, _ = self.quantizer(self.ssl_proj(ssl), token_mask)
            commit = quantized.new_zeros((), dtype=torch.float32)
        else:
            tokens = self.ssl_proj(ssl * mask)  # (B, D, T // 2) at 25 Hz
            quantized, _, commit = self.quantizer(tokens, token_mask)
        quantized = F.interpolate(quantized, size=frames, mode="nearest")  # back to 50 Hz: (B, D, T)
        phoneme_mask = sequence_mask(phoneme_lens, phonemes.shape[-1])  # (B, 1, P)
        mean_p, log_std_p = self.enc_p(quantized, mask, phonemes, phoneme_mask, self.text_style(style))
        return mean_p, log_std_p, commit

    def text_style(self, style: torch.Tensor) -> torch.Tensor:
        """The style vector the text encoder's MRTE takes, (B, 512, 1): v2Pro+ project their (B, 1024, 1) down."""
        if self.cfg.has_sv:
            return self.ge_to512(style.transpose(1, 2)).transpose(1, 2)
        return style
