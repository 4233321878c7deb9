"""Checkpoints: atomic writes, a manifest of complete ones, verified loads, rotation, export.

A checkpoint is one `torch.save`d dict (plain containers and tensors; loaded
with `weights_only=True`):

    format, version      "sovits-advisor-checkpoint", 2 (2: s1 and s2 models carry GPT-SoVITS's parameter
                         names; files of version 1 are refused with a one-line error)
    models               name -> state_dict (s1: gpt; s2: generator, discriminator)
    optimizers           OptimizerSet.state_dict()
    schedule             Schedule.state_dict() (the watchdog's LR scale)
    scaler               GradScaler.state_dict() or None
    rng                  one dict per rank: python, torch, cuda (list) states
    position             step, epoch, batch (effective batches of the epoch done), samples
    micro_batch          the current micro-batch (the watchdog may have halved it)
    batches              the batch plan's changes of effective batch ([epoch, batch, n], batches.py)
                         and the config's batch.effective they started from ("configured")
    policies             policy name -> state_dict
    workload, size       what the models are
    listing              step, epoch, metric, finite, time, micro_batch: the manifest entry minus
                         its hash, so a lost manifest can be rebuilt from the files

Writing: the file goes to a temporary name in checkpoints/, hashed (sha256)
while it streams, fsynced, renamed, the folder fsynced; only then does the
manifest (itself written the same way) list it with its size and hash. A
checkpoint is loaded only if its size and sha256 match the manifest, so a
truncated or half-written file is skipped for the next older one. Rotation
keeps the newest `keep_last`, the best by the validation metric (lower is
better: val_ce, val_mel_l1) and the newest finite one, and deletes files only
after the manifest stops naming them.

Recovery: a manifest.json that cannot be read (truncated, NUL-filled, not
UTF-8, not JSON, another format) is moved aside to manifest.json.damaged and
rebuilt (so is a missing one while checkpoint files exist: each was complete
when renamed into place) from the checkpoint files that load (their `listing`, or their
position and weights for files older than it); files that do not load are
renamed *.damaged (kept, never listed). `Checkpointer.recovered` says what
was done, and the loop logs it as a `recovered` event.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.atomic import TMP_SUFFIX, atomic_writer, write_json
from trainer.rundir import RunDir

FORMAT = "sovits-advisor-checkpoint"
MANIFEST_FORMAT = "sovits-advisor-run"
VERSION = 2  # of the run manifest (2: its checkpoints hold GPT-SoVITS-named state dicts; 1 is refused)
CHECKPOINT_VERSION = 2  # 2: s1 and s2 parameters carry GPT-SoVITS's names (version 1 files cannot load into them)
NAME = re.compile(r"^step_\d{8}(\.\d+)?\.pt$")
CHUNK = 1 << 20
DAMAGED_SUFFIX = ".damaged"
OLD_VERSION_HINT = "version 1 was written before the models took GPT-SoVITS's parameter names: start a new run directory, or --init from its export"


class FormatVersionError(ValueError):
    """A file of ours from another format version: refused, never "repaired" (one line, naming the version)."""


@dataclass
class Entry:
    """One complete checkpoint as the manifest lists it."""

    file: str  # relative to the run directory: checkpoints/step_00001234.pt
    step: int
    epoch: int
    metric: float | None  # validation metric at this step, if validated here
    finite: bool  # every parameter finite when saved
    sha256: str
    bytes: int
    time: float
    micro_batch: int | None = None  # the micro-batch the run used (the OOM restart cap halves it); None: older manifests

    def summary(self) -> dict:
        return {"file": self.file, "step": self.step, "epoch": self.epoch, "metric": self.metric}


class Manifest:
    """manifest.json: the checkpoints (oldest first), the latest and the best."""

    def __init__(self, metric_name: str, entries: list[Entry] | None = None, best: str | None = None) -> None:
        self.metric_name = metric_name
        self.entries = list(entries or [])
        self.best_file = best

    @property
    def latest(self) -> Entry | None:
        return self.entries[-1] if self.entries else None

    @property
    def latest_finite(self) -> Entry | None:
        return next((e for e in reversed(self.entries) if e.finite), None)

    @property
    def best(self) -> Entry | None:
        return next((e for e in self.entries if e.file == self.best_file), None)

    def to_dict(self) -> dict:
        best, latest = self.best, self.latest
        return {
            "format": MANIFEST_FORMAT,
            "version": VERSION,
            "metric_name": self.metric_name,
            "latest": latest.summary() if latest else None,
            "best": best.summary() if best else None,
            "checkpoints": [asdict(e) for e in self.entries],
        }

    @classmethod
    def read(cls, path: Path, metric_name: str) -> "Manifest":
        """The manifest at `path` (empty if absent); ValueError naming the file if it is not ours."""
        if not path.exists():
            return cls(metric_name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") == MANIFEST_FORMAT and data.get("version") != VERSION:
                raise FormatVersionError(f"{path}: run manifest format version {data.get('version')!r} is not supported "
                                         f"(expected {VERSION}; {OLD_VERSION_HINT})")
            if data.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
            entries = [Entry(**e) for e in data["checkpoints"]]
        except FormatVersionError:
            raise
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{path}: not a readable {MANIFEST_FORMAT} v{VERSION} manifest ({exc})") from None
        best = data["best"]["file"] if data.get("best") else None
        return cls(data.get("metric_name", metric_name), entries, best)


class _HashingWriter:
    """A write-only stream that hashes and counts what passes through to `f`."""

    def __init__(self, f) -> None:
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def save_file(path: Path, state: dict) -> tuple[str, int]:
    """torch.save `state` to `path` atomically; returns (sha256 hex, size in bytes)."""
    with atomic_writer(path) as f:
        writer = _HashingWriter(f)
        torch.save(state, writer)
    return writer.sha.hexdigest(), writer.bytes


def file_problem(path: Path, sha256: str, size: int) -> str | None:
    """Why `path` is not the complete file the manifest recorded (None if it is)."""
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if actual != size:
        return f"size {actual} bytes, manifest says {size} (truncated or replaced)"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        return "sha256 does not match the manifest (damaged)"
    return None


def load_file(path: Path, map_location: Any = "cpu") -> dict:
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    if state.get("version") != CHECKPOINT_VERSION:
        raise FormatVersionError(f"{path}: checkpoint format version {state.get('version')!r} is not supported "
                                 f"(expected {CHECKPOINT_VERSION}; {OLD_VERSION_HINT})")
    return state


class Checkpointer:
    """Saves, lists, verifies and rotates the checkpoints of one run directory.

    `enabled=False` (DDP ranks other than 0) makes every write a no-op; reads work."""

    def __init__(self, run: RunDir, keep_last: int, metric_name: str, enabled: bool = True) -> None:
        self.run = run
        self.keep_last = keep_last
        self.enabled = enabled
        self.recovered: dict | None = None  # what was done about an unreadable manifest (a `recovered` event)
        try:
            self.manifest = Manifest.read(run.manifest, metric_name)
        except FormatVersionError:
            raise  # an older run: refused by name, its files left as they are
        except ValueError as exc:
            self.manifest, self.recovered = self._rebuild(metric_name, str(exc))
        else:
            if not run.manifest.exists() and _checkpoint_files(run):  # lost: every such file was complete (renamed into place)
                self.manifest, self.recovered = self._rebuild(metric_name, f"{run.manifest}: missing")

    def _rebuild(self, metric_name: str, problem: str) -> tuple[Manifest, dict]:
        """A manifest from the checkpoint files that load; a damaged one is kept aside (rank 0)."""
        manifest, damaged = rebuild_manifest(self.run, metric_name, rename_damaged=self.enabled)
        kept_aside = self.enabled and self.run.manifest.exists()
        if self.enabled:
            if kept_aside:
                self.run.manifest.replace(self.run.manifest.with_name(self.run.manifest.name + DAMAGED_SUFFIX))
            write_json(self.run.manifest, manifest.to_dict())
        latest = manifest.latest
        action = (f"rebuilt from {len(manifest.entries)} checkpoint file(s) in {self.run.checkpoints.name}/"
                  + (f", newest step {latest.step}" if latest else ", none usable: training starts from step 0")
                  + (f"; {len(damaged)} unloadable file(s) renamed *{DAMAGED_SUFFIX}" if damaged else "")
                  + (f"; the damaged manifest is kept as {self.run.manifest.name}{DAMAGED_SUFFIX}" if kept_aside else ""))
        return manifest, {"file": self.run.manifest.name, "problem": problem.split(": ", 1)[-1], "action": action, "damaged": damaged}

    def clean(self) -> list[str]:
        """Delete temporary files and checkpoint files the manifest does not list (left by a crash)."""
        if not self.enabled:
            return []
        listed = {Path(e.file).name for e in self.manifest.entries}
        removed = []
        for folder in (self.run.checkpoints, self.run.export):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                stray = path.name.endswith(TMP_SUFFIX) or (folder == self.run.checkpoints and NAME.match(path.name) and path.name not in listed)
                if stray:
                    path.unlink(missing_ok=True)
                    removed.append(str(path.relative_to(self.run.root)))
        return removed

    def save(self, state: dict, step: int, epoch: int, metric: float | None, finite: bool) -> Entry | None:
        """Write a checkpoint, list it, update the best, rotate. Returns its entry (None if disabled)."""
        if not self.enabled:
            return None
        self.run.make()
        path = self._free_name(step)
        now = time.time()
        micro = state.get("micro_batch")
        listing = {"step": step, "epoch": epoch, "metric": metric, "finite": finite, "time": now, "micro_batch": micro}
        sha, size = save_file(path, {"format": FORMAT, "version": CHECKPOINT_VERSION, **state, "listing": listing})
        entry = Entry(str(path.relative_to(self.run.root)), step, epoch, metric, finite, sha, size, now, micro)
        self.manifest.entries.append(entry)
        if self._improves_best(entry):
            self.manifest.best_file = entry.file
        self._rotate()
        return entry

    def is_best(self, entry: Entry | None) -> bool:
        return entry is not None and entry.file == self.manifest.best_file

    def _free_name(self, step: int) -> Path:
        """step_00001234.pt, or step_00001234.N.pt when a rollback brings the run back to a saved step."""
        taken = {Path(e.file).name for e in self.manifest.entries}
        name, n = f"step_{step:08d}.pt", 1
        while name in taken:
            name, n = f"step_{step:08d}.{n}.pt", n + 1
        return self.run.checkpoints / name

    def _improves_best(self, entry: Entry) -> bool:
        if entry.metric is None or not math.isfinite(entry.metric) or not entry.finite:
            return False
        best = self.manifest.best
        return best is None or best.metric is None or entry.metric < best.metric

    def _rotate(self) -> None:
        entries = self.manifest.entries
        keep = {e.file for e in entries[-self.keep_last :]}
        keep |= {e.file for e in (self.manifest.best, self.manifest.latest_finite) if e is not None}
        dropped = [e for e in entries if e.file not in keep]
        self.manifest.entries = [e for e in entries if e.file in keep]
        write_json(self.run.manifest, self.manifest.to_dict())  # first stop naming them...
        for e in dropped:
            (self.run.root / e.file).unlink(missing_ok=True)  # ...then delete

    def newest_verified(self, finite_only: bool = False) -> tuple[Entry | None, list[dict]]:
        """The newest checkpoint whose file matches its manifest record, and the ones skipped (with why)."""
        skipped = []
        for entry in reversed(self.manifest.entries):
            if finite_only and not entry.finite:
                skipped.append({"file": entry.file, "problem": "not finite (the weights had diverged)"})
                continue
            problem = file_problem(self.run.root / entry.file, entry.sha256, entry.bytes)
            if problem is None:
                return entry, skipped
            skipped.append({"file": entry.file, "problem": problem})
        return None, skipped

    def load(self, entry: Entry, map_location: Any = "cpu") -> dict:
        return load_file(self.run.root / entry.file, map_location)


def rebuild_manifest(run: RunDir, metric_name: str, rename_damaged: bool = True) -> tuple[Manifest, list[dict]]:
    """A manifest listing every checkpoint file in run.checkpoints that loads, oldest first,
    with its size and sha256 as it is now; the best is the lowest finite metric. Returns it
    and the files that did not load ([{file, problem}]; renamed *.damaged if asked)."""
    entries, damaged = [], []
    for path in _checkpoint_files(run):
        try:
            entries.append(_entry_from_file(run, path))
        except FormatVersionError:
            raise
        except Exception as exc:  # any damage: torch's zip reader, unpickler, our format checks
            damaged.append({"file": str(path.relative_to(run.root)), "problem": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})
            if rename_damaged:
                path.replace(path.with_name(path.name + DAMAGED_SUFFIX))
    entries.sort(key=lambda e: (e.time, e.step, e.file))
    finite = [e for e in entries if e.finite and e.metric is not None and math.isfinite(e.metric)]
    best = min(finite, key=lambda e: e.metric).file if finite else None
    return Manifest(metric_name, entries, best), damaged


def _checkpoint_files(run: RunDir) -> list[Path]:
    folder = run.checkpoints
    return sorted(p for p in folder.iterdir() if NAME.match(p.name)) if folder.is_dir() else []


def _entry_from_file(run: RunDir, path: Path) -> Entry:
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(state, dict) and state.get("format") == FORMAT and state.get("version") != CHECKPOINT_VERSION:
        raise FormatVersionError(f"{path}: checkpoint format version {state.get('version')!r} is not supported "
                                 f"(expected {CHECKPOINT_VERSION}; {OLD_VERSION_HINT})")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} v{CHECKPOINT_VERSION} file")
    listing = state.get("listing")
    if not isinstance(listing, dict):  # written before checkpoints carried their listing
        position = state["position"]
        weights = [t for sd in state["models"].values() for t in sd.values() if t.is_floating_point()]
        listing = {"step": position["step"], "epoch": position["epoch"], "metric": None,
                   "finite": all(bool(torch.isfinite(t).all()) for t in weights), "time": path.stat().st_mtime}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    metric = listing["metric"]
    return Entry(str(path.relative_to(run.root)), int(listing["step"]), int(listing["epoch"]),
                 None if metric is None else float(metric), bool(listing["finite"]), digest.hexdigest(),
                 path.stat().st_size, float(listing["time"]), listing.get("micro_batch", state.get("micro_batch")))
