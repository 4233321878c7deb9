"""Padding to the batch (trainer/data/padding.py) and the per-clip spectrogram."""

import math

import pytest
import torch

from trainer.audio_constants import HOP_LENGTH, SAMPLE_RATE, SEMANTIC_EOS
from trainer.workloads import get_workload
from trainer.data.padding import add_spectrogram, pad_batch, split, trim
from trainer.sovits.spectral import clip_spectrograms, linear_spectrogram
from trainer.workload import split_batch


def voiced(seconds: float, pitch: float) -> torch.Tensor:
    """A loud vowel-like clip of whole 640-sample frames: harmonics under a 3 Hz envelope, ending at full level."""
    n = int(seconds * SAMPLE_RATE) // HOP_LENGTH * HOP_LENGTH
    t = torch.arange(n) / SAMPLE_RATE
    tone = sum(torch.sin(2 * math.pi * pitch * k * t) / k for k in range(1, 6))
    return (0.5 * tone * (0.6 + 0.4 * torch.cos(2 * math.pi * 3 * t))).float()


def sample(seconds: float, pitch: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    wav = voiced(seconds, pitch)
    frames, phonemes = len(wav) // HOP_LENGTH, max(1, round(12 * seconds))
    return {
        "phoneme_ids": torch.randint(1, 700, (phonemes,), generator=g),
        "bert_features": torch.randn(1024, phonemes, generator=g),
        "semantic_ids": torch.randint(0, 1024, (frames // 2,), generator=g),
        "ssl": torch.randn(768, frames, generator=g),
        "wav": wav,
        "sv_emb": torch.randn(20480, generator=g),  # v2Pro's speaker embedding
    }


SAMPLES = [sample(2.0, 150.0, 0), sample(1.2, 220.0, 1), sample(0.8, 180.0, 2)]


def test_each_clip_has_its_own_spectrogram_up_to_its_last_frame():
    batch = pad_batch("s2", SAMPLES)
    for i, s in enumerate(SAMPLES):
        alone = linear_spectrogram(s["wav"][None])[0]  # (1025, F_i)
        frames = alone.shape[-1]
        assert int(batch["spec_lens"][i]) == frames
        torch.testing.assert_close(batch["spec"][i, :, :frames], alone, rtol=1e-5, atol=1e-5)
        assert not batch["spec"][i, :, frames:].any()  # zero padding, as GPT-SoVITS pads


def test_the_slice_padded_collate_gets_the_last_frames_wrong():
    """Today's collate takes the spectrogram of the zero-padded batch wav: a shorter
    clip's last frames see zeros instead of its own reflection, and differ."""
    old = get_workload("s2", size="tiny").collate(SAMPLES, 2.0)
    short = SAMPLES[2]["wav"]
    alone = linear_spectrogram(short[None])[0]
    last = alone.shape[-1] - 1
    assert (old["spec"][2, :, last] - alone[:, last]).abs().max() > 0.1 * alone[:, last].abs().max()
    new = pad_batch("s2", SAMPLES)
    torch.testing.assert_close(new["spec"][2, :, last], alone[:, last], rtol=1e-5, atol=1e-5)


def test_batches_pad_to_their_own_longest_not_the_slice():
    s1 = pad_batch("s1", SAMPLES)
    s2 = pad_batch("s2", SAMPLES)
    T, P, F = (max(len(s[k]) for s in SAMPLES) for k in ("semantic_ids", "phoneme_ids", "wav"))
    assert s1["semantic_ids"].shape == (3, T) and s1["phoneme_ids"].shape == (3, P) and s1["bert_features"].shape == (3, 1024, P)
    assert s2["wav"].shape == (3, 1, F) and s2["ssl"].shape == (3, 768, F // HOP_LENGTH) and s2["spec"].shape == (3, 1025, F // HOP_LENGTH)
    assert (s1["semantic_ids"][2, len(SAMPLES[2]["semantic_ids"]) :] == SEMANTIC_EOS).all()
    slice_padded = get_workload("s1", size="tiny").collate(SAMPLES, 2.0)
    assert set(slice_padded) == set(s1) and all(slice_padded[k].dtype == s1[k].dtype for k in s1)


def test_dpo_rejected_sequences_pad_to_twice_the_batch():
    batch = pad_batch("s1", SAMPLES, dpo=True, generator=torch.Generator().manual_seed(0))
    assert batch["rejected_ids"].shape[1] == 2 * batch["semantic_ids"].shape[1]
    with pytest.raises(ValueError, match="DPO is an s1 mode"):
        pad_batch("s2", SAMPLES, dpo=True)


def test_trim_cuts_a_micro_batch_to_its_own_longest_without_changing_values():
    ordered = sorted(SAMPLES, key=lambda s: -len(s["wav"]))
    batch = pad_batch("s2", ordered)
    tail = trim(split_batch(batch, 2)[1])  # the shortest clip alone
    alone = pad_batch("s2", ordered[2:])
    assert {k: v.shape for k, v in tail.items()} == {k: v.shape for k, v in alone.items()}
    for k in alone:
        torch.testing.assert_close(tail[k], alone[k], rtol=1e-5, atol=1e-5)


def test_split_cuts_a_share_into_even_trimmed_micro_batches():
    ordered = sorted([sample(0.5 + 0.1 * i, 150.0, i) for i in range(5)], key=lambda s: -len(s["wav"]))
    parts = split(pad_batch("s2", ordered), 4)
    assert [p["ssl"].shape[0] for p in parts] == [3, 2]  # not 4 + 1
    assert [p["ssl"].shape[-1] for p in parts] == [ordered[0]["ssl"].shape[1], ordered[3]["ssl"].shape[1]]
    torch.testing.assert_close(parts[1]["spec"], pad_batch("s2", ordered[3:])["spec"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, dpo", [("s2", False), ("s1", False), ("s1", True)])
def test_a_batch_padded_to_its_longest_trains(name, dpo):
    """Batches padded to their own longest run the tiny workloads' steps (keys, masks and shapes agree)."""
    torch.manual_seed(0)
    workload = get_workload(name, size="tiny")
    models = workload.build()
    batch = trim(pad_batch(name, SAMPLES[:2], dpo=dpo, generator=torch.Generator().manual_seed(0)))
    result = workload.forward_backward(models, batch, "fp32", None, 1.0)
    assert result.losses and all(math.isfinite(float(v)) for v in result.losses.values())


def test_a_wav_that_disagrees_with_its_frames_is_refused():
    bad = dict(SAMPLES[0], wav=SAMPLES[0]["wav"][:-10])
    with pytest.raises(ValueError, match="expected 100 x 640 for its 100 SSL frames"):
        pad_batch("s2", [bad])


def test_the_spectrogram_can_be_added_where_the_batch_lands():
    """`spectrogram=False` then `add_spectrogram` (on the training device) gives the same batch."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    late = pad_batch("s2", SAMPLES, spectrogram=False)
    assert "spec" not in late
    late = add_spectrogram({k: v.to(device) for k, v in late.items()})
    early = pad_batch("s2", SAMPLES)
    assert late["spec"].device.type == device and late["spec"].dtype == torch.float32
    torch.testing.assert_close(late["spec"].cpu(), early["spec"], rtol=1e-4, atol=1e-4)
    spec = clip_spectrograms([s["wav"] for s in SAMPLES], "cpu")
    assert spec.shape == (3, 1025, 100) and torch.equal(spec, early["spec"])


def test_a_batch_collated_for_the_device_gets_the_same_spectrogram_there():
    """On CUDA the loader threads leave the s2 spectrogram out (`later`) and the training thread
    makes it where the batch is (`finish`): the same values as made in the loader."""
    workload = get_workload("s2", size="tiny")
    whole = workload.collate(SAMPLES, None)
    later = workload.collate(SAMPLES, None, later=True)
    assert "spec" not in later
    finished = workload.finish(later)
    assert torch.equal(finished["spec"], whole["spec"]) and workload.finish(whole) is whole
