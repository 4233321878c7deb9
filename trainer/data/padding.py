"""Padding to the batch: samples padded to their own longest, not to the slice.

    batch = pad_batch("s2", samples)                    # F = longest clip's frames
    batch = pad_batch("s2", samples, spectrogram=False)  # on the CPU, without `spec`; then
    batch = add_spectrogram(to_device(batch))            # the spectrogram made where the batch is (GPU)
    micros = split(batch, 4)                            # micro-batches of <= 4, each cut to its own longest

The workloads' collate calls these. Keys and dtypes are those of
docs/ARCHITECTURE.md; only the padded lengths differ from a slice-padded batch:
s1: T = longest semantic sequence (pad 1024 = EOS), P = longest phoneme
sequence (pad 0), DPO's rejected sequences padded to 2T (the longest a
duplicate can make, so a batch's memory does not depend on the draw); s2: F =
longest clip in frames, wav to 640 F samples (zeros), ssl to F (zeros), and
`spec` each clip's own spectrogram (`clip_spectrograms`: from its unpadded wav,
reflect-padded at its own ends, as GPT-SoVITS computes it per file) then
zero-padded; computed on the CPU in `pad_batch`, or left out
(`spectrogram=False`) and added by `add_spectrogram` wherever the batch lands
(the training device: a GPU makes a batch's spectrogram in about a millisecond
where the CPU takes ~0.1 s). A batch of buckets is never padded beyond its bucket's bound:
its longest clip is at most the bound.

`trim` cuts an already padded batch (or a micro-batch of it) to its own
longest sample, so a rank's share can be collated once and each micro-batch
still computes only its own padding; `split` cuts a share into the
micro-batches of `buckets.micro_batches` (as equal as possible), trimmed. It never changes a value: the per-clip
spectrogram does not depend on how far the batch was padded.
"""

from __future__ import annotations

from typing import Sequence

import torch

from trainer.audio_constants import BERT_DIM, HOP_LENGTH, SEMANTIC_EOS
from trainer.data.buckets import micro_batches
from trainer.sovits.spectral import clip_spectrograms

Batch = dict[str, torch.Tensor]
Sample = dict[str, torch.Tensor]
PHONEME_PAD = 0
WAV_PAD = 0.0


def pad_batch(
    workload_name: str,
    samples: Sequence[Sample],
    dpo: bool = False,
    generator: torch.Generator | None = None,
    spectrogram: bool = True,
) -> Batch:
    """Samples of workload "s1" or "s2" padded to their own longest (see the module docstring).

    `dpo` (s1) adds rejected_ids/rejected_lens by s1's rule from `generator`;
    `spectrogram=False` (s2) leaves `spec` out for `add_spectrogram` on the training device."""
    if not samples:
        raise ValueError("pad_batch needs at least one sample")
    if workload_name == "s1":
        return pad_s1(samples, dpo, generator)
    if workload_name == "s2":
        if dpo:
            raise ValueError("DPO is an s1 mode: the s2 workload has no rejected sequences")
        return pad_s2(samples, spectrogram)
    raise ValueError(f"unknown workload {workload_name!r}: expected s1 or s2")


def pad_s1(samples: Sequence[Sample], dpo: bool = False, generator: torch.Generator | None = None) -> Batch:
    """phoneme_ids (B, P) i64, phoneme_lens (B,), bert_features (B, 1024, P) f32, semantic_ids
    (B, T) i64, semantic_lens (B,); with `dpo` rejected_ids (B, 2T), rejected_lens (B,)."""
    phonemes = [s["phoneme_ids"] for s in samples]
    semantic = [s["semantic_ids"] for s in samples]
    P, T = max(len(p) for p in phonemes), max(len(t) for t in semantic)
    bert = [s["bert_features"] if "bert_features" in s else torch.zeros(BERT_DIM, len(s["phoneme_ids"])) for s in samples]
    batch = {
        "phoneme_ids": pad_1d(phonemes, P, PHONEME_PAD),
        "phoneme_lens": lengths(phonemes),
        "bert_features": pad_2d(bert, P),
        "semantic_ids": pad_1d(semantic, T, SEMANTIC_EOS),
        "semantic_lens": lengths(semantic),
    }
    if dpo:
        from trainer.workloads.s1_batches import make_rejected

        batch["rejected_ids"], batch["rejected_lens"] = make_rejected(batch["semantic_ids"], batch["semantic_lens"], generator, pad_to=2 * T)
    return batch


def pad_s2(samples: Sequence[Sample], spectrogram: bool = True) -> Batch:
    """ssl (B, 768, F) f32, spec (B, 1025, F) f32 (unless `spectrogram` is False), spec_lens (B,), wav
    (B, 1, 640 F) f32, wav_lens (B,), phoneme_ids (B, P), phoneme_lens (B,), and sv_emb
    (B, 20480) when every sample has one (v2Pro+)."""
    ssl = [s["ssl"] for s in samples]
    wavs = [s["wav"] for s in samples]
    for s, w in zip(ssl, wavs):
        if s.shape[1] * HOP_LENGTH != w.shape[-1]:
            raise ValueError(f"a sample's wav has {w.shape[-1]} samples, expected {s.shape[1]} x {HOP_LENGTH} for its {s.shape[1]} SSL frames")
    F = max(s.shape[1] for s in ssl)
    phonemes = [s["phoneme_ids"] for s in samples]
    batch = {
        "ssl": pad_2d(ssl, F),
        "spec_lens": lengths(ssl, dim=1),
        "wav": pad_1d(wavs, F * HOP_LENGTH, WAV_PAD)[:, None],
        "wav_lens": lengths(wavs),
        "phoneme_ids": pad_1d(phonemes, max(len(p) for p in phonemes), PHONEME_PAD),
        "phoneme_lens": lengths(phonemes),
    }
    if all("sv_emb" in s for s in samples):
        batch["sv_emb"] = torch.stack([s["sv_emb"] for s in samples])
    return add_spectrogram(batch) if spectrogram else batch


def add_spectrogram(batch: Batch) -> Batch:
    """The s2 batch with `spec` (B, 1025, F): each clip's own spectrogram from its wav
    (batch["wav"][i, 0, :wav_lens[i]]), made on the batch's device. A new dict; `spec`
    already there is made again."""
    wav, lens = batch["wav"], batch["wav_lens"].tolist()
    spec = clip_spectrograms([wav[i, 0, :n] for i, n in enumerate(lens)], wav.device)  # (B, 1025, max F_i)
    frames = wav.shape[-1] // HOP_LENGTH
    if spec.shape[-1] < frames:  # a batch padded wider than its longest clip keeps its width
        spec = torch.nn.functional.pad(spec, (0, frames - spec.shape[-1]))
    return {**batch, "spec": spec}


def split(batch: Batch, micro: int) -> list[Batch]:
    """A rank's collated share cut into the micro-batches `buckets.micro_batches` makes (the
    fewest of at most `micro` samples, as equal as possible, in order), each trimmed to its
    own longest sample: the bucketed counterpart of `trainer.workload.split_batch`."""
    n = int(next(iter(batch.values())).shape[0])
    parts = micro_batches(range(n), micro)
    return [trim({k: v[p[0] : p[-1] + 1] for k, v in batch.items()}) for p in parts]


# padded axis of each key: (lengths key, dim, frames per length unit)
_AXES = {
    "phoneme_ids": ("phoneme_lens", 1, 1),
    "bert_features": ("phoneme_lens", 2, 1),
    "semantic_ids": ("semantic_lens", 1, 1),
    "rejected_ids": ("rejected_lens", 1, 1),
    "ssl": ("spec_lens", 2, 1),
    "spec": ("spec_lens", 2, 1),
    "wav": ("spec_lens", 2, HOP_LENGTH),
}


def trim(batch: Batch) -> Batch:
    """The batch with every padded axis cut to its longest sample (views, no copy).
    DPO's rejected sequences keep their 2T width: cut to twice the longest semantic sequence."""
    out = dict(batch)
    for key, (lens_key, dim, unit) in _AXES.items():
        if key not in batch or lens_key not in batch:
            continue
        if key == "rejected_ids":
            longest = 2 * int(batch["semantic_lens"].max())
        else:
            longest = int(batch[lens_key].max()) * unit
        out[key] = batch[key].narrow(dim, 0, min(longest, batch[key].shape[dim]))
    return out


def lengths(seqs: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
    return torch.tensor([s.shape[dim] for s in seqs], dtype=torch.int64)


def pad_1d(seqs: Sequence[torch.Tensor], length: int, value: float) -> torch.Tensor:
    """[(L_i,)] -> (B, length), `value` after each sequence."""
    out = torch.full((len(seqs), length), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def pad_2d(mats: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """[(C, L_i)] -> (B, C, length), zero-padded on the right."""
    out = torch.zeros(len(mats), mats[0].shape[0], length, dtype=mats[0].dtype)
    for i, m in enumerate(mats):
        out[i, :, : m.shape[1]] = m
    return out
