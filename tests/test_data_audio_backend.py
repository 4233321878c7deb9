"""The compiled audio libraries: they load, resample real files end to end, and a broken one is one line.

The first test is the one that fails the day a pin breaks: it loads soundfile's
libsndfile and soxr's libsoxr from the installed wheels (no fallback) and runs
44.1 kHz stereo WAV, FLAC and MP3 files through the `advisor prepare` CLI in a
fresh process, exactly as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.data import audio_backend
from trainer.data.audio import resample

RATE_IN = 44_100


def speechlike(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(130 + 25 * seed + 20 * np.sin(2 * np.pi * 0.7 * t)) / rate
    x = sum(np.sin(h * phase) / h for h in range(1, 6)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def advisor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def stereo_list(folder: Path) -> Path:
    sf = audio_backend.soundfile()
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, fmt in enumerate(["wav", "flac", "mp3"]):
        left, right = speechlike(1.6, RATE_IN, seed=i), speechlike(1.6, RATE_IN, seed=i + 3)
        sf.write(str(folder / f"clip{i}.{fmt}"), np.stack([left, right], 1), RATE_IN)
        assert sf.info(str(folder / f"clip{i}.{fmt}")).channels == 2
        lines.append(f"clip{i}.{fmt}|kim|en|Clip number {i} is here.")
    path = folder / "stereo.list"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_compiled_backends_load_and_prepare_resamples_44k_stereo_wav_flac_mp3(tmp_path):
    import soundfile
    import soxr

    assert soundfile.__libsndfile_version__  # the bundled shared library really loaded
    assert "MP3" in soundfile.available_formats()
    listing = stereo_list(tmp_path / "audio")
    out = advisor("prepare", str(listing), str(tmp_path / "ds"), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["counts"]["used"] == 3 and summary["problems"] == []
    import torch

    for clip in json.loads((tmp_path / "ds" / "manifest.json").read_text())["clips"]:
        wav = torch.load(tmp_path / "ds" / clip["file"], weights_only=True)["wav"]
        assert wav.ndim == 1 and abs(len(wav) / 32_000 - 1.6) < 0.025  # mono, 32 kHz, whole 20 ms frames
    # the resampler itself: a 1 kHz tone keeps its pitch and level through 44.1 -> 32 kHz
    tone = np.sin(2 * np.pi * 1000 * np.arange(RATE_IN) / RATE_IN).astype(np.float32)
    y = resample(tone, RATE_IN, 32_000)
    assert y.dtype == np.float32 and len(y) == 32_000
    spectrum = np.abs(np.fft.rfft(y[2000:-2000]))
    assert abs(np.argmax(spectrum) * 32_000 / len(y[2000:-2000]) - 1000) < 2
    assert abs(np.abs(y[2000:-2000]).max() - 1.0) < 0.01
    assert soxr.__version__


@pytest.mark.parametrize("package", ["soxr", "soundfile"])
def test_a_backend_that_cannot_load_stops_prepare_with_one_line_and_writes_nothing(tmp_path, package):
    listing = stereo_list(tmp_path / "audio")
    out = advisor("prepare", str(listing), str(tmp_path / "ds"), env={audio_backend.BREAK_ENV: package})
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"audio backend '{package}' cannot be loaded" in lines[0] and "pip install --force-reinstall" in lines[0]
    assert not (tmp_path / "ds").exists()


def test_a_broken_resampler_stops_slice_before_writing(tmp_path):
    sf = audio_backend.soundfile()
    (tmp_path / "rec").mkdir()
    sf.write(str(tmp_path / "rec" / "a.wav"), np.stack([speechlike(6, RATE_IN)] * 2, 1), RATE_IN)
    out = advisor("slice", str(tmp_path / "rec"), str(tmp_path / "out"), env={audio_backend.BREAK_ENV: "soxr"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "'soxr'" in out.stderr
    assert not (tmp_path / "out").exists()


def test_doctor_names_a_broken_backend_and_its_fix():
    ok = advisor("doctor")
    assert ok.returncode == 0
    (line,) = [l for l in ok.stdout.splitlines() if l.startswith("audio")]
    assert "soundfile" in line and "soxr" in line and "loads" in line
    broken = advisor("doctor", env={audio_backend.BREAK_ENV: "soundfile"})
    assert broken.returncode == 0
    (line,) = [l for l in broken.stdout.splitlines() if l.startswith("audio")]
    assert "BROKEN" in line and "'soundfile'" in line and "pip install --force-reinstall 'soundfile" in line
    data = json.loads(advisor("doctor", "--json", env={audio_backend.BREAK_ENV: "soxr"}).stdout)
    assert data["audio"]["soxr"]["loads"] is False and data["audio"]["soundfile"]["loads"] is True
