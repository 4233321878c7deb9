"""Audio in: decode (soundfile), check, downmix, resample to 32 kHz (soxr), peak-normalise.

Checks, in this order, each raising `AudioError` with the reason the report shows:
  missing file; unreadable (libsndfile cannot decode it); truncated (a WAV whose
  header promises more data than the file holds, or any file that decodes to fewer
  frames than its header declares); zero-length; NaN/inf samples; peak above 2.2
  (GPT-SoVITS drops those: the file is not float audio in [-1, 1]) -- checked on the
  decoded samples, BEFORE normalising; silent (peak below -60 dBFS); shorter than
  0.6 s or longer than 54 s (GPT-SoVITS's limits).
Decoding is WAV/FLAC/OGG/MP3 and whatever else libsndfile reads. Stereo and more
channels are averaged. The result is scaled so that its peak is 0.95.
Both libraries load through `audio_backend` (an `AudioBackendError` if they cannot).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.audio_constants import MAX_SLICE_SECONDS, MIN_CLIP_SECONDS, SAMPLE_RATE
from trainer.data import audio_backend

MAX_INPUT_PEAK = 2.2  # GPT-SoVITS skips audio whose peak exceeds this
SILENCE_PEAK = 10 ** (-60 / 20)  # -60 dBFS: nothing above this is "all silent"
TARGET_PEAK = 0.95  # peak after normalisation
_TRUNCATION_TOLERANCE = 0.01  # decoded frames may fall short of the header by 1 % (MP3 headers are estimates)


class AudioError(ValueError):
    """Audio that cannot be used; the message is the reason (one line)."""


@dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # (N,) float32 mono at `sample_rate`, not normalised
    sample_rate: int  # Hz, the file's own rate
    channels: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def decode(path: str | os.PathLike) -> Decoded:
    """Read and check a file; mono float32 at its own rate (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError("missing audio file")
    sf = audio_backend.soundfile()
    try:
        info = sf.info(str(path))
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError, OSError, EOFError) as exc:
        raise AudioError(f"unreadable audio ({_one_line(exc)})") from None
    declared = _wav_declared_frames(path) or info.frames
    if declared > 0 and len(data) < declared * (1 - _TRUNCATION_TOLERANCE):
        raise AudioError(f"truncated audio: decodes to {len(data)} of the {declared} frames its header declares")
    if len(data) == 0:
        raise AudioError("zero-length audio (no samples)")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    check_samples(mono, int(rate))
    return Decoded(np.ascontiguousarray(mono), int(rate), int(data.shape[1]))


def check_samples(samples: np.ndarray, rate: int, max_seconds: float = MAX_SLICE_SECONDS) -> None:
    """Finite, peak <= 2.2, not silent, 0.6 s <= duration <= max_seconds."""
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError(f"audio holds {bad} NaN/inf samples")
    peak = float(np.abs(samples).max())
    if peak > MAX_INPUT_PEAK:
        raise AudioError(f"peak {peak:.3g} is above {MAX_INPUT_PEAK} (GPT-SoVITS drops such files; is it float audio in [-1, 1]?)")
    if peak < SILENCE_PEAK:
        raise AudioError(f"all-silent audio (peak {_dbfs(peak)} dBFS, below -60 dBFS)")
    seconds = len(samples) / rate
    if seconds < MIN_CLIP_SECONDS:
        raise AudioError(f"too short: {seconds:.2f} s (at least {MIN_CLIP_SECONDS} s)")
    if seconds > max_seconds:
        raise AudioError(f"too long: {seconds:.2f} s (at most {max_seconds:g} s)")


def to_model_rate(decoded: Decoded) -> np.ndarray:
    """Resample to 32 kHz and scale to peak 0.95: (N',) float32."""
    samples = resample(decoded.samples, decoded.sample_rate, SAMPLE_RATE)
    return peak_normalize(samples)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """(N,) float32 at `rate` Hz -> (round(N * target / rate),) float32 at `target` Hz (soxr "HQ")."""
    if rate == target:
        return samples.astype(np.float32, copy=False)
    x = np.ascontiguousarray(samples, dtype=np.float32)
    return audio_backend.soxr().resample(x, rate, target, quality="HQ").astype(np.float32, copy=False)


def peak_normalize(samples: np.ndarray, target: float = TARGET_PEAK) -> np.ndarray:
    peak = float(np.abs(samples).max()) if len(samples) else 0.0
    if peak == 0.0:
        return samples.astype(np.float32, copy=False)
    return (samples * (target / peak)).astype(np.float32)


def load_for_training(path: str | os.PathLike) -> np.ndarray:
    """decode + to_model_rate: checked mono float32 at 32 kHz, peak 0.95."""
    return to_model_rate(decode(path))


def write_wav(path: str | os.PathLike, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM WAV (what GPT-SoVITS's tools write)."""
    audio_backend.soundfile().write(str(path), np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")


def _wav_declared_frames(path: Path) -> int:
    """Frames the RIFF/WAVE header's data chunk declares (0 if not a plain WAV or unknown).

    libsndfile quietly reads a cut-off WAV as a shorter one; the header still
    tells how long it was meant to be."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return 0
            block_align = 0
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return 0
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else 0
                    continue
                if cid == b"data":
                    if size in (0, 0xFFFFFFFF) or block_align == 0:  # streamed WAVs leave the size unknown
                        return 0
                    return size // block_align
                f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return 0


def _dbfs(peak: float) -> str:
    return "-inf" if peak <= 0 else f"{20 * math.log10(peak):.0f}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
