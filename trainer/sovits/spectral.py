"""Spectrograms at 32 kHz without torchaudio: linear magnitude (1025 bins) and log-mel (128 bins).

Everything here runs in fp32 with autocast switched off: torch.stft in half
precision is unsupported on CPU and numerically poor on CUDA. Used by the s2
step (mel loss) and by the data pipeline (the `spec` fed to the model).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from trainer.audio_constants import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE, WIN_LENGTH

LOG_MEL_FLOOR = 1e-5  # clamp before log: silence -> log(1e-5) = -11.5
MAGNITUDE_EPS = 1e-8  # under the sqrt: keeps the gradient finite at zero energy (GPT-SoVITS's mel_processing: 1e-8)
FEATURE_MAGNITUDE_EPS = 1e-6  # the stand-in content features' floor (trainer/data/features.py) since they were
# first written: a prepared dataset's clips carry them, so changing it would make a re-run of `prepare` mix two kinds


def fp32_region(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast off for `device` (a no-op where autocast does not exist, e.g. meta)."""
    device_type = torch.device(device).type
    if not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def linear_spectrogram(wav: torch.Tensor, eps: float = MAGNITUDE_EPS) -> torch.Tensor:
    """Magnitude STFT: wav (B, N) or (B, 1, N) at 32 kHz -> (B, 1025, N // 640) fp32.

    n_fft = win = 2048, hop 640, Hann window, reflect padding of (n_fft - hop) / 2
    = 704 samples each side and center=False, so N = 640 * F samples give exactly
    F frames (50 per second)."""
    with fp32_region(wav.device):
        x = wav.reshape(wav.shape[0], 1, wav.shape[-1]).float()  # (B, 1, N)
        pad = (N_FFT - HOP_LENGTH) // 2
        x = F.pad(x, (pad, pad), mode="reflect").squeeze(1)  # (B, N + 1408)
        window = torch.hann_window(WIN_LENGTH, device=x.device, dtype=x.dtype)
        stft = torch.stft(x, N_FFT, HOP_LENGTH, WIN_LENGTH, window, center=False, return_complex=True)  # (B, 1025, F)
        return torch.sqrt(torch.view_as_real(stft).pow(2).sum(-1) + eps)


def clip_spectrograms(wavs: Sequence[torch.Tensor], device: torch.device | str | None = None) -> torch.Tensor:
    """Each clip's own magnitude STFT, zero-padded to the longest: wavs [(N_i,)] -> (B, 1025, F) fp32,
    F = max N_i // 640, computed on `device` (default: the first wav's).

    Frames t < N_i // 640 of clip i equal `linear_spectrogram(wav_i[None])[0]`: each clip is
    reflect-padded at its own ends (as GPT-SoVITS computes a spectrogram per file), then the
    padded clips are stacked with zeros after them and transformed in one call; frame t reads
    samples [640 t, 640 t + 2048) of the padded clip, which for t < F_i lie inside it. Frames
    from F_i on are set to 0 (the value GPT-SoVITS pads spectrograms with)."""
    if not wavs:
        raise ValueError("clip_spectrograms needs at least one wav")
    device = torch.device(device) if device is not None else wavs[0].device
    pad = (N_FFT - HOP_LENGTH) // 2
    frames = [int(w.shape[-1]) // HOP_LENGTH for w in wavs]
    width = max(frames) * HOP_LENGTH + 2 * pad
    with fp32_region(device):
        x = torch.zeros(len(wavs), width, device=device)  # (B, 640 F + 1408)
        for i, (w, f) in enumerate(zip(wavs, frames)):
            clip = w.reshape(1, 1, -1)[..., : f * HOP_LENGTH].to(device, torch.float32, non_blocking=True)
            x[i, : f * HOP_LENGTH + 2 * pad] = F.pad(clip, (pad, pad), mode="reflect")[0, 0]
        window = torch.hann_window(WIN_LENGTH, device=device, dtype=x.dtype)
        stft = torch.view_as_real(torch.stft(x, N_FFT, HOP_LENGTH, WIN_LENGTH, window, center=False, return_complex=True))  # (B, 1025, F, 2)
        re, im = stft[..., 0], stft[..., 1]
        spec = torch.addcmul(re * re, im, im).add_(MAGNITUDE_EPS).sqrt_()  # as linear_spectrogram, ~3x faster on a CPU
        for i, f in enumerate(frames):
            spec[i, :, f:] = 0.0
        return spec


def spec_to_log_mel(spec: torch.Tensor) -> torch.Tensor:
    """Linear magnitudes (B, 1025, F) -> natural-log mel (B, 128, F), fp32."""
    with fp32_region(spec.device):
        basis = mel_filterbank().to(spec.device)  # (128, 1025)
        mel = torch.matmul(basis, spec.float())  # (B, 128, F)
        return torch.log(torch.clamp(mel, min=LOG_MEL_FLOOR))


def log_mel_spectrogram(wav: torch.Tensor, eps: float = MAGNITUDE_EPS) -> torch.Tensor:
    """wav (B, N) or (B, 1, N) at 32 kHz -> log-mel (B, 128, N // 640), fp32."""
    return spec_to_log_mel(linear_spectrogram(wav, eps))


@functools.lru_cache(maxsize=8)
def mel_filterbank(
    n_mels: int = N_MELS,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> torch.Tensor:
    """Slaney mel filterbank (n_mels, n_fft // 2 + 1) on the CPU, fp32; treat as read-only.

    Triangles equally spaced on the Slaney mel scale between fmin and fmax
    (default Nyquist), each scaled by 2 / (its width in Hz) so that every
    triangle has unit area in Hz ("slaney" normalisation, as librosa)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (n_freqs,)
    mel_points = torch.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2, dtype=torch.float64)
    hz_points = mel_to_hz(mel_points)  # (n_mels + 2,) triangle corners
    widths = hz_points[1:] - hz_points[:-1]  # (n_mels + 1,)
    ramps = hz_points[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freqs)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (n_mels, n_freqs)
    area_norm = 2.0 / (hz_points[2:] - hz_points[:-2])  # (n_mels,)
    return (weights * area_norm[:, None]).float()


# Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_LINEAR_HZ_PER_MEL = 200.0 / 3
_LOG_START_HZ = 1000.0
_LOG_START_MEL = _LOG_START_HZ / _LINEAR_HZ_PER_MEL  # 15
_LOG_STEP = math.log(6.4) / 27.0  # mels per log-Hz above 1 kHz


def hz_to_mel(hz: float) -> float:
    if hz < _LOG_START_HZ:
        return hz / _LINEAR_HZ_PER_MEL
    return _LOG_START_MEL + math.log(hz / _LOG_START_HZ) / _LOG_STEP


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    linear = mel * _LINEAR_HZ_PER_MEL
    log = _LOG_START_HZ * torch.exp(_LOG_STEP * (mel - _LOG_START_MEL))
    return torch.where(mel >= _LOG_START_MEL, log, linear)
