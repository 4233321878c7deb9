"""s2 (SoVITS v2) workload: sizes, batches, the GAN step, validation, spectrograms, meta tracing."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainer.audio_constants import SEGMENT_FRAMES
from trainer.sovits.attention import absolute_to_relative, relative_table, relative_to_absolute
from trainer.sovits.losses import discriminator_loss
from trainer.sovits.segment import cut_segments, segment_starts
from trainer.sovits.spectral import linear_spectrogram, log_mel_spectrogram, mel_filterbank
from trainer.workloads import get_workload
from trainer.workloads.s2 import S2Workload

REFERENCE_PARTS = {  # GPT-SoVITS v2, millions of parameters
    "ssl_proj": 1.18,
    "enc_p": 14.15,
    "enc_q": 10.49,
    "flow": 10.26,
    "dec": 14.66,
    "ref_enc": 0.57,
}


def tiny_setup(seconds: float = 1.0, batch_size: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    workload = S2Workload(size="tiny")
    models = workload.build("cpu")
    batch = workload.synthetic_batch(batch_size, seconds, generator=torch.Generator().manual_seed(seed))
    return workload, models, batch


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


# --- sizes ------------------------------------------------------------------------------
def test_full_size_parameter_counts_match_gpt_sovits_v2():
    description = get_workload("s2", version="v2").describe()
    modules = description["modules"]
    assert set(modules) == {"generator", "discriminator", "quantizer", *REFERENCE_PARTS}
    assert modules["generator"] == pytest.approx(51.31e6, rel=0.01)
    assert modules["discriminator"] == pytest.approx(46.75e6, rel=0.01)
    assert description["parameters"]["total"] == modules["generator"] + modules["discriminator"]
    assert modules["quantizer"] == 0  # EMA codebook lives in buffers
    for part, millions in REFERENCE_PARTS.items():
        assert modules[part] / 1e6 == pytest.approx(millions, abs=0.005), part
    assert sum(modules[p] for p in REFERENCE_PARTS) == modules["generator"]


def test_param_groups_split_text_encoder_and_cover_every_parameter():
    workload = S2Workload(size="tiny")
    models = workload.build("meta")
    groups = workload.param_groups(models)
    text, rest = groups["generator"]
    assert (text["name"], text["lr_scale"], rest["name"], rest["lr_scale"]) == ("text_encoder", 0.4, "rest", 1.0)
    enc_p = models["generator"].enc_p
    assert {id(p) for p in text["params"]} == {id(p) for m in (enc_p.text_embedding, enc_p.encoder_text, enc_p.mrte) for p in m.parameters()}
    generator_ids = [id(p) for g in groups["generator"] for p in g["params"]]
    assert sorted(generator_ids) == sorted(id(p) for p in models["generator"].parameters())
    assert len(groups["discriminator"][0]["params"]) == len(list(models["discriminator"].parameters()))
    assert workload.default_lr() == {"generator": 1e-4, "discriminator": 1e-4}
    assert workload.adamw_options() == {"betas": (0.8, 0.99), "eps": 1e-9}


# --- batches ----------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, frames, phonemes", [(5, 250, 60), (10, 500, 120), (30, 1500, 360)])
def test_synthetic_batch_shapes_scale_with_slice_length(seconds, frames, phonemes):
    workload = S2Workload(size="tiny", version="v2")
    batch = workload.synthetic_batch(2, seconds, generator=torch.Generator().manual_seed(0))
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in batch.items()}
    assert shapes == {
        "ssl": ((2, 768, frames), torch.float32),
        "spec": ((2, 1025, frames), torch.float32),
        "spec_lens": ((2,), torch.int64),
        "wav": ((2, 1, frames * 640), torch.float32),
        "wav_lens": ((2,), torch.int64),
        "phoneme_ids": ((2, phonemes), torch.int64),
        "phoneme_lens": ((2,), torch.int64),
    }
    assert batch["spec"].min() >= 0 and batch["wav"].abs().max() <= 1
    assert batch["spec_lens"].tolist() == [frames, frames] and batch["wav_lens"].tolist() == [frames * 640] * 2
    assert batch["phoneme_ids"].max() < 732
    assert workload.audio_seconds(batch) == pytest.approx(2 * seconds)


def test_synthetic_batch_rejects_bad_arguments():
    workload = S2Workload(size="tiny")
    for bad in [(0, 10.0), (2, 0.0), (2, 60.0)]:
        with pytest.raises(ValueError):
            workload.synthetic_batch(*bad)


# --- steps ------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_training_step_updates_generator_and_discriminator(precision):
    workload, models, batch = tiny_setup()
    optimizers = workload.make_optimizers(models)
    before = {name: snapshot(models[name]) for name in ("generator", "discriminator")}
    codebook = models["generator"].quantizer.embed.clone()
    result = workload.train_step(models, optimizers, batch, precision)
    assert set(result) >= {"d", "g_adv", "g_fm", "mel", "commit", "kl", "g", "total"}
    assert all(math.isfinite(v) for v in result.values()), result
    assert result["total"] == pytest.approx(result["g"] + result["d"], rel=1e-5)
    for name, old in before.items():
        new = dict(models[name].named_parameters())
        changed = [k for k in old if not torch.equal(old[k], new[k].detach())]
        assert len(changed) == len(old), f"{name}: unchanged {set(old) - set(changed)}"
    assert not torch.equal(codebook, models["generator"].quantizer.embed)  # EMA update ran


def test_generator_loss_sends_no_gradient_into_the_discriminator():
    workload, models, batch = tiny_setup()
    replica = copy.deepcopy(models)  # same weights and codebook for a D-loss-only pass
    torch.manual_seed(1)
    workload.forward_backward(models, batch, "fp32")
    assert all(p.requires_grad for p in models["discriminator"].parameters())  # unfrozen afterwards
    assert all(p.grad is not None for p in models.parameters())
    torch.manual_seed(1)  # same dropout, posterior noise and window as above
    out = replica["generator"](batch["ssl"], batch["spec"], batch["spec_lens"], batch["phoneme_ids"], batch["phoneme_lens"], sv_emb=batch.get("sv_emb"))
    real = cut_segments(batch["wav"], out.starts * 640, SEGMENT_FRAMES * 640)
    real_scores, _ = replica["discriminator"](real)
    fake_scores, _ = replica["discriminator"](out.wav.detach())
    discriminator_loss(real_scores, fake_scores).backward()
    for p, q in zip(models["discriminator"].parameters(), replica["discriminator"].parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_tiny_model_overfits_a_fixed_batch():
    workload, models, batch = tiny_setup(seconds=1.0, batch_size=1)
    optimizers = workload.make_optimizers(models, {"generator": 5e-3, "discriminator": 5e-3})
    mels = [workload.train_step(models, optimizers, batch, "fp32")["mel"] for _ in range(24)]
    assert min(mels[-3:]) < 0.5 * mels[0], mels


def test_validation_is_finite_deterministic_and_restores_train_mode():
    workload, models, batch = tiny_setup()
    first = workload.validation_step(models, batch)
    second = workload.validation_step(models, batch)
    assert isinstance(first, float) and math.isfinite(first)
    assert first == second
    assert models["generator"].training and models["generator"].enc_p.training


@pytest.mark.parametrize("seconds", [0.5, 2.0])
def test_decoder_sees_only_a_32_frame_window(seconds):
    workload, models, batch = tiny_setup(seconds=seconds)
    out = models["generator"](batch["ssl"], batch["spec"], batch["spec_lens"], batch["phoneme_ids"], batch["phoneme_lens"], sv_emb=batch.get("sv_emb"))
    assert out.wav.shape == (2, 1, SEGMENT_FRAMES * 640)
    assert out.z_p.shape[-1] == batch["spec"].shape[-1]  # everything before the cut is full length


def test_segments_stay_inside_each_sample():
    lengths = torch.tensor([32, 40, 100, 10])
    starts = segment_starts(lengths, 32, torch.tensor([0.999999, 0.999999, 0.5, 0.7]))
    assert starts.tolist() == [0, 8, 34, 0]
    x = torch.arange(2 * 3 * 100, dtype=torch.float32).reshape(2, 3, 100)
    cut = cut_segments(x, torch.tensor([5, 60]), 32)
    assert torch.equal(cut[0], x[0, :, 5:37]) and torch.equal(cut[1], x[1, :, 60:92])
    short = cut_segments(torch.ones(1, 1, 10), torch.tensor([0]), 32)  # zero-padded on the right
    assert short.shape == (1, 1, 32) and short.sum() == 10


# --- meta tracing -----------------------------------------------------------------------
def test_full_size_step_traces_on_meta():
    workload = S2Workload()
    models = workload.build("meta")
    batch = workload.synthetic_batch(2, 10.0, device="meta")
    result = workload.forward_backward(models, batch, "fp32")
    assert result.samples == 2 and all(math.isnan(v) for v in result.losses.values())
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in models.parameters())


# --- attention --------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 3, 7])
def test_relative_position_skewing_matches_naive_indexing(length):
    window = 2
    x = torch.randn(1, 2, length, 2 * length - 1)
    absolute = relative_to_absolute(x)
    weights = torch.randn(1, 2, length, length)
    relative = absolute_to_relative(weights)
    for i in range(length):
        for j in range(length):
            assert absolute[0, :, i, j].equal(x[0, :, i, j - i + length - 1])
            assert relative[0, :, i, j - i + length - 1].equal(weights[0, :, i, j])
    embeddings = torch.randn(2 * window + 1, 4)
    table = relative_table(embeddings, window, length)
    for offset in range(-(length - 1), length):
        expected = embeddings[offset + window] if abs(offset) <= window else torch.zeros(4)
        assert table[offset + length - 1].equal(expected)


# --- spectrograms -----------------------------------------------------------------------
def test_spectrogram_of_a_sine_has_50_frames_and_peaks_at_its_bin():
    t = torch.arange(32000) / 32000
    wav = torch.sin(2 * math.pi * 1000 * t)[None]  # 1 kHz -> bin 1000 * 2048 / 32000 = 64
    spec = linear_spectrogram(wav)
    assert spec.shape == (1, 1025, 50) and spec.dtype == torch.float32
    peaks = spec[0].argmax(dim=0)  # (50,) loudest bin per frame
    assert (peaks[1:-1] == 64).all()  # edge frames see the reflect padding's phase flip
    assert (peaks - 64).abs().max() <= 1
    mel = log_mel_spectrogram(wav)
    assert mel.shape == (1, 128, 50) and mel.min() >= math.log(1e-5)


def test_mel_filterbank_is_slaney_normalised():
    fb = mel_filterbank()
    assert fb.shape == (128, 1025) and fb.min() >= 0
    hz_per_bin = 32000 / 2048
    areas = fb.sum(dim=1) * hz_per_bin  # each triangle has unit area in Hz
    assert areas.min() > 0.9 and areas.max() < 1.1
    torch.testing.assert_close(fb, _slaney_reference(), atol=1e-6, rtol=1e-4)


def _slaney_reference() -> torch.Tensor:
    """Slaney's Auditory Toolbox filterbank written out in float64 (librosa's `mel`, htk=False, norm="slaney")."""
    def hz_to_mel(f):  # linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per octave-ish step)
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000, f / (200 / 3), 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27))

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        return np.where(m < 15, m * (200 / 3), 1000 * np.exp((m - 15) * (np.log(6.4) / 27)))

    bins = np.linspace(0, 16000, 1025)  # (1025,) Hz of each STFT bin
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(16000.0), 130))  # (130,) triangle corners
    lower = (bins[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - bins[None]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]  # unit area
    return torch.from_numpy(weights).float()  # (128, 1025)


def test_s2_imports_no_audio_library():
    code = "import sys, trainer.workloads.s2; assert not {'torchaudio', 'soundfile', 'soxr'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
