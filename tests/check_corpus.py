"""Speech-like audio for `advisor check` tests and benchmarks (not a test module).

`speech_like` makes a voiced-sound stand-in: a harmonic tone (fundamental 100-220 Hz
with a slow pitch contour, harmonics falling 6 dB per octave) cut into syllables
of 120-260 ms (raised-cosine envelopes, 4-6 per second) grouped into words with
60-300 ms pauses between them, over a -60 dBFS noise floor, peak -6 dBFS.
"""

from __future__ import annotations

import numpy as np

RATE = 32_000


def speech_like(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """(round(seconds*rate),) float32 mono speech-like signal, peak 0.5."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    f0 = rng.uniform(100, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 16))
    envelope = np.zeros(n)
    at = round(rng.uniform(0.05, 0.15) * rate)
    while at < n - rate // 20:
        for _ in range(rng.integers(1, 4)):  # a word: 1-3 syllables
            length = round(rng.uniform(0.12, 0.26) * rate)
            end = min(at + length, n)
            envelope[at:end] = np.hanning(length)[: end - at] * rng.uniform(0.6, 1.0)
            at = end
        at += round(rng.uniform(0.06, 0.3) * rate)
    x = voice * envelope
    x = 0.5 * x / np.abs(x).max()
    return (x + 0.001 * rng.standard_normal(n)).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """x plus white noise at `snr_db` (signal power over noise power), same peak scale."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(x))
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / 10 ** (snr_db / 10) / np.mean(noise**2))
    return (x + noise).astype(np.float32)
