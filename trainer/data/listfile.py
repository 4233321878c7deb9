r"""GPT-SoVITS annotation lists: one clip a line, `path|speaker|language|text`.

- The file is UTF-8 (a leading BOM is accepted). A line that is not valid UTF-8 is
  a problem of that line; the other lines are still read.
- Blank lines are ignored. Every other line must have exactly 4 `|`-separated fields.
- Relative paths are resolved against the list's folder. Lists written on another
  machine carry its paths (GPT-SoVITS's tools on Windows write `D:\GPT-SoVITS\output\
  slicer_opt\x.wav` or `output\slicer_opt\x.wav`): when the path as written does not
  exist, it is read with `\` and `/` both as separators and without a drive letter,
  and each tail of it (`output/slicer_opt/x.wav`, `slicer_opt/x.wav`, `x.wav`) is
  looked for under the audio root (`advisor prepare --audio-root DIR`), then beside
  the list; the first file found is used. A line whose file is nowhere says every
  place tried.
- Languages as GPT-SoVITS accepts them, any case: zh, ja, en, ko, yue; JP and JA
  both mean ja.
- A path given twice is a problem of the later line ("duplicate of line N").
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = ("zh", "ja", "en", "ko", "yue")
_ALIASES = {"jp": "ja"}


@dataclass(frozen=True)
class ListEntry:
    line: int  # 1-based line number in the list
    audio: Path  # resolved path of the audio file
    raw_path: str  # the path as written in the list
    speaker: str
    language: str  # normalised: one of LANGUAGES
    text: str
    tried: tuple[str, ...] = ()  # the places looked in when none held the file (audio is the first)


@dataclass(frozen=True)
class Problem:
    """An input line not used, and why (one line of the report)."""

    line: int | None  # None: not tied to a line
    path: str | None
    reason: str

    def describe(self, list_path: str | os.PathLike | None = None) -> str:
        where = f"{list_path}:{self.line}" if list_path is not None and self.line is not None else f"line {self.line}"
        target = f" ({self.path})" if self.path else ""
        return f"{where}{target}: {self.reason}"

    def to_json(self) -> dict:
        return {"line": self.line, "path": self.path, "reason": self.reason}


def normalize_language(value: str) -> str | None:
    """'ZH' -> 'zh', 'JP' -> 'ja'; None if GPT-SoVITS would not accept it."""
    lang = value.strip().lower()
    lang = _ALIASES.get(lang, lang)
    return lang if lang in LANGUAGES else None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_list(path: str | os.PathLike, audio_root: str | os.PathLike | None = None) -> tuple[list[ListEntry], list[Problem]]:
    """Parse a `.list`: (usable entries, problems), both in line order. `audio_root`: a folder
    to look for the audio in first (see the module docstring).

    Raises ValueError only when the list itself cannot be read."""
    path = Path(path)
    bases = [Path(audio_root)] if audio_root is not None else []
    bases.append(path.parent)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the list ({exc.strerror or exc})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    entries: list[ListEntry] = []
    problems: list[Problem] = []
    seen: dict[Path, int] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        result = _parse_line(number, raw, bases)
        if isinstance(result, Problem):
            problems.append(result)
            continue
        if result is None:
            continue
        key = Path(os.path.normcase(os.path.abspath(result.audio)))
        if key in seen:
            problems.append(Problem(number, result.raw_path, f"duplicate of line {seen[key]} (same audio file)"))
            continue
        seen[key] = number
        entries.append(result)
    return entries, problems


def _parse_line(number: int, raw: bytes, bases: list[Path]) -> ListEntry | Problem | None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Problem(number, None, f"not valid UTF-8 (byte {exc.start}); save the list as UTF-8")
    if not line.strip():
        return None
    fields = line.split("|")
    if len(fields) != 4:
        return Problem(number, None, f"expected 4 '|'-separated fields (path|speaker|language|text), found {len(fields)}")
    raw_path, speaker, language, text = (f.strip() for f in fields)
    if not raw_path:
        return Problem(number, None, "empty audio path")
    lang = normalize_language(language)
    if lang is None:
        return Problem(number, raw_path, f"unsupported language {language.strip()!r}: expected one of {', '.join(LANGUAGES)} (JP/JA mean ja)")
    if not text:
        return Problem(number, raw_path, "empty text: transcribe the clip")
    audio, tried = resolve_audio(raw_path, bases)
    return ListEntry(number, audio, raw_path, speaker, lang, text, tried)


def resolve_audio(raw_path: str, bases: list[Path]) -> tuple[Path, tuple[str, ...]]:
    """(the audio file, ()) or, when no candidate exists, (the path as written, every place tried).

    `bases`: the audio root (if any), then the list's folder; the path as written is
    relative to the list's folder."""
    folder = bases[-1]
    written = Path(raw_path).expanduser()
    if not written.is_absolute():
        written = folder / written
    if written.is_file():
        return written, ()
    parts = [p for p in raw_path.replace("\\", "/").split("/") if p and p != "."]
    if parts and len(parts[0]) == 2 and parts[0][1] == ":":  # a Windows drive letter: D:
        parts = parts[1:]
    tried = [str(written)]
    for base in bases:
        for start in range(len(parts)):
            candidate = base.joinpath(*parts[start:])
            if candidate.is_file():
                return candidate, ()
            if str(candidate) not in tried:
                tried.append(str(candidate))
    return written, tuple(tried)
