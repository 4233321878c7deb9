"""The SoVITS v2 generator ("SynthesizerTrn"): content + phonemes + style -> waveform.

Training path (VITS): the whole padded utterance goes through the style
encoder, SSL projection + quantiser, prior encoder, posterior encoder and
flow; then one random 32-frame window of the posterior z (20480 samples) is
decoded. Synthesis path (inference / validation): prior sample -> reverse flow
-> decoder on a window.
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
    phonemes (B, P) int64, phoneme_lens (B,)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, cfg.quant_dim, 2, stride=2)  # 50 Hz -> 25 Hz tokens
        self.quantizer = ResidualVectorQuantizer(cfg.quant_dim, cfg.codebook_size)
        self.enc_p = TextEncoder(cfg)
        self.enc_q = PosteriorEncoder(cfg)
        self.flow = Flow(cfg)
        self.dec = Decoder(cfg)
        self.ref_enc = StyleEncoder(cfg)

    def forward(
        self,
        ssl: torch.Tensor,
        spec: torch.Tensor,
        spec_lens: torch.Tensor,
        phonemes: torch.Tensor,
        phoneme_lens: torch.Tensor,
        uniform: torch.Tensor | None = None,
    ) -> TrainOutput:
        """Training path; `uniform` (B,) in [0, 1) picks the windows (fresh draws if None)."""
        mask = sequence_mask(spec_lens, spec.shape[-1])  # (B, 1, T)
        style = self.style(spec, mask)  # (B, gin, 1)
        mean_p, log_std_p, commit = self.prior(ssl, mask, spec_lens, phonemes, phoneme_lens, style)
        z, _, log_std_q = self.enc_q(spec, mask, style)  # (B, hidden, T)
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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference path on one window: (wav (B, 1, 20480), starts (B,)).

        noise (B, hidden, T) standard normal; the style reference is the same utterance."""
        mask = sequence_mask(spec_lens, spec.shape[-1])
        style = self.style(spec, mask)
        mean_p, log_std_p, _ = self.prior(ssl, mask, spec_lens, phonemes, phoneme_lens, style)
        z_p = (mean_p + noise.to(mean_p.dtype) * torch.exp(log_std_p) * noise_scale) * mask
        z = self.flow(z_p, mask, style, reverse=True)
        starts = segment_starts(spec_lens, SEGMENT_FRAMES, uniform)
        return self.dec(cut_segments(z, starts, SEGMENT_FRAMES), style), starts

    def style(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Style vector (B, gin, 1) from the lowest spectrogram bins."""
        return self.ref_enc(spec[:, : self.cfg.style_bins] * mask, mask)

    def prior(
        self,
        ssl: torch.Tensor,
        mask: torch.Tensor,
        lengths: torch.Tensor,
        phonemes: torch.Tensor,
        phoneme_lens: torch.Tensor,
        style: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean_p, log_std_p) each (B, hidden, T), and the commitment loss."""
        frames = ssl.shape[-1]
        tokens = self.ssl_proj(ssl * mask)  # (B, D, T // 2) at 25 Hz
        token_mask = sequence_mask(lengths // 2, tokens.shape[-1])
        quantized, _, commit = self.quantizer(tokens, token_mask)
        quantized = F.interpolate(quantized, size=frames, mode="nearest")  # back to 50 Hz: (B, D, T)
        phoneme_mask = sequence_mask(phoneme_lens, phonemes.shape[-1])  # (B, 1, P)
        mean_p, log_std_p = self.enc_p(quantized, mask, phonemes, phoneme_mask, style)
        return mean_p, log_std_p, commit
