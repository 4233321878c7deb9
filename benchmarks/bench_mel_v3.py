"""The v3/v4 CFM mel target: its cost per clip, and how far soxr's 24 kHz resampling lands from upstream's ffmpeg.

    python -m pytest benchmarks/bench_mel_v3.py --benchmark-only -q -s
    FFMPEG=/path/to/ffmpeg python -m pytest benchmarks/bench_mel_v3.py --benchmark-only -q -s   # + the resampler difference

Cost: `mel_target` of a 10 s 32 kHz clip (v3: soxr to 24 kHz + STFT; v4: STFT only),
what `prepare --from-gpt-sovits --version v3|v4` adds per clip.

Resampler: upstream's v3 loader gets its 24 kHz audio from `load_audio(file, 24000)`,
i.e. `ffmpeg -i file -f f32le -acodec pcm_f32le -ac 1 -ar 24000 -` (swresample's
default filter); we use soxr "HQ". Given an ffmpeg binary (FFMPEG), the same 32 kHz
int16 WAV goes through both, the mel of each is computed by `mel_spectrogram`, and the
difference is printed in normalised units (the model's target space; x 7 = nats of
log-mel, x 60.8 = dB), overall and per band. Signal: 10 s of synthetic speech-like
audio (a 90-260 Hz pulse train through three moving formants, noise fricatives
reaching 12 kHz, pauses), as no real recording ships with the repository.
Results: benchmarks/results/mel_v3.md.
"""

from __future__ import annotations

import os
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.gptsovits.mel_v3 import mel_spec, mel_spectrogram, mel_target

SECONDS = 10.0
RATE = 32_000


def speech_like(seconds: float = SECONDS, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """(N,) float32 in [-1, 1]: voiced stretches with moving formants, fricatives, pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 175 + 85 * np.sin(2 * np.pi * 0.7 * t)  # Hz, 90..260
    phase = np.cumsum(f0 / rate)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)  # one impulse per period
    voiced = np.zeros(n)
    for centre, width, speed in ((700, 120, 0.9), (1500, 180, 1.3), (2800, 250, 0.5)):
        f = centre * (1 + 0.3 * np.sin(2 * np.pi * speed * t))
        # a two-pole resonator per sample (time-varying formant)
        r = np.exp(-np.pi * width / rate)
        a1, a2 = -2 * r * np.cos(2 * np.pi * f / rate), r * r
        y = np.zeros(n)
        for i in range(2, n):
            y[i] = pulses[i] - a1[i] * y[i - 1] - a2 * y[i - 2]
        voiced += y
    voiced /= np.abs(voiced).max()
    noise = np.diff(rng.standard_normal(n + 1))  # tilted up: fricative energy to 16 kHz
    envelope = (np.sin(2 * np.pi * 0.45 * t) > 0.3).astype(np.float64)  # fricative stretches
    pauses = (np.sin(2 * np.pi * 0.23 * t + 1) > -0.8).astype(np.float64)
    x = (0.6 * voiced * (1 - envelope) + 0.15 * noise * envelope) * pauses
    return (0.9 * x / np.abs(x).max()).astype(np.float32)


def write_int16(path: Path, x: np.ndarray, rate: int = RATE) -> np.ndarray:
    """Write as 5-wav32k does (int16 mono); return the samples as read back (int16 / 32768)."""
    q = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(q.tobytes())
    return q.astype(np.float32) / 32768


def ffmpeg_24k(ffmpeg: str, path: Path) -> np.ndarray:
    """Upstream's load_audio(path, 24000): ffmpeg's default resampler to 24 kHz, float32."""
    out = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "f32le", "-acodec", "pcm_f32le",
                          "-ac", "1", "-ar", "24000", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.float32).copy()


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_mel_target_cost_per_10s_clip(benchmark, version):
    torch.set_num_threads(1)
    wav = speech_like()
    spec = mel_spec(version)
    mel = benchmark(mel_target, wav, spec, int(SECONDS * 50))
    assert mel.shape == (100, spec.frames(int(SECONDS * 50)))
    print(f"\n{version}: mel (100, {mel.shape[1]}) of a {SECONDS:g} s clip")


@pytest.mark.skipif(not os.environ.get("FFMPEG"), reason="set FFMPEG to an ffmpeg binary to measure the resampler difference")
def test_soxr_against_ffmpeg_for_the_v3_mel(benchmark, tmp_path):
    torch.set_num_threads(1)
    path = tmp_path / "clip.wav"
    wav = write_int16(path, speech_like())
    spec = mel_spec("v3")
    theirs = ffmpeg_24k(os.environ["FFMPEG"], path)
    from trainer.data.audio import resample

    ours = benchmark(resample, wav, RATE, 24_000)
    frames = min(len(ours), len(theirs)) // spec.hop
    a = mel_spectrogram(torch.from_numpy(ours), spec)[:, :frames]
    b = mel_spectrogram(torch.from_numpy(theirs), spec)[:, :frames]
    d = (a - b).abs()
    half = (a.half().float() - a).abs()
    centres = _band_centres(spec)
    print(f"\nsamples: soxr {len(ours)}, ffmpeg {len(theirs)}; frames compared {frames}")
    print(f"|soxr - ffmpeg| normalised mel: mean {d.mean():.5f}, p99 {d.flatten().quantile(0.99):.5f}, max {d.max():.5f}")
    print(f"  for scale, fp16 storage rounding: mean {half.mean():.5f}, max {half.max():.5f}")
    worst = d.mean(1)
    for lo, hi in ((0, 4000), (4000, 8000), (8000, 10000), (10000, 11000), (11000, 12001)):
        sel = (centres >= lo) & (centres < hi)
        print(f"  bands {lo:>5}-{hi:>5} Hz ({int(sel.sum()):>2}): mean {worst[sel].mean():.5f}, max {d[sel].max():.5f}")
    top = int(worst.argmax())
    print(f"  worst band {top} ({centres[top]:.0f} Hz): mean {worst[top]:.5f}")
    benchmark.extra_info.update({"mean": float(d.mean()), "max": float(d.max()), "worst_band_hz": float(centres[top])})


def _band_centres(spec) -> np.ndarray:
    from trainer.sovits.spectral import mel_filterbank

    fb = mel_filterbank(spec.n_mels, spec.sample_rate, spec.n_fft).numpy()  # (100, bins)
    hz = np.arange(fb.shape[1]) * spec.sample_rate / spec.n_fft
    return (fb * hz).sum(1) / fb.sum(1)
