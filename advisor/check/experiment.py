"""GPT-SoVITS experiment folder (logs/<exp>): do its files agree with each other?

Names (the wav basename, the key of every file) are collected from
2-name2text.txt, 6-name2semantic.tsv and the folders 3-bert/, 4-cnhubert/,
5-wav32k/, 7-sv_cn/. A name must be in 2-name2text.txt, 6-name2semantic.tsv,
4-cnhubert/ and 5-wav32k/ to be trained (error otherwise); in 7-sv_cn/ too once
that folder holds anything (v2Pro/v2ProPlus need it; warning). 3-bert/ is
written for Chinese text only and a missing file means zero BERT features
(INTEROP.md): a name with word2ph (zh/yue) and no 3-bert file is info, other
languages need none.
Feature lengths (INTEROP.md rates): HuBERT frames (1, 768, F) at 50 Hz against
the wav's duration, semantic tokens at 25 Hz against F / 2 (the s2 projection
halves the frame rate); off by more than 2 frames (+2 % for HuBERT: upstream
computes it from 16 kHz audio) means the feature belongs to other audio.
Versions: every trainable name in 7-sv_cn/ -> v2, v2Pro, v2ProPlus; else v2.
The readers are trainer/gptsovits/name2text.py and experiment.py (read only);
feature files are memory-mapped for their shapes only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from advisor.check.findings import DATASET, Finding
from advisor.check.sources import Item, Source, decoder
from trainer.audio_constants import FRAME_RATE, TOKEN_RATE

TEXT, SEMANTIC = "2-name2text.txt", "6-name2semantic.tsv"
BERT, HUBERT, WAV, SV = "3-bert", "4-cnhubert", "5-wav32k", "7-sv_cn"
REQUIRED = (TEXT, SEMANTIC, HUBERT, WAV)
FRAME_SLACK, FRAME_SLACK_FRACTION, TOKEN_SLACK = 2, 0.02, 2


@dataclass
class FolderReport:
    names: dict[str, set[str]]  # file or folder -> names in it
    hubert_frames: dict[str, int] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    versions_note: str = ""

    def to_json(self) -> dict:
        return {"names": {k: len(v) for k, v in self.names.items()}, "versions": self.versions, "versions_note": self.versions_note}


def read_experiment(exp: Path) -> Source:
    from trainer.gptsovits.experiment import read_name2semantic
    from trainer.gptsovits.name2text import read_name2text

    findings: list[Finding] = []
    texts, semantic = {}, {}
    for file, read in ((TEXT, read_name2text), (SEMANTIC, read_name2semantic)):
        if not (exp / file).is_file():
            findings.append(Finding(DATASET, "missing-file", file, None, "error", f"{file} is missing: run GPT-SoVITS's preprocessing", str(exp / file)))
            continue
        rows, problems = read(exp / file)  # ValueError (one line) for an undecodable file
        (texts if file == TEXT else semantic).update(rows)
        for p in problems:
            line, name, reason = (p.line, p.path, p.reason) if hasattr(p, "path") else (p.line, p.name, p.reason)
            findings.append(Finding(name or f"{file}:{line}", "damaged-line", None, None, "error", f"{reason} (the line is not used)", f"{exp / file}:{line}"))
    names = {TEXT: set(texts), SEMANTIC: set(semantic)}
    for folder in (BERT, HUBERT, WAV, SV):
        files = sorted(p.name for p in (exp / folder).iterdir() if p.is_file()) if (exp / folder).is_dir() else []
        names[folder] = {f[:-3] if folder != WAV and f.endswith(".pt") else f for f in files if not f.startswith(".")}
    report = FolderReport(names)
    findings += _membership(exp, names, texts)
    findings += _semantic_lengths(exp, names, semantic, report)
    _versions(names, report)
    items = [Item(n, str(exp / WAV / n), decoder(exp / WAV / n), texts[n].text if n in texts else None,
                  ("zh/yue" if texts[n].word2ph is not None else "other") if n in texts else None,
                  len(texts[n].phonemes) if n in texts else None) for n in sorted(names[WAV])]
    return Source("experiment", exp, items, findings, gpt_sovits_phonemes=True, experiment=report)


def _membership(exp: Path, names: dict[str, set[str]], texts: dict) -> list[Finding]:
    required = [*REQUIRED, SV] if names[SV] else list(REQUIRED)
    everything = set().union(*names.values())
    out = []
    for name in sorted(everything):
        present = [k for k, v in names.items() if name in v]
        missing = [k for k in required if name not in names[k]]
        shown = ", ".join(_label(k) for k in present)
        if any(k != SV for k in missing):
            out.append(Finding(name, "missing-file", ", ".join(_label(k) for k in missing), None, "error",
                               f"not in {', '.join(_label(k) for k in missing)} (in {shown}): GPT-SoVITS cannot train it", str(exp)))
        elif SV in missing:
            out.append(Finding(name, "missing-file", _label(SV), None, "warning",
                               f"not in {_label(SV)} while {len(names[SV])} other names are: v2Pro/v2ProPlus cannot train it", str(exp)))
        row = texts.get(name)
        if row is not None and row.word2ph is not None and name not in names[BERT] and name in names[WAV]:
            out.append(Finding(name, "no-bert", _label(BERT), None, "info",
                               f"zh/yue text (word2ph) without {_label(BERT)}: GPT-SoVITS uses zero BERT features (normal for yue, not for zh)", str(exp)))
    return out


def _label(key: str) -> str:
    return key if "." in key else f"{key}/"


def _semantic_lengths(exp: Path, names: dict[str, set[str]], semantic: dict, report: FolderReport) -> list[Finding]:
    """HuBERT frames of every name (for the wav comparison later) and tokens against frames / 2."""
    out = []
    for name in sorted(names[HUBERT]):
        path = exp / HUBERT / f"{name}.pt"
        try:
            t = _tensor_header(path)
        except ValueError as exc:
            out.append(Finding(name, "unreadable", None, None, "error", f"{HUBERT}/{name}.pt: {exc}", str(path)))
            continue
        if t.dim() != 3 or t.shape[0] != 1:
            out.append(Finding(name, "hubert-shape", str(list(t.shape)), "(1, 768, frames)", "error", f"{HUBERT}/{name}.pt has shape {list(t.shape)}, expected (1, 768, frames)", str(path)))
            continue
        frames = int(t.shape[-1])
        report.hubert_frames[name] = frames
        if name in semantic:
            line, tokens = semantic[name]
            expected = frames / 2
            if abs(len(tokens) - expected) > TOKEN_SLACK:
                out.append(Finding(name, "semantic-length", len(tokens), round(expected, 1), "error",
                                   f"{len(tokens)} semantic tokens ({TOKEN_RATE} Hz) for {frames} HuBERT frames ({FRAME_RATE} Hz) expect ~{expected:.0f}: tokens of other audio?",
                                   f"{exp / SEMANTIC}:{line}"))
    return out


def _tensor_header(path: Path):
    """The tensor of a torch file, memory-mapped: its shape without reading its values
    (the values are `advisor prepare --from-gpt-sovits`'s to check; reading 200 files'
    values took 13 s of a 35 s check). ValueError (one line) for anything else."""
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated, garbage, foreign pickles: all the same to the user
        first = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise ValueError(f"unreadable torch file ({first})") from None
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise ValueError(f"holds a {type(value).__name__} ({getattr(value, 'dtype', '')}), expected a floating-point tensor")
    return value


def hubert_findings(source: Source, seconds: dict[str, float]) -> list[Finding]:
    """HuBERT frames against each measured wav duration (after the audio pass)."""
    report: FolderReport = source.experiment
    out = []
    for name, frames in sorted(report.hubert_frames.items()):
        if name not in seconds:
            continue
        expected = seconds[name] * FRAME_RATE
        if abs(frames - expected) > FRAME_SLACK + FRAME_SLACK_FRACTION * expected:
            out.append(Finding(name, "hubert-length", frames, round(expected, 1), "error",
                               f"{frames} HuBERT frames for {seconds[name]:.2f} s of {WAV}/ audio (~{expected:.0f} at {FRAME_RATE} Hz): features of other audio?",
                               str(source.path / HUBERT / f"{name}.pt")))
    return out


def _versions(names: dict[str, set[str]], report: FolderReport) -> None:
    trainable = set.intersection(*(names[k] for k in REQUIRED))
    with_sv = trainable & names[SV]
    if trainable and with_sv == trainable:
        report.versions, report.versions_note = ["v2", "v2Pro", "v2ProPlus"], f"{_label(SV)} holds every trainable name"
    elif with_sv:
        report.versions = ["v2"]
        report.versions_note = f"v2Pro/v2ProPlus only for {len(with_sv)} of {len(trainable)} trainable names ({_label(SV)} is incomplete)"
    else:
        report.versions, report.versions_note = ["v2"], f"no {_label(SV)}: run GPT-SoVITS's v2Pro preprocessing to train v2Pro/v2ProPlus"
