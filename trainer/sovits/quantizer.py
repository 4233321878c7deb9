"""Residual VQ with one EMA codebook (SoVITS v2: 1 codebook, 1024 bins, dim 768).

No trainable parameters: the codebook lives in buffers, moved toward the
encoder outputs by exponential moving averages in train mode. The encoder is
pulled toward its codes by the commitment loss; the straight-through estimator
passes gradients around the quantisation.

Differences from GPT-SoVITS, on purpose: the codebook starts from a random
normal draw rather than k-means on the first batch, and dead codes are not
re-seeded (both need data-dependent control flow, which the meta-device probe
cannot trace). Cluster sizes start at one so unused codes keep their vectors.
Padded frames neither update the codebook nor count in the commitment loss.

Buffers live at GPT-SoVITS's names, `vq.layers.0._codebook.{inited,
cluster_size, embed, embed_avg}` (inited = 1: the codebook is usable), so a
pretrained codebook loads as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.sovits.spectral import fp32_region


class Codebook(nn.Module):
    """One EMA codebook: buffers only."""

    def __init__(self, dim: int, bins: int) -> None:
        super().__init__()
        embed = torch.randn(bins, dim)
        self.register_buffer("inited", torch.ones(1))  # (1,) 1 = initialised (GPT-SoVITS's k-means flag)
        self.register_buffer("cluster_size", torch.ones(bins))  # (K,) EMA of assignment counts
        self.register_buffer("embed", embed)  # (K, D) code vectors
        self.register_buffer("embed_avg", embed.clone())  # (K, D) EMA of assigned-vector sums


class _Layer(nn.Module):
    def __init__(self, dim: int, bins: int) -> None:
        super().__init__()
        self._codebook = Codebook(dim, bins)


class _Stack(nn.Module):
    def __init__(self, dim: int, bins: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Layer(dim, bins)])


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, dim: int, bins: int, decay: float = 0.99, eps: float = 1e-5) -> None:
        super().__init__()
        self.decay = decay
        self.eps = eps  # Laplace smoothing of cluster sizes
        self.vq = _Stack(dim, bins)

    @property
    def codebook(self) -> Codebook:
        return self.vq.layers[0]._codebook

    @property
    def embed(self) -> torch.Tensor:
        """(K, D) code vectors."""
        return self.codebook.embed

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, D, T) at 25 Hz, mask (B, 1, T) -> (quantized (B, D, T), codes (B, T), commitment loss ()).

        In eval mode (and so when frozen) the codebook does not move."""
        b, d, t = x.shape
        with fp32_region(x.device):
            flat = x.transpose(1, 2).reshape(b * t, d).float()  # (N, D)
            codes = self.nearest(flat)  # (N,)
            quantized = F.embedding(codes, self.embed)  # (N, D)
            weights = mask.reshape(b * t, 1).float()  # (N, 1)
            if self.training:
                self.update(flat.detach(), codes, weights)
            commit = ((quantized.detach() - flat).pow(2) * weights).sum() / (weights.sum() * d).clamp(min=1.0)
            quantized = flat + (quantized - flat).detach()  # straight-through
        quantized = quantized.to(x.dtype).reshape(b, t, d).transpose(1, 2)
        return quantized, codes.reshape(b, t), commit

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the closest code for each row of (N, D)."""
        embed = self.embed
        distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed.t() + embed.pow(2).sum(1)[None]  # (N, K)
        return distances.argmin(dim=1)

    @torch.no_grad()
    def update(self, flat: torch.Tensor, codes: torch.Tensor, weights: torch.Tensor) -> None:
        """EMA step of counts and sums, pure tensor ops (meta-traceable)."""
        book = self.codebook
        bins = book.embed.shape[0]
        onehot = (codes[:, None] == torch.arange(bins, device=codes.device)[None]).float() * weights  # (N, K)
        book.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        book.embed_avg.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        total = book.cluster_size.sum()
        smoothed = (book.cluster_size + self.eps) / (total + bins * self.eps) * total  # (K,)
        book.embed.copy_(book.embed_avg / smoothed[:, None])
