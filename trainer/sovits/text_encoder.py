"""Prior encoder `enc_p`: quantised SSL content + phonemes + style -> prior mean / log-std.

SSL frames pass a small transformer; phonemes pass their own transformer;
MRTE (multi-reference timbre encoder) lets every SSL frame cross-attend to the
phonemes at width gin, adds the style vector, and a post transformer finishes.
The prior is frame-aligned with the spectrogram (50 Hz): no duration model.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.sovits.attention import MultiHeadAttention, TransformerEncoder, pair_mask
from trainer.sovits.config import GeneratorConfig


class MRTE(nn.Module):
    """SSL (B, C, T) attends to text (B, C, P) at width gin; + style; back to C."""

    def __init__(self, channels: int, gin: int, heads: int) -> None:
        super().__init__()
        self.cross_attention = MultiHeadAttention(gin, gin, heads)
        self.c_pre = nn.Conv1d(channels, gin, 1)
        self.text_pre = nn.Conv1d(channels, gin, 1)
        self.c_post = nn.Conv1d(gin, channels, 1)

    def forward(self, ssl: torch.Tensor, ssl_mask: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        ssl = self.c_pre(ssl * ssl_mask)  # (B, gin, T)
        text = self.text_pre(text * text_mask)  # (B, gin, P)
        attended = self.cross_attention(ssl * ssl_mask, text * text_mask, pair_mask(ssl_mask, text_mask))  # (B, gin, T)
        return self.c_post((attended + ssl + style) * ssl_mask)  # style (B, gin, 1) broadcasts


class TextEncoder(nn.Module):
    """(content (B, quant_dim, T) 50 Hz, mask (B, 1, T), phonemes (B, P), phoneme mask (B, 1, P),
    style (B, mrte_channels, 1)) -> (mean, log-std), each (B, hidden, T)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        c = cfg.hidden
        # Registration order = GPT-SoVITS's state_dict order.
        self.ssl_proj = nn.Conv1d(cfg.quant_dim, c, 1)
        self.encoder_ssl = TransformerEncoder(c, cfg.filter_channels, cfg.heads, cfg.layers // 2, cfg.attn_kernel, cfg.dropout, cfg.attn_window)
        self.encoder_text = TransformerEncoder(c, cfg.filter_channels, cfg.heads, cfg.layers, cfg.attn_kernel, cfg.dropout, cfg.attn_window)
        self.text_embedding = nn.Embedding(cfg.phoneme_vocab, c)
        self.mrte = MRTE(c, cfg.mrte_channels, cfg.mrte_heads)
        self.encoder2 = TransformerEncoder(c, cfg.filter_channels, cfg.heads, cfg.layers // 2, cfg.attn_kernel, cfg.dropout, cfg.attn_window)
        self.proj = nn.Conv1d(c, 2 * c, 1)

    def text_modules(self) -> list[nn.Module]:
        """The parts trained at 0.4 x LR in GPT-SoVITS: text embedding, text transformer, MRTE."""
        return [self.text_embedding, self.encoder_text, self.mrte]

    def forward(
        self, content: torch.Tensor, mask: torch.Tensor, phonemes: torch.Tensor, phoneme_mask: torch.Tensor, style: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.hidden(content, mask, phonemes, phoneme_mask, style)
        mean, log_std = (self.proj(x) * mask).chunk(2, dim=1)  # (B, C, T) each
        return mean, log_std

    def hidden(
        self, content: torch.Tensor, mask: torch.Tensor, phonemes: torch.Tensor, phoneme_mask: torch.Tensor, style: torch.Tensor
    ) -> torch.Tensor:
        """The encoder's output before `proj`, (B, C, T): what v3 / v4 feed their bridge."""
        x = self.ssl_proj(content * mask) * mask  # (B, C, T)
        x = self.encoder_ssl(x, mask)
        text = self.text_embedding(phonemes).transpose(1, 2)  # (B, C, P)
        text = self.encoder_text(text * phoneme_mask, phoneme_mask)
        x = self.mrte(x, mask, text, phoneme_mask, style)
        return self.encoder2(x * mask, mask)
