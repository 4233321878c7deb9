"""The loader: real prepared data -> batches with the workloads' synthetic shapes -> real train steps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from trainer.data.dataset import PrepareConfig, prepare
from trainer.data.collate import padded_sizes
from trainer.data.loader import PreparedDataset, bucketed_batches
from trainer.workloads import get_workload

SLICE = 3.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """6 clips of 1.3-3.0 s (the longest exactly the slice), 2 speakers, en + zh + ja, prepared for 3 s slices."""
    folder = tmp_path_factory.mktemp("loader")
    texts = [("en", "Hello there, how are you doing today?"), ("zh", "今天天气很好，我们去公园散步吧。"), ("ja", "こんにちは、元気ですか。")]
    lines = []
    for i in range(6):
        seconds = 3.0 if i == 0 else 1.3 + 0.3 * i
        t = np.arange(int(seconds * 32000)) / 32000
        x = np.sin(2 * np.pi * (130 + 40 * i) * t) * (0.5 + 0.4 * np.sin(2 * np.pi * 3 * t))
        sf.write(str(folder / f"c{i}.wav"), x.astype(np.float32) * 0.6, 32000)
        lang, text = texts[i % 3]
        lines.append(f"c{i}.wav|spk{i % 2}|{lang}|{text}")
    (folder / "x.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare(PrepareConfig(folder / "x.list", folder / "ds", slice_seconds=SLICE, val_fraction=0.2))
    return folder / "ds"


def shapes(batch: dict) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in batch.items()}


def collate(name: str, samples: list[dict], slice_seconds: float, **options) -> dict:
    """The workload's own collate (trainer/workload.py `Workload.collate`)."""
    return get_workload(name, size="tiny").collate(samples, slice_seconds, **options)


def all_samples(ds: PreparedDataset) -> list[dict]:
    return [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize("name", ["s1", "s2"])
def test_real_batch_has_the_synthetic_batch_shapes(dataset, name):
    ds = PreparedDataset(dataset, "train")
    samples = all_samples(ds)
    batch = collate(name, samples, SLICE)
    synthetic = get_workload(name, size="tiny").synthetic_batch(len(samples), SLICE)
    assert shapes(batch) == shapes(synthetic)


def test_s1_dpo_batch_matches_synthetic_including_rejected_width(dataset):
    samples = all_samples(PreparedDataset(dataset, "train"))
    batch = collate("s1", samples, SLICE, dpo=True, generator=torch.Generator().manual_seed(0))
    synthetic = get_workload("s1", size="tiny").synthetic_batch(len(samples), SLICE, dpo=True)
    assert shapes(batch) == shapes(synthetic)
    # rejected sequences pad to the worst case 2T, whatever slices were drawn
    assert batch["rejected_ids"].shape[1] == 2 * batch["semantic_ids"].shape[1] >= int(batch["rejected_lens"].max())
    again = collate("s1", samples, SLICE, dpo=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["rejected_ids"], batch["rejected_ids"])


def test_padding_values_and_lengths(dataset):
    samples = all_samples(PreparedDataset(dataset, "train")) + all_samples(PreparedDataset(dataset, "val"))
    T, F, P = padded_sizes(SLICE)
    assert (T, F, P) == (75, 150, 36)
    s1, s2 = collate("s1", samples, SLICE), collate("s2", samples, SLICE)
    for i, s in enumerate(samples):
        n_tok, n_ph, n_fr = len(s["semantic_ids"]), len(s["phoneme_ids"]), s["ssl"].shape[1]
        assert s1["semantic_lens"][i] == n_tok and (s1["semantic_ids"][i, n_tok:] == 1024).all()
        assert torch.equal(s1["semantic_ids"][i, :n_tok], s["semantic_ids"])
        assert s1["phoneme_lens"][i] == n_ph and (s1["phoneme_ids"][i, n_ph:] == 0).all()
        assert s2["spec_lens"][i] == n_fr and s2["wav_lens"][i] == n_fr * 640
        assert not s2["wav"][i, 0, n_fr * 640 :].any() and not s2["ssl"][i, :, n_fr:].any()
        assert torch.equal(s2["wav"][i, 0, : n_fr * 640], s["wav"])
    assert max(s["ssl"].shape[1] for s in samples) == F  # the 3.0 s clip fills the slice exactly


def test_phonemes_longer_than_12_per_second_widen_p(dataset):
    samples = all_samples(PreparedDataset(dataset, "train"))
    samples[0] = {**samples[0], "phoneme_ids": torch.arange(1, 51), "bert_features": torch.zeros(1024, 50)}
    batch = collate("s1", samples, SLICE)
    assert batch["phoneme_ids"].shape[1] == 50 and batch["bert_features"].shape == (len(samples), 1024, 50)


def test_sample_longer_than_the_slice_is_refused(dataset):
    samples = all_samples(PreparedDataset(dataset, "train"))
    with pytest.raises(ValueError, match="longer than the 2 s slice"):
        collate("s2", samples, 2.0)
    with pytest.raises(ValueError, match="unknown workload"):
        get_workload("s3", size="tiny")
    with pytest.raises(ValueError, match="DPO is an s1 mode"):
        collate("s2", samples, SLICE, dpo=True)


@pytest.mark.parametrize("name,dpo", [("s1", False), ("s1", True), ("s2", False)])
def test_tiny_workloads_train_on_real_batches(dataset, name, dpo):
    ds = PreparedDataset(dataset, "train")
    workload = get_workload(name, size="tiny")
    torch.manual_seed(0)
    models = workload.build("cpu")
    optimizers = workload.make_optimizers(models)
    before = [p.detach().clone() for p in models.parameters()]
    g = torch.Generator().manual_seed(0)
    for indices in bucketed_batches(ds.lengths, 2, seed=0, epoch=0):  # 2 steps
        batch = collate(name, [ds[i] for i in indices], ds.slice_seconds, dpo=dpo, generator=g)
        losses = workload.train_step(models, optimizers, batch, "fp32")
        assert all(math.isfinite(v) for v in losses.values()), losses
    assert any(not torch.equal(a, b) for a, b in zip(before, models.parameters()))
    val = PreparedDataset(dataset, "val")
    metric = workload.validation_step(models, collate(name, all_samples(val), val.slice_seconds), "fp32")
    assert math.isfinite(metric)


def test_audio_seconds_counts_real_lengths(dataset):
    ds = PreparedDataset(dataset, "train")
    batch = collate("s2", all_samples(ds), SLICE)
    assert get_workload("s2", size="tiny").audio_seconds(batch) == pytest.approx(sum(ds.lengths) * 640 / 32000)


# --- the dataset folder ----------------------------------------------------------------


def test_missing_incomplete_or_foreign_folders_are_refused(tmp_path, dataset):
    with pytest.raises(ValueError, match=str(tmp_path)):
        PreparedDataset(tmp_path)
    manifest = json.loads((dataset / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(ValueError, match="incomplete"):
        PreparedDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else", "complete": True}))
    with pytest.raises(ValueError, match="not a sovits-advisor dataset"):
        PreparedDataset(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable manifest"):
        PreparedDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))  # complete, but its clip files are elsewhere
    with pytest.raises(ValueError, match="clip file .* is missing"):
        PreparedDataset(tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        PreparedDataset(dataset, "test")


def test_splits_partition_the_clips(dataset):
    train, val = PreparedDataset(dataset, "train"), PreparedDataset(dataset, "val")
    ids = [c["id"] for c in train.clips] + [c["id"] for c in val.clips]
    assert len(ids) == len(set(ids)) == 6 and len(val) == 2  # 20 % of 3 clips per speaker rounds to 1 each
    assert {c["speaker"] for c in val.clips} == {"spk0", "spk1"}


# --- bucketing -------------------------------------------------------------------------


def test_bucketed_batches_cover_every_index_once_and_are_deterministic():
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 500, size=1003).tolist()
    a = bucketed_batches(lengths, 8, seed=1, epoch=2)
    assert sorted(i for b in a for i in b) == list(range(1003))
    assert [len(b) for b in a].count(8) == 125 and sorted(len(b) for b in a)[0] == 3
    assert a == bucketed_batches(lengths, 8, seed=1, epoch=2)
    assert a != bucketed_batches(lengths, 8, seed=1, epoch=3)
    assert a != bucketed_batches(lengths, 8, seed=2, epoch=2)
    dropped = bucketed_batches(lengths, 8, seed=1, epoch=2, drop_last=True)
    assert len(dropped) == 125 and all(len(b) == 8 for b in dropped)


def test_bucketed_batches_group_similar_lengths():
    rng = np.random.default_rng(1)
    lengths = rng.integers(50, 500, size=800).tolist()
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in bucketed_batches(lengths, 8, seed=0, epoch=0)])
    random_spread = np.mean([np.ptp(lengths[k : k + 8]) for k in range(0, 800, 8)])
    assert spread < random_spread / 5


def test_unshuffled_batches_are_sorted_by_length():
    lengths = [5, 3, 9, 3, 1]
    assert bucketed_batches(lengths, 2, seed=0, epoch=0, shuffle=False) == [[4, 1], [3, 0], [2]]
    with pytest.raises(ValueError, match="batch size"):
        bucketed_batches(lengths, 0, seed=0, epoch=0)
