"""GPT-SoVITS v3 / v4: the CFM mel target, `prepare --from-gpt-sovits --version v3|v4`, its batches, s1 for v3/v4."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from gptsovits_data import write_experiment, write_s1_ckpt

from trainer.workloads import get_workload
from trainer.workloads.s2v3 import padded_lengths
from trainer.data.loader import PreparedDataset
from trainer.gptsovits.experiment import convert
from trainer.gptsovits.mel_v3 import MEL_SPECS, mel_spec, mel_spectrogram, mel_target

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# INTEROP-v3v4.md section 1: (sample rate, n_fft = win, hop); 100 mels, fmin 0, fmax Nyquist
UPSTREAM = {"v3": (24_000, 1024, 256), "v4": (32_000, 1280, 320)}


def advisor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *map(str, args)], check=False, capture_output=True, text=True, env=ENV, timeout=300)


def _slaney(sr: int, n_fft: int, n_mels: int = 100) -> np.ndarray:
    """librosa's mel(sr, n_fft, n_mels, fmin=0, fmax=None) (htk=False, norm="slaney") written out in float64."""
    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000, f / (200 / 3), 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27))

    def mel_to_hz(m):
        return np.where(m < 15, m * (200 / 3), 1000 * np.exp((m - 15) * (np.log(6.4) / 27)))

    bins = np.arange(n_fft // 2 + 1) * sr / n_fft  # Hz of each rfft bin
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    lower = (bins[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - bins[None]) / (edges[2:] - edges[1:-1])[:, None]
    return np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def _reference_mel(x: np.ndarray, sr: int, n_fft: int, hop: int) -> np.ndarray:
    """GPT-SoVITS's v3/v4 mel by hand in float64: reflect pad (n_fft-hop)/2, frames every hop
    (center=False), periodic Hann, |rfft| with +1e-8 under the sqrt, Slaney mel, ln(clamp 1e-5),
    (x + 12) / 14 * 2 - 1."""
    pad = (n_fft - hop) // 2
    y = np.pad(x.astype(np.float64), pad, mode="reflect")
    count = (len(y) - n_fft) // hop + 1
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic
    frames = np.stack([y[t * hop : t * hop + n_fft] * window for t in range(count)], axis=1)  # (n_fft, T)
    spectrum = np.fft.rfft(frames, axis=0)
    magnitude = np.sqrt(spectrum.real**2 + spectrum.imag**2 + 1e-8)
    log_mel = np.log(np.maximum(_slaney(sr, n_fft) @ magnitude, 1e-5))
    return (log_mel + 12) / 14 * 2 - 1


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_mel_is_gpt_sovits_recipe_against_a_float64_reference(version):
    sr, n_fft, hop = UPSTREAM[version]
    spec = mel_spec(version)
    assert (spec.sample_rate, spec.n_fft, spec.hop, spec.n_mels, spec.fmin, spec.fmax) == (sr, n_fft, hop, 100, 0.0, None)
    rng = np.random.default_rng(1)
    n = int(0.3 * sr) + 77  # not a multiple of hop: N // hop frames
    t = np.arange(n) / sr
    x = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)
    ours = mel_spectrogram(torch.from_numpy(x), spec)
    reference = _reference_mel(x, sr, n_fft, hop)
    assert ours.shape == (100, n // hop) == reference.shape
    np.testing.assert_allclose(ours.numpy(), reference, atol=2e-4, rtol=0)
    batched = mel_spectrogram(torch.from_numpy(np.stack([x, x[::-1].copy()])), spec)  # (B, 100, T)
    torch.testing.assert_close(batched[0], ours)


def test_mel_frames_line_up_with_the_content_frames():
    """F frames of 50 Hz cover floor(1.875 F) v3 mel frames, 2F v4 ones (the model's nearest upsampling)."""
    assert [MEL_SPECS["v3"].frames(f) for f in (1, 8, 50, 500)] == [1, 15, 93, 937]
    assert [MEL_SPECS["v4"].frames(f) for f in (1, 50, 500)] == [2, 100, 1000]
    # upstream's v3/v4 collate pads 50 Hz frames to 2 (F // 2 + 1): 515 -> 516, 500 -> 502
    assert padded_lengths("v3", 10.3) == (515, 516, 965, 975, 124) and padded_lengths("v4", 10.3) == (515, 516, 1030, 1032, 124)
    assert padded_lengths("v4", 10)[:4] == (500, 502, 1000, 1004)


def test_v3_target_is_resampled_to_24_khz_and_v4_is_not():
    """A 2 kHz tone in the 32 kHz file peaks in the band of a 2 kHz tone made at the version's rate
    (read as 24 kHz without resampling, it would be a 1.5 kHz tone)."""
    def loudest_band(wav: np.ndarray, rate: int) -> int:
        _, n_fft, hop = UPSTREAM["v3" if rate == 24_000 else "v4"]
        return int(_reference_mel(wav, rate, n_fft, hop)[:, 10:-10].mean(1).argmax())

    def tone(hz: float, rate: int) -> np.ndarray:
        return (0.5 * np.sin(2 * np.pi * hz * np.arange(rate) / rate)).astype(np.float32)

    for version in ("v3", "v4"):
        spec = mel_spec(version)
        mel = mel_target(tone(2000, 32_000), spec, 50)
        assert mel.shape == (100, spec.frames(50))
        assert int(mel[:, 10:-10].mean(1).argmax()) == loudest_band(tone(2000, spec.sample_rate), spec.sample_rate), version
    assert loudest_band(tone(1500, 24_000), 24_000) != loudest_band(tone(2000, 24_000), 24_000)


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_prepare_stores_the_mel_and_reports_upstreams_sampler_drops(tmp_path, version):
    exp = tmp_path / "logs" / "voice"
    names = write_experiment(exp, durations=[1.0, 1.2, 1.4, 1.6, 20.5, 0.62], bert=False, sv=False)
    result = convert(exp, tmp_path / "ds", val_fraction=0.25, version=version)
    m, spec = result.manifest, MEL_SPECS[version]
    reasons = {s.name: s.reason for s in result.skipped}
    assert set(reasons) == {names[4], names[5]}
    assert "over 20 s" in reasons[names[4]] and "1025 frames" in reasons[names[4]] and "0.64 s" in reasons[names[5]]
    report = json.loads((tmp_path / "ds" / "report.json").read_text())
    assert report["upstream"]["dropped_by_sampler"] == 2 and report["upstream"]["epoch_repeats"] == 16  # max(2, 100 // 6)
    assert {s["file"] for s in report["skipped"]} == {f"5-wav32k/{names[4]}", f"5-wav32k/{names[5]}"}
    assert m["mel"]["version"] == version and m["mel"]["upstream_epoch_repeats"] == 16 and m["gpt_sovits_version"] == version
    assert m["feeds"] == ["s1", "s2-v2", f"s2-{version}"] and m["counts"]["used"] == 4 and m["slice_seconds"] == 1.6
    for clip in m["clips"]:
        stored = torch.load(tmp_path / "ds" / clip["file"], weights_only=True)
        F = stored["ssl"].shape[1]
        assert stored["mel"].dtype == torch.float16 and stored["mel"].shape == (100, spec.frames(F)) == (100, clip["mel_frames"])
    # the whole file's mel, as upstream computes it, cut to the covered frames (not the mel of the cut wav)
    first = next(c for c in m["clips"] if c["audio"] == f"5-wav32k/{names[3]}")
    from trainer.data.audio import decode

    whole = mel_target(decode(exp / "5-wav32k" / names[3]).samples, spec, first["frames"])
    stored = torch.load(tmp_path / "ds" / first["file"], weights_only=True)
    torch.testing.assert_close(stored["mel"], whole.half())
    train = PreparedDataset(tmp_path / "ds", "train")
    assert train.mel_version == version
    samples = [train[i] for i in range(len(train))]
    workload = get_workload("s2", size="tiny", version=version)
    batch = workload.collate(samples, 2.0)
    _, F, _, Fm, _ = padded_lengths(version, 2.0)  # 2 s slice: 100 frames, padded to 102 as upstream pads
    assert batch["ssl"].shape == (3, 768, F) and batch["spec"].shape == (3, 1025, F)
    assert batch["mel"].shape == (3, 100, Fm) and batch["mel_lens"].tolist() == [s["mel"].shape[1] for s in samples]
    synthetic = workload.synthetic_batch(3, 2.0)  # what the probe measures: the same shapes (P: the longest text)
    assert {k: tuple(v.shape) for k, v in batch.items() if k != "phoneme_ids"} == {k: tuple(v.shape) for k, v in synthetic.items() if k != "phoneme_ids"}
    assert batch["phoneme_ids"].shape[0] == 3 and batch["phoneme_lens"].tolist() == [len(s["phoneme_ids"]) for s in samples]
    assert batch["spec_lens"].tolist() == [s["ssl"].shape[1] for s in samples]
    other = "v4" if version == "v3" else "v3"
    with pytest.raises(ValueError, match="another version"):
        get_workload("s2", size="tiny", version=other).collate(samples, 2.0)
    with pytest.raises(ValueError, match="no mel target.*--version v4"):
        get_workload("s2", size="tiny", version="v4").collate([{k: v for k, v in samples[0].items() if k != "mel"}], 2.0)


def test_version_is_detected_from_upstreams_run_folders_and_named(tmp_path):
    exp = tmp_path / "voice"
    write_experiment(exp, n=3, bert=False, sv=False)
    (exp / "logs_s2_v4_lora_32").mkdir()
    done = advisor("prepare", "--from-gpt-sovits", exp, tmp_path / "ds")
    assert done.returncode == 0, done.stderr
    assert "feeds s1, s2-v2, s2-v4" in done.stdout and "GPT-SoVITS v4 (voice/logs_s2_v4_lora_32/)" in done.stdout
    assert "repeats these 3 items 33 times per epoch" in done.stdout and "33x the epochs" in done.stdout  # max(2, 100 // 3)
    (exp / "logs_s1_v3").mkdir()
    done = advisor("prepare", "--from-gpt-sovits", exp, tmp_path / "ds2")
    assert done.returncode == 2 and "--version" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "ds2").exists()
    plain = tmp_path / "plain"
    write_experiment(plain, n=2, bert=False, sv=False)
    convert(plain, tmp_path / "ds3")
    assert PreparedDataset(tmp_path / "ds3", "train").mel_version is None
    assert "mel" not in torch.load(tmp_path / "ds3" / json.loads((tmp_path / "ds3" / "manifest.json").read_text())["clips"][0]["file"], weights_only=True)


def test_s1_trains_for_v4_and_exports_into_gpt_weights_v4(tmp_path):
    """Tiny size, two steps: the v4 dataset feeds s1, the export lands in GPT_weights_v4/ (and the
    GPT-SoVITS checkout's); s2 v3 refuses the v4 dataset (its mel) in one line, before anything is written."""
    exp = tmp_path / "logs" / "voice"
    write_experiment(exp, n=6, bert=False, sv=False)
    assert convert(exp, tmp_path / "ds", val_fraction=0.34, version="v4").manifest["feeds"][0] == "s1"
    write_s1_ckpt(tmp_path / "s1v3.ckpt", size="tiny")
    root = tmp_path / "GPT-SoVITS"
    root.mkdir()
    (root / "webui.py").write_text("# GPT-SoVITS's checkout root holds webui.py\n")  # what the preflight requires
    run = tmp_path / "voice"
    done = advisor("train", "--workload", "s1", "--version", "v4", "--data", tmp_path / "ds", "--out", run, "--size", "tiny",
                   "--init", tmp_path / "s1v3.ckpt", "--micro-batch", "2", "--epochs", "1", "--max-steps", "2",
                   "--gpt-sovits-root", root, "--no-supervisor", "--no-dashboard", "--json")
    assert done.returncode == 0, done.stderr
    files = sorted((run / "export" / "GPT_weights_v4").glob("*.ckpt"))
    assert [f.name for f in files] == ["voice-e1.ckpt"], sorted(p.name for p in (run / "export").iterdir())
    assert torch.load(files[0], weights_only=True)["info"] == "GPT-e1"
    assert (root / "GPT_weights_v4" / "voice-e1.ckpt").read_bytes() == files[0].read_bytes()
    assert not (root / "GPT_weights_v2Pro").exists()
    refused = advisor("train", "--workload", "s2", "--version", "v3", "--data", tmp_path / "ds", "--out", tmp_path / "s2", "--size", "tiny",
                      "--write-config")  # s2 v3 learns the 24 kHz mel: this dataset holds v4's
    assert refused.returncode == 2 and "holds the v4 mel" in refused.stderr and "--version v3" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "s2").exists()
