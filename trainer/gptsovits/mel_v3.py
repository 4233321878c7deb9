"""The mel target of GPT-SoVITS v3 / v4 s2 (the CFM/DiT decoder's x1), computed as its trainer does.

Facts: ../shared/reference/gpt-sovits/INTEROP-v3v4.md sections 1 and 4 (upstream
module/data_utils.py, mel_processing.py); no upstream code used.

    version  audio                           STFT (n_fft = win, hop)  mels  frame rate
    v3       5-wav32k resampled to 24 kHz    1024, 256                100   93.75 /s
    v4       5-wav32k as it is (32 kHz)      1280, 320                100   100 /s

Both: reflect-pad (n_fft - hop) / 2 each side, STFT with center=False and a periodic
Hann window, magnitude sqrt(re^2 + im^2 + 1e-8), Slaney mel filterbank (librosa's,
fmin 0, fmax Nyquist), ln(clamp(x, 1e-5)), then (x + 12) / 14 * 2 - 1 (upstream's
norm_spec with spec_min -12, spec_max 2). N samples give exactly N // hop frames.

Frame alignment with the content features (INTEROP-v3v4 section 4): `ssl` is 50 Hz;
the model upsamples its 50 Hz condition by nearest x1.875 (v3) or x2 (v4) to the
mel rate, so F content frames cover `MelSpec.frames(F)` = floor(F * 1.875) or 2F
mel frames. `mel_target` computes the mel of the whole file, as upstream does, and
keeps those first frames: each kept frame equals upstream's, apart from the
resampler (v3 only): upstream resamples with ffmpeg (`load_audio(file, 24000)`), this
uses soxr "HQ" (trainer/data/audio.py `resample`). Measured (benchmarks/results/mel_v3.md):
95 of the 100 bands agree to fp16 precision; the two bands above 11 kHz, at the
anti-alias filters' edge, differ by 0.05 on average (max 0.14) in normalised units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trainer.audio_constants import FRAME_RATE, SAMPLE_RATE
from trainer.sovits.spectral import fp32_region, mel_filterbank

SPEC_MIN, SPEC_MAX = -12.0, 2.0  # upstream's normalisation range of the natural-log mel
LOG_FLOOR = 1e-5  # clamp before the log: silence -> ln(1e-5) = -11.5 -> -0.93 normalised
MAGNITUDE_EPS = 1e-8  # under the sqrt of the magnitude (upstream's value for these mels)
N_MELS = 100


@dataclass(frozen=True)
class MelSpec:
    """One version's mel: rate, STFT sizes, bands."""

    version: str
    sample_rate: int  # Hz of the audio the STFT reads
    n_fft: int  # = win length
    hop: int
    n_mels: int = N_MELS
    fmin: float = 0.0
    fmax: float | None = None  # None: Nyquist

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def frames(self, content_frames: int) -> int:
        """Mel frames covered by `content_frames` 50 Hz frames: floor(F * 1.875) (v3), 2F (v4)."""
        return content_frames * self.sample_rate // (self.hop * FRAME_RATE)

    def describe(self) -> dict:
        return {"version": self.version, "sample_rate": self.sample_rate, "n_fft": self.n_fft, "win": self.n_fft, "hop": self.hop,
                "n_mels": self.n_mels, "fmin": self.fmin, "fmax": self.fmax, "frame_rate": self.frame_rate,
                "log": "ln(clamp(x, 1e-5))", "normalised": f"(x - ({SPEC_MIN:g})) / {SPEC_MAX - SPEC_MIN:g} * 2 - 1"}


MEL_SPECS = {"v3": MelSpec("v3", 24_000, 1024, 256), "v4": MelSpec("v4", 32_000, 1280, 320)}


def mel_spec(version: str) -> MelSpec:
    if version not in MEL_SPECS:
        raise ValueError(f"version {version!r} has no CFM mel target: expected one of {', '.join(MEL_SPECS)}")
    return MEL_SPECS[version]


def normalize(log_mel: torch.Tensor) -> torch.Tensor:
    """Natural-log mel -> the model's range: -12 -> -1, 2 -> 1."""
    return (log_mel - SPEC_MIN) / (SPEC_MAX - SPEC_MIN) * 2 - 1


def denormalize(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize` (what inference does before the vocoder)."""
    return (mel + 1) / 2 * (SPEC_MAX - SPEC_MIN) + SPEC_MIN


def mel_spectrogram(wav: torch.Tensor, spec: MelSpec) -> torch.Tensor:
    """wav (N,) or (B, N) at spec.sample_rate -> normalised log-mel (100, N // hop) or (B, 100, N // hop), fp32."""
    single = wav.dim() == 1
    with fp32_region(wav.device):
        x = wav.reshape(-1, 1, wav.shape[-1]).float()  # (B, 1, N)
        pad = (spec.n_fft - spec.hop) // 2
        if x.shape[-1] <= pad:
            raise ValueError(f"{x.shape[-1]} samples are too few for a {spec.version} mel frame (reflect padding needs more than {pad})")
        x = F.pad(x, (pad, pad), mode="reflect").squeeze(1)  # (B, N + n_fft - hop)
        window = torch.hann_window(spec.n_fft, device=x.device, dtype=x.dtype)
        stft = torch.stft(x, spec.n_fft, spec.hop, spec.n_fft, window, center=False, return_complex=True)  # (B, n_fft/2+1, N // hop)
        magnitude = torch.sqrt(torch.view_as_real(stft).pow(2).sum(-1) + MAGNITUDE_EPS)
        basis = mel_filterbank(spec.n_mels, spec.sample_rate, spec.n_fft, spec.fmin, spec.fmax).to(x.device)  # (100, n_fft/2+1)
        mel = normalize(torch.log(torch.clamp(basis @ magnitude, min=LOG_FLOOR)))  # (B, 100, frames)
    return mel[0] if single else mel


def mel_target(wav32k: np.ndarray, spec: MelSpec, content_frames: int) -> torch.Tensor:
    """The whole 32 kHz file's mel (resampled to spec.sample_rate first), cut to the
    frames `content_frames` 50 Hz frames cover: (100, spec.frames(content_frames)) fp32."""
    from trainer.data.audio import resample

    audio = resample(np.asarray(wav32k, dtype=np.float32), SAMPLE_RATE, spec.sample_rate)  # (N * rate / 32000,)
    mel = mel_spectrogram(torch.from_numpy(np.ascontiguousarray(audio)), spec)
    frames = spec.frames(content_frames)
    if mel.shape[1] < frames:  # cannot happen for content_frames <= N // 640; guard the arithmetic
        raise ValueError(f"{mel.shape[1]} mel frames, {frames} needed for {content_frames} content frames")
    return mel[:, :frames]
