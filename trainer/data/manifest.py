"""The prepared dataset's `manifest.json`: its schema, atomic writes, and the reader's checks.

A dataset folder holds
  manifest.json   written by `advisor prepare`; "complete": true only once every
                  clip file it names is on disk (it is written last, atomically)
  report.json     every input line not used, with line number and reason
  clips/<id>.pt   one torch-saved dict of tensors per clip (see `dataset.py`)

Manifest fields: format, version, complete, list {path, sha256}, slice_seconds,
sample_rate, seed, val_fraction, features {...}, counts {lines, used, skipped,
train, val}, seconds {total, train, val}, clips [{id, file, line, audio, speaker,
language, text, seconds, frames, tokens, phonemes, splits, bytes, sha256}];
splits is ["train"], ["val"], or both for a one-clip dataset. bytes and sha256
(the clip file's size and hash) are optional for readers: when present the
loader refuses a clip file that differs (damaged, truncated, replaced).

`read_manifest` refuses a damaged manifest (truncated, NUL-filled, not UTF-8,
not JSON, another format, clips without their fields) with one line naming
the file and what is wrong; the dataset has no older copy, so the remedy is
to run `advisor prepare` again (unchanged clips are reused).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trainer.atomic import atomic_write_bytes

FORMAT = "sovits-advisor-dataset"
VERSION = 1
MANIFEST = "manifest.json"
REPORT = "report.json"
CLIPS_DIR = "clips"
SPLITS = ("train", "val")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def is_dataset_folder(root: Path) -> bool:
    """True if `root` holds a manifest of our format (complete or not)."""
    try:
        return json.loads((root / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a complete prepared dataset; ValueError naming the folder otherwise."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise ValueError(f"{root}: not a prepared dataset (no {MANIFEST}; run `advisor prepare`)")
    try:
        data = path.read_bytes()
        manifest = json.loads(data.decode("utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: unreadable manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: unreadable manifest (damaged: byte {exc.start} is not UTF-8; run `advisor prepare` again)") from None
    except json.JSONDecodeError as exc:
        what = "NUL bytes" if b"\x00" in data else "not JSON"
        raise ValueError(f"{path}: unreadable manifest (damaged: {what} at line {exc.lineno} column {exc.colno}, truncated or overwritten; run `advisor prepare` again)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sovits-advisor dataset manifest (format {FORMAT!r} expected)")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path}: manifest version {manifest.get('version')!r} is not supported (expected {VERSION})")
    if manifest.get("complete") is not True:
        raise ValueError(f"{root}: dataset is incomplete (prepare was interrupted; run `advisor prepare` again)")
    problem = _shape_problem(manifest)
    if problem:
        raise ValueError(f"{path}: unreadable manifest (damaged: {problem}; run `advisor prepare` again)")
    return manifest


# clip field -> the types it may have (bool is not a number here)
CLIP_FIELDS = {"id": (str,), "file": (str,), "seconds": (int, float), "frames": (int,), "splits": (list,)}


def _shape_problem(manifest: dict) -> str | None:
    """What a loader would trip over: slice_seconds not a positive number, clips not records."""
    slice_seconds = manifest.get("slice_seconds")
    if isinstance(slice_seconds, bool) or not isinstance(slice_seconds, (int, float)) or not slice_seconds > 0:
        return f"slice_seconds is {slice_seconds!r}, expected a number > 0"
    clips = manifest.get("clips")
    if not isinstance(clips, list):
        return f"clips is {type(clips).__name__}, expected a list"
    for i, clip in enumerate(clips):
        if not isinstance(clip, dict):
            return f"clips[{i}] is {type(clip).__name__}, expected a record"
        for name, types in CLIP_FIELDS.items():
            value = clip.get(name)
            if isinstance(value, bool) or not isinstance(value, types):
                return f"clips[{i}].{name} is {value!r}"
        if not set(clip["splits"]) <= set(SPLITS):
            return f"clips[{i}].splits is {clip['splits']!r}, expected train and/or val"
    return None


def run_slice_seconds(slice_seconds: float | None, dataset: str | os.PathLike) -> float:
    """A run's slice length: the one it sets, else the dataset's (the length it was prepared
    with; for an experiment folder its longest clip). The one place this is resolved: the
    run spec (advisor/launch.py) writes it into config.yaml, and the loop's build uses it
    for configs made by hand."""
    return float(slice_seconds) if slice_seconds is not None else float(read_manifest(dataset)["slice_seconds"])
