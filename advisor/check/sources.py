"""What `advisor check DATA` reads: DATA as clips (`Item`) plus what reading it found.

DATA is one of
  a GPT-SoVITS .list      path|speaker|language|text (trainer/data/listfile.py): every
                          line's audio decoded at its own rate; phonemes from
                          `advisor prepare`'s front end (trainer/data/text.py)
  an experiment folder    logs/<exp> of GPT-SoVITS (2-name2text.txt, 6-name2semantic.tsv,
                          3-bert/, 4-cnhubert/, 5-wav32k/, 7-sv_cn/): the audio of
                          5-wav32k/, GPT-SoVITS's own phonemes; folder consistency in
                          experiment.py
  a prepared dataset      OUT of `advisor prepare` (manifest.json): the clips' stored
                          32 kHz audio, i.e. after prepare's peak normalisation, and
                          the lines report.json lists as not used
Anything else, or an input that cannot be read at all, is a ValueError of one
line naming the path and what was expected (exit 2). Nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advisor.check.findings import Finding

EXPECTED = "a GPT-SoVITS experiment folder (logs/<exp>), a .list, or a dataset made by `advisor prepare`"
EXPERIMENT_MARKERS = ("2-name2text.txt", "6-name2semantic.tsv", "4-cnhubert", "5-wav32k")

Loader = Callable[[], tuple[np.ndarray, int, int]]  # -> ((N,) float32 mono, rate Hz, channels)


@dataclass
class Item:
    """One clip to measure."""

    clip: str  # its name in findings
    where: str  # file:line or file
    load: Loader  # raises ValueError (AudioError) with a one-line reason
    text: str | None = None
    language: str | None = None  # rate groups: clips are compared within their language
    phonemes: int | None = None


@dataclass
class Source:
    kind: str  # list | experiment | dataset
    path: Path
    items: list[Item]
    findings: list[Finding] = field(default_factory=list)  # found while reading
    gpt_sovits_phonemes: bool = False  # phoneme counts are GPT-SoVITS's (its 3-25 per second filter applies)
    normalised: bool = False  # audio already peak-normalised (a prepared dataset)
    experiment: object | None = None  # experiment.FolderReport for experiment folders


def open_source(path: str | Path) -> Source:
    """DATA -> Source (see the module docstring); ValueError when it is none of the three."""
    path = Path(path)
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return _dataset(path)
        if any((path / m).exists() for m in EXPERIMENT_MARKERS):
            from advisor.check.experiment import read_experiment

            return read_experiment(path)
        raise ValueError(f"{path}: a folder without manifest.json or 2-name2text.txt / 5-wav32k/ (expected {EXPECTED})")
    if path.is_file():
        return _list(path)
    raise ValueError(f"{path}: no such file or folder (expected {EXPECTED})")


def decoder(path: Path) -> Loader:
    def load() -> tuple[np.ndarray, int, int]:
        from trainer.data.audio import decode

        d = decode(path)
        return d.samples, d.sample_rate, d.channels

    return load


def _list(path: Path) -> Source:
    from trainer.data.listfile import read_list
    from trainer.data.text import phonemize

    entries, problems = read_list(path)  # ValueError if the file cannot be read
    if not entries and not any(p.path for p in problems):
        first = f"; line {problems[0].line}: {problems[0].reason}" if problems else ": it is empty"
        raise ValueError(f"{path}: no line of a .list (path|speaker|language|text){first} (expected {EXPECTED})")
    items = [Item(e.raw_path, f"{path}:{e.line}", decoder(e.audio), e.text, e.language, len(phonemize(e.text, e.language).ids)) for e in entries]
    findings = [_list_problem(path, p) for p in problems]
    return Source("list", path, items, findings)


def _list_problem(path: Path, p) -> Finding:
    """A line read_list does not use, as a finding (all of them: GPT-SoVITS/prepare drop the line)."""
    reason = p.reason
    check = "language" if reason.startswith("unsupported language") else "text-empty" if reason.startswith("empty text") else \
        "duplicate" if reason.startswith("duplicate of line") else "list-line"
    severity = "warning" if check == "duplicate" else "error"
    return Finding(p.path or f"line {p.line}", check, None, None, severity, f"{reason} (the line is not used)", f"{path}:{p.line}")


def _dataset(root: Path) -> Source:
    from trainer.data.manifest import read_manifest

    manifest = read_manifest(root)  # ValueError (one line) for a damaged or incomplete dataset

    def loader(file: str) -> Loader:
        def load() -> tuple[np.ndarray, int, int]:
            import torch

            try:
                wav = torch.load(root / file, map_location="cpu", weights_only=True, mmap=True)["wav"]
            except Exception as exc:  # damaged clip file: a finding of that clip, not the end of the check
                raise ValueError(f"unreadable clip file {file} ({' '.join(str(exc).split())[:120] or type(exc).__name__})") from None
            return wav.float().numpy(), int(manifest.get("sample_rate", 32000)), 1

        return load

    items = [Item(str(c.get("audio") or c["id"]), f"{root / c['file']}", loader(c["file"]), c.get("text"), c.get("language"),
                  c.get("phonemes") if isinstance(c.get("phonemes"), int) else None) for c in manifest["clips"]]
    findings = []
    try:
        skipped = json.loads((root / "report.json").read_text(encoding="utf-8")).get("skipped") or []
    except (OSError, ValueError, AttributeError):
        skipped = []
    for s in skipped:
        if isinstance(s, dict):
            name = s.get("path") or s.get("name") or f"line {s.get('line')}"
            findings.append(Finding(str(name), "not-prepared", None, None, "error", f"not in the dataset: {s.get('reason')}", None))
    return Source("dataset", root, items, findings, gpt_sovits_phonemes=manifest.get("phonemes") == "gpt-sovits-v2", normalised=True)
