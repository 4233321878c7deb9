"""The prepared dataset's `manifest.json`: its schema, atomic writes, and the reader's checks.

A dataset folder holds
  manifest.json   written by `advisor prepare`; "complete": true only once every
                  clip file it names is on disk (it is written last, atomically)
  report.json     every input line not used, with line number and reason
  clips/<id>.pt   one torch-saved dict of tensors per clip (see `dataset.py`)

Manifest fields: format, version, complete, list {path, sha256}, slice_seconds,
sample_rate, seed, val_fraction, features {...}, counts {lines, used, skipped,
train, val}, seconds {total, train, val}, clips [{id, file, line, audio, speaker,
language, text, seconds, frames, tokens, phonemes, splits}]; splits is
["train"], ["val"], or both for a one-clip dataset.
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
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sovits-advisor dataset manifest (format {FORMAT!r} expected)")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path}: manifest version {manifest.get('version')!r} is not supported (expected {VERSION})")
    if manifest.get("complete") is not True:
        raise ValueError(f"{root}: dataset is incomplete (prepare was interrupted; run `advisor prepare` again)")
    return manifest
