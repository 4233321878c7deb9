"""Collating: samples of a prepared dataset padded into one batch (keys of docs/ARCHITECTURE.md).

Each workload's `collate` (trainer/workload.py) is built from these pieces, so the loader
knows no workload and no workload module imports the loader:

    check_fits(samples, S)          ValueError if a sample is longer than the slice
    phonemes(samples, P)            phoneme_ids (B, P) pad 0, phoneme_lens (B,)
    semantic(samples, T)            semantic_ids (B, T) pad 1024, semantic_lens (B,)
    stack_padded(mats, L)           (C, L_i) -> (B, C, L), zero-padded
    audio(samples, F)               s2: ssl (B,768,F), spec (B,1025,F), spec_lens, wav (B,1,F*640), wav_lens, [sv_emb]

A batch of real data for slice length S has the shapes of the workload's synthetic
batch for S (what the probe measured is what training runs): tokens padded to
T = 25*S, frames to F = 50*S, wav to F*640 samples, phonemes to P = max(12*S, the
longest in the batch): `padded_sizes(S)`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from trainer.audio_constants import HOP_LENGTH, SEMANTIC_EOS
from trainer.data.padding import lengths, pad_1d, pad_2d
from trainer.sizing import slice_shape
from trainer.sovits.spectral import linear_spectrogram

Sample = dict[str, torch.Tensor]
Batch = dict[str, torch.Tensor]
PHONEME_PAD = 0


def padded_sizes(slice_seconds: float, samples: Sequence[Sample] = ()) -> tuple[int, int, int]:
    """(T tokens, F frames, P phonemes) of a full-length slice (`trainer.sizing.slice_shape`);
    P grows to the longest phoneme sequence of `samples`."""
    T, F, P = slice_shape(slice_seconds)
    return T, F, max([P] + [len(s["phoneme_ids"]) for s in samples])


def check_fits(samples: Sequence[Sample], slice_seconds: float) -> None:
    """ValueError if there are no samples or one is longer than the slice."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    T, F, _ = slice_shape(slice_seconds)
    for s in samples:
        frames = s["ssl"].shape[1]
        if frames > F or len(s["semantic_ids"]) > T:
            raise ValueError(f"a sample of {frames} frames is longer than the {slice_seconds:g} s slice ({F} frames): prepare the dataset with this slice length")


# the padding primitives are padding.py's (one copy): lens, pad_1d, stack_padded
lens, pad_1d, stack_padded = lengths, pad_1d, pad_2d


def phonemes(samples: Sequence[Sample], P: int) -> Batch:
    ids = [s["phoneme_ids"] for s in samples]
    return {"phoneme_ids": pad_1d(ids, P, PHONEME_PAD), "phoneme_lens": lens(ids)}  # (B, P), (B,)


def semantic(samples: Sequence[Sample], T: int) -> Batch:
    ids = [s["semantic_ids"] for s in samples]
    return {"semantic_ids": pad_1d(ids, T, SEMANTIC_EOS), "semantic_lens": lens(ids)}  # (B, T), (B,)


def audio(samples: Sequence[Sample], F: int) -> Batch:
    ssl = [s["ssl"] for s in samples]
    wavs = [s["wav"] for s in samples]
    wav = pad_1d(wavs, F * HOP_LENGTH, 0)  # (B, F*640)
    return {
        "ssl": stack_padded(ssl, F),  # (B, 768, F)
        "spec": linear_spectrogram(wav),  # (B, 1025, F): frames of the padded wav, F*640 // 640
        "spec_lens": lens(ssl, dim=1),
        "wav": wav[:, None],  # (B, 1, F*640)
        "wav_lens": lens(wavs),
        **({"sv_emb": torch.stack([s["sv_emb"] for s in samples])} if all("sv_emb" in s for s in samples) else {}),  # (B, 20480)
    }


# --- s2 v3/v4 (CFM) ------------------------------------------------------------------------


def cfm(samples: Sequence[Sample], slice_seconds: float, version: str, F: int, Fm: int) -> Batch:
    """Pad samples into one s2 v3/v4 (CFM) batch; keys as in docs/ARCHITECTURE.md ("Batch keys").

    ssl and spec are padded to F frames, mel to Fm: the lengths upstream's collate pads a
    batch of the slice's length to (the v3/v4 workload's `padded_lengths`, which its
    synthetic batch has too). Padding is zeros (in normalised-mel space that is ln-mel
    -5, not silence: the loss masks it by mel_lens). ValueError for a sample without mel,
    with another version's mel, or longer than the slice."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    _, frames, P = slice_shape(slice_seconds)
    for s in samples:
        _check_cfm_sample(s, version, frames, slice_seconds)
    ssl, mels = [s["ssl"] for s in samples], [s["mel"] for s in samples]
    wav = pad_1d([s["wav"] for s in samples], F * HOP_LENGTH, 0)  # (B, F*640), only to make spec
    return {
        "ssl": stack_padded(ssl, F),  # (B, 768, F) 50 Hz
        "spec": linear_spectrogram(wav),  # (B, 1025, F): ref_enc reads its lowest 704 bins
        "spec_lens": lens(ssl, dim=1),  # (B,)
        "mel": stack_padded(mels, Fm),  # (B, 100, Fm)
        "mel_lens": lens(mels, dim=1),  # (B,)
        **phonemes(samples, max(P, max(len(s["phoneme_ids"]) for s in samples))),  # phoneme_ids (B, P), phoneme_lens (B,)
    }


def _check_cfm_sample(sample: Sample, version: str, F: int, slice_seconds: float) -> None:
    from trainer.gptsovits.mel_v3 import mel_spec

    frames = sample["ssl"].shape[1]
    if "mel" not in sample:
        raise ValueError(f"a clip has no mel target: s2 {version} needs a dataset from `advisor prepare --from-gpt-sovits EXP OUT --version {version}`")
    expected = mel_spec(version).frames(frames)
    if sample["mel"].shape[1] != expected:
        raise ValueError(f"a clip's mel has {sample['mel'].shape[1]} frames for {frames} content frames; s2 {version} expects "
                         f"{expected} (the dataset was prepared for another version?)")
    if frames > F:
        raise ValueError(f"a sample of {frames} frames is longer than the {slice_seconds:g} s slice ({F} frames): prepare the dataset with this slice length")
