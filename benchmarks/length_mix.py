"""Realistic clip lengths and prepared datasets of them, for the bucket and loader benchmarks.

    seconds = length_mix(1000, seed=0)          # 4-12 s (lognormal, median 6 s) plus 2 % at 20-30 s
    root = write_prepared(tmp / "ds", seconds)  # a dataset `PreparedDataset` reads, as `advisor prepare` writes it

The clip files hold what `advisor prepare` stores (wav f32 at 32 kHz cut to
whole frames, ssl f16 (768, F), semantic_ids i16 (F // 2), phoneme_ids i16
(12 per second), sv_emb f16 (20480,), meta), with random features: the loader's
cost depends on their sizes, not their values. The manifest has each file's
bytes and sha256, so the loader checks them as it does a real dataset's.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Sequence

import torch

from trainer.audio_constants import FRAME_RATE, HOP_LENGTH, SAMPLE_RATE
from trainer.data.dataset import save_atomic
from trainer.data.listfile import file_sha256
from trainer.data.manifest import FORMAT, VERSION, write_json

SHORT = (4.0, 12.0)  # seconds: the body of the mix
LONG = (20.0, 30.0)  # seconds: the outliers
LONG_FRACTION = 0.02
MEDIAN = 6.0
SIGMA = 0.3  # of log seconds: ~4-9 s for the middle 80 %


def length_mix(n: int, seed: int = 0) -> list[float]:
    """n clip lengths in seconds (frame-exact): lognormal with median 6 s clipped to 4-12 s,
    plus 2 % (at least one) uniform in 20-30 s, shuffled."""
    rng = random.Random(seed)
    long = max(1, round(n * LONG_FRACTION))
    seconds = [min(SHORT[1], max(SHORT[0], rng.lognormvariate(math.log(MEDIAN), SIGMA))) for _ in range(n - long)]
    seconds += [rng.uniform(*LONG) for _ in range(long)]
    rng.shuffle(seconds)
    return [round(s * FRAME_RATE) / FRAME_RATE for s in seconds]


def write_prepared(root: Path, seconds: Sequence[float], slice_seconds: float | None = None, seed: int = 0, val: int = 0) -> Path:
    """A prepared dataset of clips of `seconds` at `root` (the last `val` clips in the val split)."""
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    records = []
    for i, s in enumerate(seconds):
        frames = round(s * FRAME_RATE)
        n = frames * HOP_LENGTH
        t = torch.arange(n) / SAMPLE_RATE
        wav = (0.3 * torch.sin(2 * math.pi * (110 + 7 * i) * t) + 0.05 * torch.randn(n, generator=g)).float()
        phonemes = max(1, round(12 * s))
        stored = {
            "wav": wav,
            "ssl": torch.randn(768, frames, generator=g).to(torch.float16),
            "semantic_ids": torch.randint(0, 1024, (frames // 2,), generator=g).to(torch.int16),
            "phoneme_ids": torch.randint(1, 700, (phonemes,), generator=g).to(torch.int16),
            "sv_emb": torch.randn(20480, generator=g).to(torch.float16),
            "meta": {"id": f"c{i:05d}", "seconds": frames / FRAME_RATE, "frames": frames, "tokens": frames // 2, "phonemes": phonemes},
        }
        path = root / "clips" / f"c{i:05d}.pt"
        save_atomic(stored, path)
        records.append({
            "id": f"c{i:05d}", "file": f"clips/c{i:05d}.pt", "line": i + 1, "audio": f"wav/c{i:05d}.wav", "speaker": "a", "language": "en",
            "text": "x", "seconds": frames / FRAME_RATE, "frames": frames, "tokens": frames // 2, "phonemes": phonemes,
            "splits": ["val"] if i >= len(seconds) - val else ["train"], "bytes": path.stat().st_size, "sha256": file_sha256(path),
        })
    longest = max(seconds)
    write_json(root / "manifest.json", {"format": FORMAT, "version": VERSION, "complete": True, "slice_seconds": slice_seconds or math.ceil(longest), "clips": records})
    return root
