"""GPT-SoVITS annotation lists: one clip a line, `path|speaker|language|text`.

- The file is UTF-8 (a leading BOM is accepted). A line that is not valid UTF-8 is
  a problem of that line; the other lines are still read.
- Blank lines are ignored. Every other line must have exactly 4 `|`-separated fields.
- Relative paths are resolved against the list's folder. When the path does not
  exist but a file of the same name lies beside the list, that file is used (lists
  written on another machine often carry absolute paths from there).
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


def read_list(path: str | os.PathLike) -> tuple[list[ListEntry], list[Problem]]:
    """Parse a `.list`: (usable entries, problems), both in line order.

    Raises ValueError only when the list itself cannot be read."""
    path = Path(path)
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
        result = _parse_line(number, raw, path.parent)
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


def _parse_line(number: int, raw: bytes, folder: Path) -> ListEntry | Problem | None:
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
    return ListEntry(number, resolve_audio(raw_path, folder), raw_path, speaker, lang, text)


def resolve_audio(raw_path: str, folder: Path) -> Path:
    """The list's path, relative to its folder; else a file of that name beside the list."""
    candidate = Path(raw_path).expanduser()
    if not candidate.is_absolute():
        candidate = folder / candidate
    if candidate.exists():
        return candidate
    beside = folder / raw_path.replace("\\", "/").rsplit("/", 1)[-1]
    return beside if beside.is_file() else candidate
