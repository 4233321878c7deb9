"""SoVITS / VITS losses, all computed in fp32 (inputs are cast)."""

from __future__ import annotations

import torch

from trainer.sovits.discriminator import FeatureMaps, Scores


def discriminator_loss(real: Scores, fake: Scores) -> torch.Tensor:
    """LSGAN: sum over sub-discriminators of mean((1 - D(real))^2) + mean(D(fake)^2)."""
    return sum(torch.mean((1 - r.float()) ** 2) + torch.mean(f.float() ** 2) for r, f in zip(real, fake))


def generator_adversarial_loss(fake: Scores) -> torch.Tensor:
    """LSGAN: sum over sub-discriminators of mean((1 - D(G(z)))^2)."""
    return sum(torch.mean((1 - f.float()) ** 2) for f in fake)


def feature_matching_loss(real: FeatureMaps, fake: FeatureMaps) -> torch.Tensor:
    """2 x sum over every feature map of mean |real - fake| (real is a fixed target)."""
    return 2 * sum(
        torch.mean(torch.abs(r.detach().float() - g.float())) for real_maps, fake_maps in zip(real, fake) for r, g in zip(real_maps, fake_maps)
    )


def kl_loss(z_p: torch.Tensor, log_std_q: torch.Tensor, mean_p: torch.Tensor, log_std_p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """VITS KL(q || p) summed over channels, averaged over valid frames; z_p is the
    flowed posterior sample. All (B, C, T) except mask (B, 1, T)."""
    z_p, log_std_q, mean_p, log_std_p = (t.float() for t in (z_p, log_std_q, mean_p, log_std_p))
    kl = log_std_p - log_std_q - 0.5 + 0.5 * (z_p - mean_p) ** 2 * torch.exp(-2.0 * log_std_p)
    return (kl * mask).sum() / mask.sum().clamp(min=1.0)
