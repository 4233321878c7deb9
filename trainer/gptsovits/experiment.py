"""`advisor prepare --from-gpt-sovits logs/<exp> OUT`: GPT-SoVITS's experiment folder as our dataset.

Reads what GPT-SoVITS's own preprocessing wrote (formats in docs/ARCHITECTURE.md,
"GPT-SoVITS interop"):
    2-name2text.txt       name, phonemes, word2ph, text (name2text.py)
    6-name2semantic.tsv   header "item_name\\tsemantic_audio", then name, tokens 0..1023 (25 Hz)
    3-bert/<name>.pt      (1024, n_phonemes), zh only; missing -> zeros (not stored)
    4-cnhubert/<name>.pt  (1, 768, F) content features at 50 Hz
    5-wav32k/<name>       int16 mono 32 kHz WAV
    7-sv_cn/<name>.pt     (1, 20480) speaker embedding (v2Pro/v2ProPlus), optional
and writes OUT/manifest.json + OUT/clips/<id>.pt exactly as `advisor prepare`
(trainer/data/manifest.py; each clip's bytes and sha256, checked on first read),
with "phonemes": "gpt-sovits-v2" and "versions": the s2 versions the folder can
train (v2Pro/v2ProPlus only when every clip has its 7-sv_cn/ embedding): clip keys wav
(F*640,) f32, ssl (768, F) f16, semantic_ids (T,) i16, phoneme_ids (P,) i16 (the v2
symbol table), [bert_features (1024, P) f16], [sv_emb (20480,) f16], meta.

With a v3/v4 version (`version`, or detected from the run folders upstream
left: experiment_v3.py) each clip also holds mel (100, Fm) f16, the v3 (24 kHz) /
v4 (32 kHz) CFM target (mel_v3.py), and upstream's v3/v4 s2 sampler limits apply
(clips over 20 s or of 0.64 s or less dropped, reported).

Upstream's s1 filters are applied and reported: more than 1350 tokens (54 s),
more than 540 phonemes, fewer than 3 or more than 25 phonemes per second.
Upstream repeats datasets under 100 items; this converter does not (an epoch
here is one pass over the real clips). A validation split is drawn
(`val_fraction`, at least one clip). A name in one file and not the other, a
damaged line or feature file: reported and skipped; a missing or undecodable
2-name2text.txt / 6-name2semantic.tsv is a one-line ValueError naming it.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.audio_constants import BERT_DIM, FRAME_RATE, HOP_LENGTH, MAX_SLICE_SECONDS, SAMPLE_RATE, SSL_DIM, TOKEN_RATE
from trainer.data import manifest as mf
from trainer.data.dataset import assign_splits, check_out_folder, save_atomic
from trainer.data.listfile import file_sha256
from trainer.gptsovits import experiment_v3 as v3
from trainer.gptsovits.mel_v3 import mel_target
from trainer.gptsovits.name2text import NAME2TEXT, read_name2text
from trainer.sovits.config import SV_DIM

NAME2SEMANTIC = "6-name2semantic.tsv"
HEADER = ("item_name", "semantic_audio")
MAX_TOKENS = int(MAX_SLICE_SECONDS) * TOKEN_RATE  # upstream's max_sec 54: 1350 tokens at 25 Hz
MAX_PHONEMES = int(MAX_TOKENS / 2.5)  # 540
PHONEMES_PER_SECOND = (3, 25)
PHONEME_TABLE = "gpt-sovits-v2"


@dataclass(frozen=True)
class Skipped:
    """One item not used: where, which name, why."""

    file: str
    line: int | None
    name: str | None
    reason: str

    def describe(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}{f' ({self.name})' if self.name else ''}: {self.reason}"

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "name": self.name, "reason": self.reason}


@dataclass
class Converted:
    manifest: dict
    skipped: list[Skipped]
    out: Path
    upstream: dict | None = None  # v3/v4: what upstream's s2 trainer would do (experiment_v3.upstream_record)

    def summary(self) -> dict:
        return {"out": str(self.out), "counts": self.manifest["counts"], "seconds": self.manifest["seconds"],
                "slice_seconds": self.manifest["slice_seconds"], "feeds": self.manifest["feeds"], "versions": self.manifest["versions"],
                "upstream": self.upstream, "skipped": [s.to_json() for s in self.skipped]}


def read_text_file(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: missing ({what} of a GPT-SoVITS experiment folder; run its preprocessing first)") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}): is this GPT-SoVITS's {path.name}?") from None


def read_name2semantic(path: Path) -> tuple[dict[str, tuple[int, list[int]]], list[Skipped]]:
    """(name -> (line, tokens), skipped lines); ValueError for a missing/undecodable file or bad header."""
    lines = read_text_file(path, "the semantic tokens").splitlines()
    if not lines or tuple(lines[0].rstrip("\r").split("\t")) != HEADER:
        found = lines[0][:60] if lines else "an empty file"
        raise ValueError(f"{path}:1: expected the header 'item_name<TAB>semantic_audio', found {found!r}")
    rows: dict[str, tuple[int, list[int]]] = {}
    skipped = []
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        try:
            name, tokens = _semantic_line(raw)
        except ValueError as exc:
            skipped.append(Skipped(path.name, number, None, str(exc)))
            continue
        if name in rows:
            skipped.append(Skipped(path.name, number, name, f"{name!r} already given on line {rows[name][0]}"))
            continue
        rows[name] = (number, tokens)
    return rows, skipped


def _semantic_line(raw: str) -> tuple[str, list[int]]:
    if "\x00" in raw:
        raise ValueError("holds NUL bytes (a damaged file?)")
    fields = raw.rstrip("\r").split("\t")
    if len(fields) != 2 or not fields[0].strip():
        raise ValueError(f"expected 2 tab-separated fields (item_name, semantic_audio), got {len(fields)}")
    try:
        tokens = [int(t) for t in fields[1].split()]
    except ValueError:
        raise ValueError(f"semantic tokens {fields[1][:40]!r}: expected space-separated integers") from None
    if not tokens:
        raise ValueError("no semantic tokens")
    bad = [t for t in tokens if not 0 <= t <= 1023]
    if bad:
        raise ValueError(f"semantic token {bad[0]} is outside 0..1023")
    return fields[0].strip(), tokens


def load_tensor(path: Path) -> torch.Tensor:
    """A tensor saved by torch.save, read with weights_only=True; ValueError (one line) otherwise."""
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError("missing") from None
    except Exception as exc:  # truncated, garbage, foreign pickles: all the same to the user
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"unreadable torch file ({first})") from None
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"holds a {type(value).__name__}, expected a tensor")
    if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
        raise ValueError("expected finite floating-point values")
    return value


def convert(exp: str | os.PathLike, out: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0, strict: bool = False,
            version: str | None = None) -> Converted:
    """Convert logs/<exp> into a prepared dataset at OUT (see the module docstring).

    `strict`: any skipped item is a ValueError naming the first, and the manifest
    stays marked incomplete (training refuses it). `version`: the GPT-SoVITS version
    (v3/v4 add the mel target; None: detected, experiment_v3.resolve_version)."""
    exp, out = Path(exp), Path(out)
    if not exp.is_dir():
        raise ValueError(f"{exp}: not a folder (expected GPT-SoVITS's logs/<experiment>)")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction {val_fraction!r}: expected a fraction in [0, 1)")
    version_of = v3.resolve_version(exp, version)
    check_out_folder(out)
    texts, text_problems = read_name2text(exp / NAME2TEXT)
    semantic, skipped = read_name2semantic(exp / NAME2SEMANTIC)
    for name, rows, problems in ((NAME2TEXT, texts, [p.describe(exp / NAME2TEXT) for p in text_problems]),
                                 (NAME2SEMANTIC, semantic, [s.describe() for s in skipped])):
        if not rows:  # nothing to convert: say which file, before anything is written
            first = f"; first: {problems[0]}" if problems else ""
            raise ValueError(f"{exp / name}: no usable lines ({len(problems)} damaged{first})")
    skipped = [Skipped(NAME2TEXT, p.line, p.path, p.reason) for p in text_problems] + skipped
    for name, row in texts.items():
        if name not in semantic:
            skipped.append(Skipped(NAME2TEXT, row.line, name, f"no semantic tokens for it in {NAME2SEMANTIC}"))
    fresh = not out.exists()  # made by this run: removed again if nothing in it is usable
    out.mkdir(parents=True, exist_ok=True)
    (out / mf.CLIPS_DIR).mkdir(exist_ok=True)
    header = _header(exp, val_fraction, seed)
    mf.write_json(out / mf.MANIFEST, {**header, "complete": False})
    clips = []
    for name, (line, tokens) in semantic.items():
        if name not in texts:
            skipped.append(Skipped(NAME2SEMANTIC, line, name, f"not in {NAME2TEXT} (no phonemes)"))
            continue
        result = _clip(exp, out, name, line, tokens, texts[name], version_of.mel)
        (skipped if isinstance(result, Skipped) else clips).append(result)
    upstream = v3.upstream_record(version_of, exp, set(texts), skipped) if version_of.mel else None
    mf.write_json(out / mf.REPORT, {"experiment": str(exp), **({"upstream": upstream} if upstream else {}), "skipped": [s.to_json() for s in skipped]})
    if strict and skipped:
        raise ValueError(f"{skipped[0].describe()} (--strict stops at a problem; {len(skipped)} listed in {out / mf.REPORT})")
    if not clips:
        first = f"; first: {skipped[0].describe()}" if skipped else ""
        if fresh:
            shutil.rmtree(out, ignore_errors=True)  # no incomplete dataset folder left behind
            raise ValueError(f"{exp}: no usable clips ({len(skipped)} skipped{first}); nothing was written")
        raise ValueError(f"{exp}: no usable clips ({len(skipped)} skipped{first}; all reasons in {out / mf.REPORT})")
    assign_splits(clips, val_fraction, seed)
    seconds = max(max(c["frames"] / FRAME_RATE, c["tokens"] / TOKEN_RATE) for c in clips)
    features = _features(out, clips)
    mel = {"mel": v3.manifest_mel(version_of, upstream["items"])} if upstream else {}
    manifest = {**header, "complete": True, "slice_seconds": math.ceil(seconds * 10) / 10, "gpt_sovits_version": version_of.name,
                "versions": trainable_versions(features, len(clips), version_of.name if upstream else None),
                "feeds": v3.feeds(features["clips_with"], len(clips), version_of.name if upstream else None), **mel,
                "features": features, **_totals(clips, len(texts) + len(text_problems), len(skipped)), "clips": clips}
    mf.write_json(out / mf.MANIFEST, manifest)
    keep = {Path(c["file"]).name for c in clips}
    for path in (out / mf.CLIPS_DIR).iterdir():
        if path.name not in keep:
            path.unlink(missing_ok=True)
    return Converted(manifest, skipped, out, upstream)


def _header(exp: Path, val_fraction: float, seed: int) -> dict:
    text = exp / NAME2TEXT
    return {"format": mf.FORMAT, "version": mf.VERSION, "list": {"path": str(text.resolve()), "sha256": file_sha256(text)},
            "source": {"gpt_sovits_experiment": str(exp.resolve())}, "phonemes": PHONEME_TABLE,
            "slice_seconds": 0.0, "sample_rate": SAMPLE_RATE, "seed": seed, "val_fraction": float(val_fraction)}


def _clip(exp: Path, out: Path, name: str, line: int, tokens: list[int], text, mel=None) -> dict | Skipped:
    """Read one item's files, apply upstream's s1 filters (and v3/v4 s2 sampler limits with `mel`), write its clip file."""
    def skip(reason: str, file: str = NAME2SEMANTIC, at: int | None = line) -> Skipped:
        return Skipped(file, at, name, reason)

    try:
        ids = text.ids("v2")
    except ValueError as exc:
        return skip(str(exc), NAME2TEXT, text.line)
    if len(tokens) > MAX_TOKENS:
        return skip(f"{len(tokens)} tokens ({len(tokens) / TOKEN_RATE:.1f} s) > {MAX_TOKENS} (upstream's 54 s limit)")
    if len(ids) > MAX_PHONEMES:
        return skip(f"{len(ids)} phonemes > {MAX_PHONEMES} (upstream's limit)", NAME2TEXT, text.line)
    rate = len(ids) / (len(tokens) / TOKEN_RATE)
    if not PHONEMES_PER_SECOND[0] <= rate <= PHONEMES_PER_SECOND[1]:
        return skip(f"{rate:.1f} phonemes per second, outside upstream's 3-25 (text and audio do not match?)")
    wav_file = exp / "5-wav32k" / name
    drop = v3.sampler_drop(wav_file) if mel is not None and wav_file.is_file() else None
    if drop:
        return skip(drop, f"5-wav32k/{name}", None)
    try:
        stored = _features_of(exp, name, len(ids), mel)
    except _FileProblem as exc:
        return skip(exc.reason, exc.file, None)
    frames = stored["ssl"].shape[1]
    stored["semantic_ids"] = torch.tensor(tokens, dtype=torch.int16)
    stored["phoneme_ids"] = torch.tensor(ids, dtype=torch.int16)
    clip_id = hashlib.sha256("\n".join([name, " ".join(map(str, tokens)), " ".join(text.phonemes)]).encode()).hexdigest()[:24]
    meta = {"id": clip_id, "seconds": round(len(stored["wav"]) / SAMPLE_RATE, 4), "frames": frames, "tokens": len(tokens), "phonemes": len(ids),
            **({"mel_frames": stored["mel"].shape[1]} if "mel" in stored else {})}
    stored["meta"] = meta
    path = out / mf.CLIPS_DIR / f"{clip_id}.pt"
    save_atomic(stored, path)
    return {"id": clip_id, "file": f"{mf.CLIPS_DIR}/{clip_id}.pt", "line": line, "audio": f"5-wav32k/{name}",
            "speaker": exp.name, "language": "zh" if "bert_features" in stored else "other", "text": text.text,
            **{k: meta[k] for k in ("seconds", "frames", "tokens", "phonemes", "mel_frames") if k in meta},
            "bytes": path.stat().st_size, "sha256": file_sha256(path)}  # the loader refuses a clip file that differs


class _FileProblem(Exception):
    def __init__(self, file: str, reason: str) -> None:
        super().__init__(reason)
        self.file, self.reason = file, reason


def _features_of(exp: Path, name: str, n_phonemes: int, mel=None) -> dict:
    """wav, ssl, [bert_features], [sv_emb], [mel (with a v3/v4 MelSpec)] of one item; _FileProblem naming the file."""
    ssl = _tensor(exp, f"4-cnhubert/{name}.pt", lambda t: t.dim() == 3 and t.shape[:2] == (1, SSL_DIM), f"(1, {SSL_DIM}, frames)")[0]
    wav = _wav(exp, f"5-wav32k/{name}")
    frames = min(ssl.shape[1], len(wav) // HOP_LENGTH)  # 50 Hz both; cut to whole frames
    if frames < 2:
        raise _FileProblem(f"5-wav32k/{name}", f"too short: {frames} frames of 20 ms")
    stored = {"wav": torch.from_numpy(wav[: frames * HOP_LENGTH].copy()), "ssl": ssl[:, :frames].to(torch.float16)}
    if mel is not None:  # of the whole file, as upstream, cut to the frames the kept content frames cover
        stored["mel"] = mel_target(wav, mel, frames).to(torch.float16)  # (100, Fm)
    bert_file = f"3-bert/{name}.pt"
    if (exp / bert_file).exists():  # missing: zeros, as upstream (not stored; the loader makes them)
        stored["bert_features"] = _tensor(exp, bert_file, lambda t: tuple(t.shape) == (BERT_DIM, n_phonemes), f"({BERT_DIM}, {n_phonemes} phonemes)").to(torch.float16)
    sv_file = f"7-sv_cn/{name}.pt"
    if (exp / sv_file).exists():
        stored["sv_emb"] = _tensor(exp, sv_file, lambda t: t.numel() == SV_DIM and t.dim() <= 2, f"(1, {SV_DIM})").reshape(SV_DIM).to(torch.float16)
    return stored


def _tensor(exp: Path, file: str, shape_ok, expected: str) -> torch.Tensor:
    try:
        t = load_tensor(exp / file)
    except ValueError as exc:
        raise _FileProblem(file, str(exc)) from None
    if not shape_ok(t):
        raise _FileProblem(file, f"shape {list(t.shape)}, expected {expected}")
    return t.float()


def _wav(exp: Path, file: str):
    from trainer.data.audio import AudioError, decode

    try:
        decoded = decode(exp / file)
    except AudioError as exc:
        raise _FileProblem(file, str(exc)) from None
    if decoded.sample_rate != SAMPLE_RATE:
        raise _FileProblem(file, f"{decoded.sample_rate} Hz, expected {SAMPLE_RATE} Hz (5-wav32k holds 32 kHz audio)")
    return decoded.samples


def _features(out: Path, clips: list[dict]) -> dict:
    """What the clips hold; sv_emb/bert counts tell s2 v2Pro+ (needs sv_emb) what it can use."""
    counts = {"sv_emb": 0, "bert_features": 0}
    for c in clips:
        stored = torch.load(out / c["file"], map_location="cpu", weights_only=True, mmap=True)
        counts = {k: v + (k in stored) for k, v in counts.items()}
    return {"source": "gpt-sovits-experiment", "phoneme_table": PHONEME_TABLE, "semantic": NAME2SEMANTIC, "content": "4-cnhubert",
            "clips_with": counts}


def trainable_versions(features: dict, clips: int, mel_version: str | None = None) -> list[str]:
    """The GPT-SoVITS s2 versions this dataset can train: v2Pro/v2ProPlus need a speaker
    embedding (7-sv_cn/) for every clip; v2 (and s1, any version) needs none; v3 or v4 needs
    its own mel target (prepare --from-gpt-sovits --version v3|v4)."""
    family = ["v2", "v2Pro", "v2ProPlus"] if features["clips_with"]["sv_emb"] >= clips else ["v2"]
    return family + ([mel_version] if mel_version else [])


def _totals(clips: list[dict], lines: int, skipped: int) -> dict:
    train = [c for c in clips if "train" in c["splits"]]
    val = [c for c in clips if "val" in c["splits"]]
    return {
        "counts": {"lines": lines, "used": len(clips), "skipped": skipped, "train": len(train), "val": len(val), "speakers": 1},
        "seconds": {"total": round(sum(c["seconds"] for c in clips), 3), "train": round(sum(c["seconds"] for c in train), 3), "val": round(sum(c["seconds"] for c in val), 3)},
    }
