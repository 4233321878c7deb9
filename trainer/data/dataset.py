"""`prepare`: a GPT-SoVITS `.list` and its audio -> a training-ready dataset folder.

For each usable line: decode and check the audio (`audio.py`), skip it if longer
than the slice (text cannot be re-aligned: cut it with `advisor slice` first),
resample to 32 kHz and peak-normalise, cut to whole 640-sample frames, phonemise
the text (`text.py`), compute content features and semantic tokens
(`features.py`), and save one clip file `clips/<id>.pt`:
    wav (F*640,) f32 | ssl (768, F) f16 | semantic_ids (F//2,) i16
    phoneme_ids (P,) i16 | bert_features (1024, P) f16 (only with --bert, zh text)
    sv_emb (20480,) f16 (v2Pro+ speaker embedding: a stand-in, features.StandInSpeakerEmbedding)
    meta {id, seconds, frames, tokens, phonemes}
The clip id hashes the audio bytes, language, text and the feature settings, so a
re-run reuses every clip already done and unchanged and recomputes the rest.
Order of writes: manifest with "complete": false first, clip files (each atomic),
report.json, then the manifest with "complete": true, atomically, last; clip files
the new manifest does not name are removed after it. A crash at any point leaves a
manifest that says incomplete (the loader refuses it) and clip files a re-run reuses.

Validation split: per speaker, round(fraction * clips) clips drawn by a seeded
shuffle (random.Random("<seed>:<speaker>")), keeping at least one training clip per
speaker; at least one validation clip overall. A dataset of one clip uses it for
both splits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trainer.audio_constants import HOP_LENGTH, MIN_SLICE_SECONDS, SAMPLE_RATE
from trainer.checks import check_slice_seconds
from trainer.data import audio_backend
from trainer.data import manifest as mf
from trainer.data.audio import AudioError, decode, to_model_rate
from trainer.data.listfile import ListEntry, Problem, file_sha256, read_list
from trainer.data.text import phonemize

TEXT_FRONTEND = "rule-v1"  # bump when text.py changes its ids


@dataclass(frozen=True)
class PrepareConfig:
    list_path: Path
    out: Path
    slice_seconds: float = 10.0  # clips longer than this are reported and skipped
    val_fraction: float = 0.1
    seed: int = 0  # split shuffle and the seeded quantiser
    strict: bool = False  # first problem -> ValueError
    hubert: Path | None = None  # local chinese-hubert-base (HF format)
    bert: Path | None = None  # local BERT (HF format), 1024-wide
    s2_checkpoint: Path | None = None  # local s2 weights for ssl_proj + quantizer
    audio_root: Path | None = None  # where the list's audio lies, if not where its paths say (listfile.py)

    def __post_init__(self) -> None:
        check_slice_seconds(self.slice_seconds, "--slice-seconds", minimum=MIN_SLICE_SECONDS)
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ValueError(f"--val-fraction {self.val_fraction:g} is outside [0, 1)")


@dataclass
class PrepareResult:
    manifest: dict
    problems: list[Problem]
    computed: int  # clips processed this run
    reused: int  # clips found done and unchanged
    out: Path

    def summary(self) -> dict:
        m = self.manifest
        return {
            "out": str(self.out),
            "counts": m["counts"],
            "seconds": m["seconds"],
            "computed": self.computed,
            "reused": self.reused,
            "problems": [p.to_json() for p in self.problems],
        }


class Extractors:
    """The feature extractors of one prepare run, built once before OUT is touched."""

    def __init__(self, config: PrepareConfig) -> None:
        from trainer.data.features import BertFeatures, BuiltinContent, HubertContent, SemanticTokenizer, StandInSpeakerEmbedding

        self.content = HubertContent(config.hubert) if config.hubert else BuiltinContent()
        self.tokenizer = SemanticTokenizer(config.s2_checkpoint, seed=config.seed)
        self.bert = BertFeatures(config.bert) if config.bert else None
        self.speaker = StandInSpeakerEmbedding()

    def settings(self) -> dict:
        return {
            "text_frontend": TEXT_FRONTEND,
            "content": self.content.name,
            "semantic": self.tokenizer.name,
            "sv_emb": self.speaker.name,
            "bert": self.bert.name if self.bert else "zeros",
            "sample_rate": SAMPLE_RATE,
        }


def prepare(config: PrepareConfig, progress: Callable[[int, int, ListEntry], None] | None = None) -> PrepareResult:
    """Run the whole preparation (see the module docstring). ValueError on a fatal problem.

    `progress(done, total, entry)` is called after each list entry."""
    out = Path(config.out)
    check_out_folder(out)
    if config.audio_root is not None and not Path(config.audio_root).is_dir():
        raise ValueError(f"--audio-root {config.audio_root}: not a folder")
    entries, parse_problems = read_list(config.list_path, config.audio_root)
    if not any(not e.tried for e in entries):  # nothing to prepare: say why before OUT is made
        first = _missing(entries[0]) if entries else next(iter(parse_problems), None)
        detail = f"; first: {first.describe(config.list_path)}" if first else ""
        raise ValueError(f"{config.list_path}: no line names an audio file that exists ({len(entries) + len(parse_problems)} lines{detail})")
    extractors = Extractors(config)  # bad --hubert/--bert/--s2-checkpoint fail before OUT is touched
    audio_backend.require()  # so does a decoder or resampler that cannot load
    settings = extractors.settings()
    fresh = not out.exists()  # made by this run: removed again if nothing in it is usable
    out.mkdir(parents=True, exist_ok=True)
    (out / mf.CLIPS_DIR).mkdir(exist_ok=True)
    header = manifest_header(config)
    mf.write_json(out / mf.MANIFEST, {**header, "complete": False})
    fingerprint = json.dumps(settings, sort_keys=True)

    clips: list[dict] = []
    problems: list[Problem] = []
    computed = reused = done = 0
    for item in sorted([*entries, *parse_problems], key=lambda x: x.line):
        if isinstance(item, ListEntry):
            result = _prepare_entry(item, config, extractors, fingerprint, out)
            done += 1
            if progress:
                progress(done, len(entries), item)
            if isinstance(result, Problem):
                item = result
            else:
                clip, was_reused = result
                clips.append(clip)
                reused += was_reused
                computed += not was_reused
                continue
        if config.strict:
            raise ValueError(f"{item.describe(config.list_path)} (--strict stops at the first problem)")
        problems.append(item)

    if not clips:
        first = f"; first: {problems[0].describe(config.list_path)}" if problems else ""
        if fresh:
            shutil.rmtree(out, ignore_errors=True)  # no incomplete dataset folder left behind
            raise ValueError(f"{config.list_path}: no usable clips ({len(problems)} lines skipped{first}); nothing was written")
        write_report(out, config, problems)
        raise ValueError(f"{config.list_path}: no usable clips ({len(problems)} lines skipped{first}; all reasons in {out / mf.REPORT})")
    write_report(out, config, problems)
    assign_splits(clips, config.val_fraction, config.seed)
    manifest = {**header, "complete": True, "features": {**settings, **code_usage(out, clips)}, **totals(clips, entries, parse_problems, problems), "clips": clips}
    mf.write_json(out / mf.MANIFEST, manifest)
    remove_stale(out, clips)
    return PrepareResult(manifest, problems, computed, reused, out)


def check_out_folder(out: Path) -> None:
    """OUT must be missing, empty, or a dataset folder we wrote."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: output exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not mf.is_dataset_folder(out):
        raise ValueError(f"{out}: output folder holds something else (no {mf.MANIFEST} of a prepared dataset); choose an empty or new folder")


def manifest_header(config: PrepareConfig) -> dict:
    return {
        "format": mf.FORMAT,
        "version": mf.VERSION,
        "phonemes": "advisor-rules",  # text.py's ids, not GPT-SoVITS's table ("gpt-sovits-v2": experiment.py)
        "list": {"path": str(Path(config.list_path).resolve()), "sha256": file_sha256(config.list_path)},
        "slice_seconds": float(config.slice_seconds),
        "sample_rate": SAMPLE_RATE,
        "seed": config.seed,
        "val_fraction": float(config.val_fraction),
    }


def _prepare_entry(entry: ListEntry, config: PrepareConfig, ex: Extractors, fingerprint: str, out: Path) -> tuple[dict, bool] | Problem:
    """(manifest clip record, reused?) or the Problem that made the line unusable."""

    def problem(reason: str) -> Problem:
        return Problem(entry.line, entry.raw_path, reason)

    phonemes = phonemize(entry.text, entry.language)
    if not phonemes.ids:
        return problem("text has nothing to pronounce (no letters, characters or digits)")
    if entry.tried or not entry.audio.is_file():
        return _missing(entry)
    audio_hash = file_sha256(entry.audio)
    clip_id = hashlib.sha256("\n".join([audio_hash, entry.language, entry.text, fingerprint]).encode()).hexdigest()[:24]
    path = out / mf.CLIPS_DIR / f"{clip_id}.pt"
    meta = _existing_meta(path, clip_id)
    reused = meta is not None
    if meta is None:
        try:
            decoded = decode(entry.audio)
        except AudioError as exc:
            return problem(str(exc))
        if decoded.seconds > config.slice_seconds:
            return problem(f"longer than the slice length ({decoded.seconds:.2f} s > {config.slice_seconds:g} s): text cannot be re-aligned; cut it with `advisor slice` and transcribe the pieces")
        meta = _compute_clip(decoded, phonemes, entry.language, ex, clip_id, path)
    elif meta["seconds"] > config.slice_seconds:
        return problem(f"longer than the slice length ({meta['seconds']:.2f} s > {config.slice_seconds:g} s): text cannot be re-aligned; cut it with `advisor slice` and transcribe the pieces")
    record = {
        "id": clip_id,
        "file": f"{mf.CLIPS_DIR}/{clip_id}.pt",
        "line": entry.line,
        "audio": entry.raw_path,
        "speaker": entry.speaker,
        "language": entry.language,
        "text": entry.text,
        **{k: meta[k] for k in ("seconds", "frames", "tokens", "phonemes")},
        "bytes": path.stat().st_size,  # the loader refuses a clip file whose size or hash differ
        "sha256": file_sha256(path),
    }
    return record, reused


def _missing(entry: ListEntry) -> Problem:
    """'missing audio file' with the places looked in, and the option that adds one."""
    tried = ", ".join(entry.tried or (str(entry.audio),))
    return Problem(entry.line, entry.raw_path, f"missing audio file (tried {tried}; pass --audio-root DIR, the folder that holds the clips)")


def _existing_meta(path: Path, clip_id: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        meta = stored["meta"]
        ok = meta["id"] == clip_id and all(k in stored for k in ("wav", "ssl", "semantic_ids", "phoneme_ids", "sv_emb"))
    except Exception:  # damaged or foreign: recompute it
        return None
    return dict(meta) if ok else None


def _compute_clip(decoded, phonemes, language: str, ex: Extractors, clip_id: str, path: Path) -> dict:
    wav = to_model_rate(decoded)  # (N,) f32, 32 kHz, peak 0.95
    frames = len(wav) // HOP_LENGTH
    wav = wav[: frames * HOP_LENGTH]  # whole frames: F*640 samples -> F spec frames
    ssl = ex.content(wav)  # (768, F)
    codes = ex.tokenizer(ssl)  # (F // 2,)
    stored = {
        "wav": torch.from_numpy(np.ascontiguousarray(wav)),
        "ssl": ssl.to(torch.float16),
        "semantic_ids": codes.to(torch.int16),
        "phoneme_ids": torch.tensor(phonemes.ids, dtype=torch.int16),
        "sv_emb": ex.speaker(wav).to(torch.float16),
        "meta": {"id": clip_id, "seconds": round(len(wav) / SAMPLE_RATE, 4), "frames": frames, "tokens": len(codes), "phonemes": len(phonemes.ids)},
    }
    if ex.bert is not None and language == "zh":
        stored["bert_features"] = ex.bert(phonemes).to(torch.float16)
    save_atomic(stored, path)
    return stored["meta"]


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def assign_splits(clips: list[dict], fraction: float, seed: int) -> None:
    """Set each clip's "splits" (see the module docstring); deterministic for (clips, seed)."""
    for c in clips:
        c["splits"] = ["train"]
    if len(clips) == 1:
        clips[0]["splits"] = ["train", "val"]
        return
    speakers = sorted({c["speaker"] for c in clips})
    shuffled = {}
    for speaker in speakers:
        group = sorted((c for c in clips if c["speaker"] == speaker), key=lambda c: c["id"])
        random.Random(f"{seed}:{speaker}").shuffle(group)
        shuffled[speaker] = group
        for c in group[: min(math.floor(fraction * len(group) + 0.5), len(group) - 1)]:
            c["splits"] = ["val"]
    if not any("val" in c["splits"] for c in clips):
        largest = max(speakers, key=lambda s: (len(shuffled[s]), s))
        shuffled[largest][0]["splits"] = ["val"]


def totals(clips: list[dict], entries: list[ListEntry], parse_problems: list[Problem], problems: list[Problem]) -> dict:
    train = [c for c in clips if "train" in c["splits"]]
    val = [c for c in clips if "val" in c["splits"]]
    return {
        "counts": {"lines": len(entries) + len(parse_problems), "used": len(clips), "skipped": len(problems), "train": len(train), "val": len(val), "speakers": len({c["speaker"] for c in clips})},
        "seconds": {"total": round(sum(c["seconds"] for c in clips), 3), "train": round(sum(c["seconds"] for c in train), 3), "val": round(sum(c["seconds"] for c in val), 3)},
    }


def code_usage(out: Path, clips: list[dict]) -> dict:
    """How many of the 1024 semantic codes the dataset uses (a collapsed quantiser shows here)."""
    used = set()
    for c in clips:
        used.update(torch.load(out / c["file"], map_location="cpu", weights_only=True, mmap=True)["semantic_ids"].tolist())
    return {"distinct_semantic_codes": len(used)}


def write_report(out: Path, config: PrepareConfig, problems: list[Problem]) -> None:
    mf.write_json(out / mf.REPORT, {"list": str(config.list_path), "skipped": [p.to_json() for p in problems]})


def remove_stale(out: Path, clips: list[dict]) -> None:
    keep = {Path(c["file"]).name for c in clips}
    for path in (out / mf.CLIPS_DIR).iterdir():
        if path.name not in keep:
            path.unlink(missing_ok=True)
