"""The run directory: where one training run keeps everything, and how files get there.

    RUN_DIR/
      config.yaml        the resolved TrainConfig (what ran; `advisor train --print-config`)
      manifest.json      checkpoints: every complete one (file, sha256, step, epoch,
                         metric), the latest, the best by the validation metric
      events.jsonl       the event log (trainer/events.py): start, step, val,
                         checkpoint, end and the watchdog's decisions
      checkpoints/       step_00001234.pt: full training state (see checkpoint.py)
      export/            the best weights as plain state dicts (<model>.pt) and info.json;
                         export/samples/: the best validation's samples (trainer/loop/samples.py)
      samples/           step_<N>/<clip>.wav and <clip>.ref.wav, per validation
      tensorboard/       TensorBoard event files, derived from events.jsonl (trainer/tensorboard.py)

Every file here except events.jsonl (append-only) is written atomically: a
temporary file in the same folder, fsync, os.replace, fsync of the folder. A
reader therefore sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from trainer.atomic import atomic_write_bytes

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
CHECKPOINTS = "checkpoints"
EXPORT = "export"
SAMPLES = "samples"
TENSORBOARD = "tensorboard"


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def events(self) -> Path:
        return self.root / EVENTS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def export(self) -> Path:
        return self.root / EXPORT

    @property
    def samples(self) -> Path:
        return self.root / SAMPLES

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    def holds_run(self) -> bool:
        """True if a run was started here (a config, manifest, event log or checkpoint exists)."""
        if any(p.exists() for p in (self.config, self.manifest, self.events)):
            return True
        return self.checkpoints.is_dir() and any(self.checkpoints.iterdir())

    def make(self) -> None:
        """Create the folders (idempotent)."""
        for folder in (self.root, self.checkpoints, self.export):
            folder.mkdir(parents=True, exist_ok=True)

    def write_config(self, text: str) -> None:
        self.make()
        atomic_write_bytes(self.config, text.encode("utf-8"))

    def last_micro_batch(self) -> int | None:
        """The micro-batch the run used at its newest checkpoint (manifest.json, read as plain
        JSON: the supervisor's side is torch-free), or None (no checkpoint, an older or
        unreadable manifest)."""
        try:
            entries = json.loads(self.manifest.read_text(encoding="utf-8"))["checkpoints"]
            micro = entries[-1].get("micro_batch") if entries else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return micro if isinstance(micro, int) and not isinstance(micro, bool) and micro >= 1 else None
