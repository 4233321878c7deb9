"""What one clip's audio says about itself: `measure(decoded) -> ClipAudio`.

Every figure is taken from the decoded mono signal at the file's own rate (the
mix `trainer.data.audio.decode` returns: channels averaged, not normalised):
  seconds, sample_rate, channels  as decoded
  peak_dbfs        20 log10 max|x|
  clipped          fraction of samples on a flat top: runs of >= 3 consecutive
                   samples within 1.5 LSB (16-bit) of the clip's positive or
                   negative extreme. Hard clipping leaves such plateaus; clean
                   audio reaches its extreme once. Scale-free, so it also finds
                   clipping in audio that was peak-normalised afterwards; soft
                   clipping (limiters) is not found.
  loudness_lufs    ITU-R BS.1770-4 integrated loudness (loudness.py)
  snr_db           WADA-SNR (snr.py)
  lead/trail_silence, longest_pause  seconds of 10 ms frames whose RMS is more
                   than `silence_db` below the clip's loudest frame: at the
                   start, at the end, and the longest run in between
  dc_offset        mean sample value (full scale 1.0)
  audio_sha256     hash of the decoded float32 samples: equal for the same audio
                   in another container or file name (exact duplicates)
  fingerprint      (24 bands x 32 steps) log-mel energies, each band minus its
                   mean over time, scaled to unit norm: the clip's time pattern,
                   for near duplicates (the same recording re-encoded, with a
                   gain change or a few ms trimmed); its dot product with
                   another clip's is their correlation
  envelope         (24,) the mean log-mel spectrum, centred, unit norm: the
                   voice and the recording chain. Two readings of one sentence
                   share a time pattern, not (unless the same take) an envelope
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from advisor.check.loudness import integrated_loudness
from advisor.check.snr import wada_snr

FRAME_SECONDS = 0.010  # silence analysis frame
CLIP_RUN = 3  # samples on a plateau that make it clipping
CLIP_TOLERANCE = 1.5 / 32768  # 1.5 LSB of 16-bit audio
MEL_BANDS, FINGERPRINT_STEPS = 24, 32
MEL_TOP_HZ = 8000.0  # fingerprint bands up to here (or the Nyquist frequency)


@dataclass
class ClipAudio:
    seconds: float
    sample_rate: int
    channels: int
    peak_dbfs: float
    clipped: float  # fraction of samples, 0..1
    loudness_lufs: float  # -inf if every block is under the gates
    snr_db: float
    lead_silence: float  # s
    trail_silence: float  # s
    longest_pause: float  # s, inside the speech
    dc_offset: float
    audio_sha256: str
    fingerprint: np.ndarray = field(repr=False)  # (MEL_BANDS * FINGERPRINT_STEPS,) unit norm (or zeros)
    envelope: np.ndarray = field(repr=False)  # (MEL_BANDS,) mean log-mel spectrum, centred, unit norm (or zeros)

    @property
    def speech_seconds(self) -> float:
        """Duration without the leading and trailing silence (what the text is spoken in)."""
        return max(self.seconds - self.lead_silence - self.trail_silence, FRAME_SECONDS)

    def to_json(self) -> dict:
        def num(v: float, digits: int = 2):
            return round(v, digits) if math.isfinite(v) else None

        return {"seconds": num(self.seconds, 3), "sample_rate": self.sample_rate, "channels": self.channels,
                "peak_dbfs": num(self.peak_dbfs), "clipped_fraction": round(self.clipped, 5), "loudness_lufs": num(self.loudness_lufs),
                "snr_db": num(self.snr_db, 1), "leading_silence": num(self.lead_silence), "trailing_silence": num(self.trail_silence),
                "longest_pause": num(self.longest_pause), "dc_offset": round(self.dc_offset, 5), "audio_sha256": self.audio_sha256}


def measure(samples: np.ndarray, rate: int, channels: int, silence_db: float) -> ClipAudio:
    """(N,) float32 mono at `rate` Hz -> ClipAudio (see the module docstring)."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    lead, trail, pause = silences(x, rate, silence_db)
    return ClipAudio(
        seconds=len(x) / rate,
        sample_rate=int(rate),
        channels=int(channels),
        peak_dbfs=20 * math.log10(peak) if peak > 0 else -math.inf,
        clipped=clipped_fraction(x),
        loudness_lufs=integrated_loudness(x, rate),
        snr_db=wada_snr(x),
        lead_silence=lead,
        trail_silence=trail,
        longest_pause=pause,
        dc_offset=float(x.mean(dtype=np.float64)) if len(x) else 0.0,
        audio_sha256=hashlib.sha256(x.tobytes()).hexdigest(),
        **dict(zip(("fingerprint", "envelope"), fingerprint(x, rate))),
    )


def clipped_fraction(x: np.ndarray) -> float:
    """Share of samples on plateaus at the positive or negative extreme (runs >= CLIP_RUN)."""
    if len(x) == 0:
        return 0.0
    total = 0
    for extreme, sign in ((float(x.max()), 1.0), (float(x.min()), -1.0)):
        if extreme * sign <= 0:
            continue
        at = (x * sign) >= (extreme * sign - CLIP_TOLERANCE)
        total += _long_runs(at, CLIP_RUN)
    return total / len(x)


def _long_runs(mask: np.ndarray, minimum: int) -> int:
    """Samples of `mask` that lie in runs of True at least `minimum` long."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    return int(lengths[lengths >= minimum].sum())


def frame_levels(x: np.ndarray, rate: int) -> np.ndarray:
    """(F,) dB RMS of consecutive 10 ms frames (the last partial frame dropped)."""
    n = max(1, round(FRAME_SECONDS * rate))
    frames = len(x) // n
    if frames == 0:
        return np.zeros(0)
    power = np.mean(np.square(x[: frames * n].reshape(frames, n), dtype=np.float64), axis=1)
    return 10 * np.log10(np.maximum(power, 1e-20))


def silences(x: np.ndarray, rate: int, silence_db: float) -> tuple[float, float, float]:
    """(leading, trailing, longest internal) seconds of silence; an all-silent clip is all leading."""
    levels = frame_levels(x, rate)
    if len(levels) == 0:
        return 0.0, 0.0, 0.0
    sound = np.flatnonzero(levels > levels.max() - silence_db)
    first, last = int(sound[0]), int(sound[-1])
    lead, trail = first * FRAME_SECONDS, (len(levels) - 1 - last) * FRAME_SECONDS
    inner = levels[first : last + 1] <= levels.max() - silence_db
    edges = np.diff(np.concatenate([[0], inner.astype(np.int8), [0]]))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return lead, trail, (int(runs.max()) if len(runs) else 0) * FRAME_SECONDS


@lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    return np.hanning(n_fft).astype(np.float32)


@lru_cache(maxsize=8)
def _mel_bank(rate: int, n_fft: int) -> np.ndarray:
    """(MEL_BANDS, n_fft//2+1) triangular filters, equally spaced in mel (HTK formula) up to 8 kHz."""
    top = min(MEL_TOP_HZ, rate / 2)

    def mel(hz):
        return 2595 * np.log10(1 + hz / 700)

    hz = 700 * (10 ** (np.linspace(mel(50.0), mel(top), MEL_BANDS + 2) / 2595) - 1)
    bins = np.fft.rfftfreq(n_fft, 1 / rate)
    bank = np.zeros((MEL_BANDS, len(bins)))
    for i in range(MEL_BANDS):
        lo, mid, hi = hz[i : i + 3]
        bank[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return bank.astype(np.float32)  # float32 all through the fingerprint: half the time of float64


def fingerprint(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(time pattern (MEL_BANDS * FINGERPRINT_STEPS,), spectral envelope (MEL_BANDS,)), each unit norm (zeros if flat)."""
    n_fft = 1 << max(6, round(math.log2(0.032 * rate)))  # ~32 ms windows, not overlapping
    frames = len(x) // n_fft
    out, flat = np.zeros(MEL_BANDS * FINGERPRINT_STEPS), np.zeros(MEL_BANDS)
    if frames < 2:
        return out, flat
    window, bank = _window(n_fft), _mel_bank(rate, n_fft)
    z = np.fft.rfft(x[: frames * n_fft].reshape(frames, n_fft) * window, axis=1)  # (frames, n_fft//2+1) complex64
    spec = z.real * z.real + z.imag * z.imag
    logmel = np.log10(spec @ bank.T + np.float32(1e-10)).astype(np.float64)  # (frames, bands)
    grid = np.linspace(0, frames - 1, FINGERPRINT_STEPS)
    steps = np.stack([np.interp(grid, np.arange(frames), logmel[:, b]) for b in range(MEL_BANDS)])  # (bands, steps)
    envelope = steps.mean(axis=1)  # (bands,)
    steps -= envelope[:, None]
    envelope -= envelope.mean()
    return _unit(steps.ravel(), out), _unit(envelope, flat)


def _unit(v: np.ndarray, zeros: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else zeros
