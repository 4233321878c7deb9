"""Reading a prepared dataset: samples, batches with the workloads' exact shapes, bucketing.

    ds = PreparedDataset("ds", split="train")           # ValueError if missing/incomplete/foreign
    order = bucketed_batches(ds.lengths, 8, seed=0, epoch=3)
    batch = collate("s2", [ds[i] for i in order[k]], ds.slice_seconds)
    batch = collate_v3([ds[i] for i in order[k]], ds.slice_seconds, "v4")   # s2 v3/v4 (CFM)

A batch of real data for slice length S has the shapes of the workload's synthetic
batch for S (what the probe measured is what training runs): semantic tokens padded
to T = 25*S (pad 1024), frames to F = 50*S, wav to F*640 samples, phonemes to
P = max(12*S, longest in the batch) (pad 0). Keys are those of docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path
from typing import Sequence

import torch

from trainer.audio_constants import BERT_DIM, HOP_LENGTH, SEMANTIC_EOS
from trainer.data.manifest import SPLITS, read_manifest
from trainer.sovits.spectral import linear_spectrogram
from trainer.sizing import slice_shape
from trainer.workload import Batch, check_batch_size

Sample = dict[str, torch.Tensor]
PHONEME_PAD = 0
POOL_BATCHES = 50  # bucketing sorts by length inside pools of 50 batches of shuffled clips
SAMPLE_FIELDS = ("phoneme_ids", "bert_features", "semantic_ids", "ssl", "wav")


class PreparedDataset:
    """One split of a folder written by `advisor prepare`.

    `ds[i]` is a dict: phoneme_ids (P,) i64, bert_features (1024, P) f32, semantic_ids
    (T,) i64, ssl (768, F) f32, wav (F*640,) f32 in [-1, 1]; [sv_emb (20480,) f32];
    [mel (100, Fm) f32: the v3/v4 CFM target, `mel_version` says which]. `lengths[i]`
    is clip i's frame count F (50 Hz), for `bucketed_batches`."""

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
        self.root = Path(root)
        self.split = split
        self.manifest = read_manifest(self.root)
        self.slice_seconds = float(self.manifest["slice_seconds"])
        self.clips = [c for c in self.manifest["clips"] if split in c["splits"]]
        self._verified: set[int] = set()  # clips whose sha256 matched once (files are written atomically)
        for clip in self.clips:
            path = self.root / clip["file"]
            if not path.is_file():
                raise ValueError(f"{self.root}: clip file {clip['file']} named by the manifest is missing (run `advisor prepare` again)")
            if isinstance(clip.get("bytes"), int) and path.stat().st_size != clip["bytes"]:
                raise ValueError(f"{path}: damaged clip file ({path.stat().st_size} bytes, the manifest says {clip['bytes']}: "
                                 "truncated or replaced; run `advisor prepare` again)")

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def lengths(self) -> list[int]:
        return [int(c["frames"]) for c in self.clips]

    @property
    def mel_version(self) -> str | None:
        """v3 / v4 when the clips hold that version's mel target (prepare --from-gpt-sovits --version), else None."""
        mel = self.manifest.get("mel")
        return mel.get("version") if isinstance(mel, dict) else None

    @property
    def seconds(self) -> float:
        return sum(float(c["seconds"]) for c in self.clips)

    def __getitem__(self, index: int) -> Sample:
        clip = self.clips[index]
        path = self.root / clip["file"]
        stored = self._load(index, path)
        phonemes = stored["phoneme_ids"].long()
        bert = stored.get("bert_features")
        sample = {
            "phoneme_ids": phonemes,
            "bert_features": bert.float() if bert is not None else torch.zeros(BERT_DIM, len(phonemes)),
            "semantic_ids": stored["semantic_ids"].long(),
            "ssl": stored["ssl"].float(),
            "wav": stored["wav"].float(),
        }
        if "sv_emb" in stored:  # (20480,) v2Pro+ speaker embedding; (1, 20480) as 7-sv_cn/ stores it
            sample["sv_emb"] = stored["sv_emb"].float().reshape(-1)
        if "mel" in stored:  # (100, Fm) normalised log-mel, the v3/v4 CFM target (trainer/gptsovits/mel_v3.py)
            sample["mel"] = stored["mel"].float()
        return sample


    def _load(self, index: int, path: Path) -> dict:
        """The clip file's dict, checked: sha256 against the manifest (first load), the
        tensors a sample needs. ValueError naming the file for any damage."""
        clip = self.clips[index]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{path}: unreadable clip file ({exc.strerror or exc})") from None
        if index not in self._verified and isinstance(clip.get("sha256"), str):
            if hashlib.sha256(data).hexdigest() != clip["sha256"]:
                raise ValueError(f"{path}: damaged clip file (sha256 does not match the manifest; run `advisor prepare` again)")
            self._verified.add(index)
        try:
            stored = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file must name itself
            raise ValueError(f"{path}: unreadable clip file ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") from None
        problem = _clip_problem(stored)
        if problem:
            raise ValueError(f"{path}: not a prepared clip ({problem}; run `advisor prepare` again)")
        return stored


# key -> number of dimensions of a prepared clip's tensors (bert_features (1024, P) and mel (100, Fm) are optional)
CLIP_TENSORS = {"phoneme_ids": 1, "semantic_ids": 1, "ssl": 2, "wav": 1}


def _clip_problem(stored) -> str | None:
    if not isinstance(stored, dict):
        return f"a {type(stored).__name__}, expected a dict of tensors"
    optional = {k: 2 for k in ("bert_features", "mel") if stored.get(k) is not None}
    for key, dims in {**CLIP_TENSORS, **optional}.items():
        value = stored.get(key)
        if not isinstance(value, torch.Tensor):
            return f"{key} is missing" if value is None else f"{key} is a {type(value).__name__}, expected a tensor"
        if value.dim() != dims:
            return f"{key} has shape {tuple(value.shape)}, expected {dims} dimensions"
    return None


def padded_sizes(slice_seconds: float) -> tuple[int, int, int]:
    """(T tokens, F frames, P phonemes) of a full-length slice: `trainer.sizing.slice_shape`,
    the lengths the workloads' synthetic batches have too."""
    return tuple(slice_shape(slice_seconds))


def cfm_padded_sizes(slice_seconds: float, version: str) -> tuple[int, int, int]:
    """(F content frames, Fm mel frames, P phonemes) of a full-length s2 v3/v4 slice: F is
    `padded_sizes`' F rounded up to even (upstream pads 50 Hz inputs to even lengths), Fm the
    mel frames F covers (v3 floor(1.875 F), v4 2F). `collate_v3` pads to these; synthetic
    batches of the v3/v4 workload should use the same."""
    from trainer.gptsovits.mel_v3 import mel_spec

    _, F, P = padded_sizes(slice_seconds)
    F += F % 2
    return F, mel_spec(version).frames(F), P


def collate(
    workload_name: str,
    samples: Sequence[Sample],
    slice_seconds: float,
    dpo: bool = False,
    generator: torch.Generator | None = None,
) -> Batch:
    """Pad samples into one batch for workload "s1" or "s2" (keys as in docs/ARCHITECTURE.md).

    `dpo` (s1 only) adds rejected_ids/rejected_lens made by s1's `make_rejected` with
    `generator`. ValueError if a sample is longer than the slice."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    T, F, P = padded_sizes(slice_seconds)
    P = max(P, max(len(s["phoneme_ids"]) for s in samples))
    for s in samples:
        frames = s["ssl"].shape[1]
        if frames > F or len(s["semantic_ids"]) > T:
            raise ValueError(f"a sample of {frames} frames is longer than the {slice_seconds:g} s slice ({F} frames): prepare the dataset with this slice length")
    phonemes = _phonemes(samples, P)
    if workload_name == "s1":
        batch = {**phonemes, **_semantic(samples, T)}
        batch["bert_features"] = _stack_padded([s["bert_features"] for s in samples], P)  # (B, 1024, P)
        if dpo:
            from trainer.workloads.s1 import make_rejected

            # padded to 2T like the synthetic batch: DPO memory does not depend on the draw
            batch["rejected_ids"], batch["rejected_lens"] = make_rejected(
                batch["semantic_ids"], batch["semantic_lens"], generator, pad_to=2 * T
            )
        return batch
    if workload_name == "s2":
        if dpo:
            raise ValueError("DPO is an s1 mode: the s2 workload has no rejected sequences")
        return {**_audio(samples, F), **phonemes}
    raise ValueError(f"unknown workload {workload_name!r}: expected s1 or s2")


def collate_v3(samples: Sequence[Sample], slice_seconds: float, version: str) -> Batch:
    """Pad samples into one s2 v3/v4 (CFM) batch; keys as in docs/ARCHITECTURE.md ("Batch keys").

    ssl and spec are padded to F, mel to Fm (`cfm_padded_sizes`): Fm is the length the
    model's condition has after its nearest upsampling, so mel and condition line up
    without cutting. Padding is zeros (in normalised-mel space that is ln-mel -5, not
    silence: the loss masks it by mel_lens). ValueError for a sample without mel, with
    another version's mel, or longer than the slice."""
    if not samples:
        raise ValueError("collate_v3 needs at least one sample")
    F, Fm, P = cfm_padded_sizes(slice_seconds, version)
    for s in samples:
        _check_cfm_sample(s, version, F, slice_seconds)
    ssl, mels = [s["ssl"] for s in samples], [s["mel"] for s in samples]
    wav = _pad_1d([s["wav"] for s in samples], F * HOP_LENGTH, 0)  # (B, F*640), only to make spec
    return {
        "ssl": _stack_padded(ssl, F),  # (B, 768, F) 50 Hz
        "spec": linear_spectrogram(wav),  # (B, 1025, F): ref_enc reads its lowest 704 bins
        "spec_lens": _lens(ssl, dim=1),  # (B,)
        "mel": _stack_padded(mels, Fm),  # (B, 100, Fm)
        "mel_lens": _lens(mels, dim=1),  # (B,)
        **_phonemes(samples, max(P, max(len(s["phoneme_ids"]) for s in samples))),  # phoneme_ids (B, P), phoneme_lens (B,)
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


def _lens(seqs: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
    return torch.tensor([s.shape[dim] for s in seqs], dtype=torch.int64)


def _pad_1d(seqs: Sequence[torch.Tensor], length: int, value: int) -> torch.Tensor:
    out = torch.full((len(seqs), length), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def _stack_padded(mats: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """(C, L_i) tensors -> (B, C, length), zero-padded on the right."""
    out = torch.zeros(len(mats), mats[0].shape[0], length, dtype=mats[0].dtype)
    for i, m in enumerate(mats):
        out[i, :, : m.shape[1]] = m
    return out


def _phonemes(samples: Sequence[Sample], P: int) -> Batch:
    ids = [s["phoneme_ids"] for s in samples]
    return {"phoneme_ids": _pad_1d(ids, P, PHONEME_PAD), "phoneme_lens": _lens(ids)}  # (B, P), (B,)


def _semantic(samples: Sequence[Sample], T: int) -> Batch:
    ids = [s["semantic_ids"] for s in samples]
    return {"semantic_ids": _pad_1d(ids, T, SEMANTIC_EOS), "semantic_lens": _lens(ids)}  # (B, T), (B,)


def _audio(samples: Sequence[Sample], F: int) -> Batch:
    ssl = [s["ssl"] for s in samples]
    wavs = [s["wav"] for s in samples]
    wav = _pad_1d(wavs, F * HOP_LENGTH, 0)  # (B, F*640)
    return {
        "ssl": _stack_padded(ssl, F),  # (B, 768, F)
        "spec": linear_spectrogram(wav),  # (B, 1025, F): frames of the padded wav, F*640 // 640
        "spec_lens": _lens(ssl, dim=1),
        "wav": wav[:, None],  # (B, 1, F*640)
        "wav_lens": _lens(wavs),
        **({"sv_emb": torch.stack([s["sv_emb"] for s in samples])} if all("sv_emb" in s for s in samples) else {}),  # (B, 20480)
    }


def bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[list[int]]:
    """Index batches of similar lengths, the same for the same (seed, epoch).

    With shuffle: indices are shuffled, sorted by length inside pools of 50 batches,
    cut into batches (only the last may be short; dropped with drop_last), and the
    batch order is shuffled. Without: sorted by (length, index), in order. The trainer
    resumes exactly by recomputing this list and skipping the batches already done."""
    check_batch_size(batch_size)
    n = len(lengths)
    if shuffle:
        rng = random.Random(f"bucketed_batches:{seed}:{epoch}")  # str seeds hash deterministically
        order = list(range(n))
        rng.shuffle(order)
        pool = batch_size * POOL_BATCHES
        order = [i for k in range(0, n, pool) for i in sorted(order[k : k + pool], key=lambda i: lengths[i])]
    else:
        order = sorted(range(n), key=lambda i: (lengths[i], i))
    batches = [order[k : k + batch_size] for k in range(0, n, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if shuffle:
        rng.shuffle(batches)
    return batches
