"""Reading a prepared dataset: samples, batches with the workloads' exact shapes, bucketing.

    ds = PreparedDataset("ds", split="train")           # ValueError if missing/incomplete/foreign
    order = bucketed_batches(ds.lengths, 8, seed=0, epoch=3)
    batch = workload.collate([ds[i] for i in order[k]], ds.slice_seconds)   # Workload.collate (trainer/data/collate.py)

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

from trainer.audio_constants import BERT_DIM
from trainer.data.manifest import SPLITS, read_manifest
from trainer.workload import check_batch_size

Sample = dict[str, torch.Tensor]
POOL_BATCHES = 50  # bucketing sorts by length inside pools of 50 batches of shuffled clips


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
