"""Cut long recordings at silences into pieces of at most S seconds (`advisor slice`).

Loudness is the RMS of 10 ms hops (window 4 hops), in dB relative to full scale.
A silence is a run of hops below the threshold (-34 dB) lasting at least the
minimum interval (300 ms); GPT-SoVITS's webui slicer uses the same defaults
(and min length 4000 ms, max silence kept 500 ms). Our rules:
  - walking from the start, a piece ends at the first silence that comes after at
    least `min_seconds` (4 s) of piece, as GPT-SoVITS does;
  - we also enforce the maximum: when no silence falls between min_seconds and S,
    the piece is cut at the quietest hop in that stretch;
  - a silence up to 500 ms long is cut at its quietest hop; a longer one keeps
    250 ms on each side and the rest is dropped; leading and trailing silence is
    trimmed the same way;
  - only the recording's last piece may be shorter than min_seconds; a tail under
    0.6 s joins the previous piece when the result still fits in S, else is dropped;
  - a piece that is silent throughout is dropped.
Pieces are written as 32 kHz mono 16-bit WAVs, with a `.list` skeleton whose text
fields are left empty for the user's transcription.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from trainer.audio_constants import MIN_CLIP_SECONDS, MIN_SLICE_SECONDS, SAMPLE_RATE
from trainer.checks import check_slice_seconds
from trainer.data import audio_backend
from trainer.data.audio import AudioError, SILENCE_PEAK, resample, write_wav
from trainer.data.listfile import normalize_language

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64")
SKELETON = "slices.list"


@dataclass(frozen=True)
class SlicerConfig:
    max_seconds: float = 10.0  # S: no piece is longer
    min_seconds: float = 4.0  # no piece is shorter, except a recording's tail
    threshold_db: float = -34.0  # hops quieter than this are silent
    min_interval_ms: float = 300.0  # shortest silence to cut at
    hop_ms: float = 10.0
    max_silence_kept_ms: float = 500.0

    def __post_init__(self) -> None:
        check_slice_seconds(self.max_seconds, "--seconds", minimum=MIN_SLICE_SECONDS)
        if not 0 < self.min_seconds:
            raise ValueError(f"--min-seconds {self.min_seconds:g} must be positive")
        if not self.threshold_db < 0:
            raise ValueError(f"--threshold-db {self.threshold_db:g} must be negative (dB below full scale)")
        if not 0 < self.hop_ms <= self.min_interval_ms:
            raise ValueError(f"hop {self.hop_ms:g} ms must be positive and at most the minimum interval {self.min_interval_ms:g} ms")
        if self.max_silence_kept_ms < 0:
            raise ValueError(f"--max-silence-kept-ms {self.max_silence_kept_ms:g} must be >= 0")


def loudness_db(samples: np.ndarray, hop: int, window: int) -> np.ndarray:
    """RMS per hop in dBFS: (ceil(N / hop),), each centred on its hop."""
    n_hops = -(-len(samples) // hop)
    padded = np.pad(samples.astype(np.float64), (window // 2, window // 2 + n_hops * hop))
    power = np.concatenate([[0.0], np.cumsum(padded**2)])
    starts = np.arange(n_hops) * hop
    mean = (power[starts + window] - power[starts]) / window
    return 10 * np.log10(np.maximum(mean, 1e-20))


def slice_points(samples: np.ndarray, rate: int, config: SlicerConfig) -> list[tuple[int, int]]:
    """[(start, end)] sample ranges of the pieces, in order (see the module docstring)."""
    hop = max(1, round(rate * config.hop_ms / 1000))
    db = loudness_db(samples, hop, 4 * hop)
    silent = db < config.threshold_db
    n = len(samples)
    kept = round(rate * config.max_silence_kept_ms / 2000)  # kept on each side of a long silence
    cuts = _silence_cuts(silent, db, hop, n, round(config.min_interval_ms / config.hop_ms), kept)
    start, end = _trim_ends(silent, hop, n, kept)
    min_len = round(min(config.min_seconds, config.max_seconds) * rate)
    max_len = round(config.max_seconds * rate)
    pieces: list[tuple[int, int]] = []
    while start < end:
        if end - start <= max_len and not any(start + min_len <= a < end for a, _ in cuts):
            pieces.append((start, end))
            break
        eligible = [(a, b) for a, b in cuts if start + min_len <= a <= start + max_len and a < end]
        if eligible:
            a, b = eligible[0]
        else:  # no silence where we may cut: the quietest hop between min and max length
            lo, hi = (start + min_len) // hop, min(start + max_len, end) // hop
            a = b = int(lo + np.argmin(db[lo : max(hi, lo + 1)])) * hop
            a = b = min(max(a, start + 1), end)
        pieces.append((start, a))
        start = max(b, a)
    return _fix_tail(_drop_silent(pieces, samples), min_len, max_len, rate)


def _silence_cuts(silent: np.ndarray, db: np.ndarray, hop: int, n: int, min_hops: int, kept: int) -> list[tuple[int, int]]:
    """(end of the piece before, start of the piece after) for every silence run of >= min_hops."""
    cuts = []
    for first, last in _runs(silent):
        if last - first < min_hops or first == 0 or last >= len(silent):
            continue  # too short, or leading/trailing (trimmed instead)
        a0, b0 = first * hop, min(last * hop, n)
        if b0 - a0 <= 2 * kept:
            q = (first + int(np.argmin(db[first:last]))) * hop
            cuts.append((q, q))
        else:
            cuts.append((a0 + kept, b0 - kept))
    return cuts


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last) index ranges where mask is True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _trim_ends(silent: np.ndarray, hop: int, n: int, kept: int) -> tuple[int, int]:
    loud = np.flatnonzero(~silent)
    if len(loud) == 0:
        return 0, 0
    return max(0, loud[0] * hop - kept), min(n, (loud[-1] + 1) * hop + kept)


def _drop_silent(pieces: list[tuple[int, int]], samples: np.ndarray) -> list[tuple[int, int]]:
    return [(a, b) for a, b in pieces if b > a and np.abs(samples[a:b]).max() >= SILENCE_PEAK]


def _fix_tail(pieces: list[tuple[int, int]], min_len: int, max_len: int, rate: int) -> list[tuple[int, int]]:
    if not pieces or pieces[-1][1] - pieces[-1][0] >= MIN_CLIP_SECONDS * rate:
        return pieces
    tail = pieces.pop()
    if pieces and tail[1] - pieces[-1][0] <= max_len:
        pieces[-1] = (pieces[-1][0], tail[1])
    return pieces


# --- files ---------------------------------------------------------------------------


@dataclass
class SliceResult:
    pieces: list[dict] = field(default_factory=list)  # {file, source, start_s, seconds}
    problems: list[dict] = field(default_factory=list)  # {path, reason}
    list_path: Path | None = None
    input_seconds: float = 0.0

    def summary(self) -> dict:
        return {
            "list": str(self.list_path) if self.list_path else None,
            "pieces": len(self.pieces),
            "input_seconds": round(self.input_seconds, 3),
            "output_seconds": round(sum(p["seconds"] for p in self.pieces), 3),
            "longest_seconds": round(max((p["seconds"] for p in self.pieces), default=0.0), 3),
            "problems": self.problems,
        }


def find_recordings(path: Path) -> list[Path]:
    """A file, or the audio files in a folder (recursively, sorted)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    raise ValueError(f"{path}: no such file or folder")


def read_recording(path: Path) -> np.ndarray:
    """Mono float32 at 32 kHz, scaled down if its peak exceeds 1 (no other normalisation)."""
    sf = audio_backend.soundfile()
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"unreadable audio ({' '.join(str(exc).split())})") from None
    if len(data) == 0:
        raise AudioError("zero-length audio (no samples)")
    mono = data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise AudioError("audio holds NaN/inf samples")
    mono = resample(mono, int(rate), SAMPLE_RATE)
    peak = float(np.abs(mono).max())
    return mono / peak if peak > 1.0 else mono


def slice_recordings(
    source: Path,
    out: Path,
    config: SlicerConfig,
    speaker: str = "speaker",
    language: str = "zh",
    on_file: Callable[[Path, float], None] | None = None,
) -> SliceResult:
    """Slice every recording under `source` into `out` and write `out/slices.list`."""
    lang = normalize_language(language)
    if lang is None:
        raise ValueError(f"--language {language!r}: expected one of zh, ja, en, ko, yue")
    if "|" in speaker or not speaker.strip():
        raise ValueError(f"--speaker {speaker!r}: must be non-empty and contain no '|'")
    recordings = find_recordings(source)
    check_slice_out(out)
    audio_backend.require()  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    remove_previous(out)
    result = SliceResult()
    for path in recordings:
        try:
            samples = read_recording(path)
        except AudioError as exc:
            result.problems.append({"path": str(path), "reason": str(exc)})
            continue
        result.input_seconds += len(samples) / SAMPLE_RATE
        stem = _unique_stem(path, source)
        for k, (a, b) in enumerate(slice_points(samples, SAMPLE_RATE, config)):
            name = f"{stem}_{k:04d}.wav"
            _write_atomic(out / name, samples[a:b])
            result.pieces.append({"file": name, "source": str(path), "start_s": round(a / SAMPLE_RATE, 3), "seconds": round((b - a) / SAMPLE_RATE, 3)})
        if on_file:
            on_file(path, len(samples) / SAMPLE_RATE)
    lines = "".join(f"{p['file']}|{speaker}|{lang}|\n" for p in result.pieces)
    result.list_path = out / SKELETON
    from trainer.atomic import atomic_write_bytes

    atomic_write_bytes(result.list_path, lines.encode("utf-8"))
    return result


def check_slice_out(out: Path) -> None:
    """OUT must be missing, empty, or an earlier slice output (it has slices.list)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: output exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / SKELETON).is_file():
        raise ValueError(f"{out}: output folder holds something else (no {SKELETON}); choose an empty or new folder")


def remove_previous(out: Path) -> None:
    """Delete the pieces an earlier run listed in OUT/slices.list (and only those)."""
    skeleton = out / SKELETON
    if not skeleton.is_file():
        return
    for line in skeleton.read_text(encoding="utf-8", errors="replace").splitlines():
        name = line.split("|", 1)[0]
        if name and "/" not in name and "\\" not in name and name.endswith(".wav"):
            (out / name).unlink(missing_ok=True)


def _unique_stem(path: Path, source: Path) -> str:
    """File stem, prefixed by its sub-folders under `source` so names never collide."""
    rel = path.relative_to(source) if source.is_dir() else Path(path.name)
    return "_".join([*rel.parent.parts, rel.stem]).replace("|", "_").replace(" ", "_")


def _write_atomic(path: Path, samples: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write_wav(tmp, samples)
    os.replace(tmp, path)
