"""`logs/<exp>/2-name2text.txt`: what GPT-SoVITS's text preprocessing wrote, one clip a line.

Format (UTF-8, tab-separated, 4 fields):
    <wav name>\t<phonemes, space-separated symbols>\t<word2ph>\t<normalised text>
`wav name` is the basename with its extension (the key of every other file of
the folder); `word2ph` is a Python-style list of ints for zh/yue (phonemes per
character, what aligns 3-bert/ features) and the literal `None` otherwise.

`read_name2text(path)` never raises for a bad line: it returns the good rows
and one `Problem` per unusable line (blank lines are skipped silently); a
missing or undecodable file is a ValueError naming the file. A name given on
two lines keeps the first and reports the second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trainer.data.listfile import Problem
from trainer.gptsovits.symbols import phoneme_ids

NAME2TEXT = "2-name2text.txt"


@dataclass(frozen=True)
class Name2Text:
    line: int  # 1-based line in 2-name2text.txt
    name: str  # wav basename with extension
    phonemes: tuple[str, ...]
    word2ph: tuple[int, ...] | None  # zh/yue only
    text: str  # normalised text

    def ids(self, version: str = "v2") -> list[int]:
        """Phoneme ids in GPT-SoVITS's symbol table (ValueError naming an unknown symbol)."""
        return phoneme_ids(self.phonemes, version)


def read_name2text(path: str | os.PathLike) -> tuple[dict[str, Name2Text], list[Problem]]:
    """(name -> row, problems); ValueError if the file is missing or not UTF-8."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}): is this GPT-SoVITS's {NAME2TEXT}?") from None
    rows: dict[str, Name2Text] = {}
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = parse_line(raw, number)
        except ValueError as exc:
            problems.append(Problem(number, None, str(exc)))
            continue
        if row.name in rows:
            problems.append(Problem(number, row.name, f"{row.name!r} already given on line {rows[row.name].line}"))
            continue
        rows[row.name] = row
    return rows, problems


def parse_line(raw: str, number: int) -> Name2Text:
    fields = raw.rstrip("\r\n").split("\t")
    if len(fields) != 4:
        raise ValueError(f"expected 4 tab-separated fields (name, phonemes, word2ph, text), got {len(fields)}")
    name, phonemes, word2ph, text = fields
    if "\x00" in raw:
        raise ValueError("holds NUL bytes (a damaged file?)")
    if not name.strip():
        raise ValueError("empty wav name")
    symbols = tuple(phonemes.split())
    if not symbols:
        raise ValueError("no phonemes")
    return Name2Text(number, name.strip(), symbols, _word2ph(word2ph, len(symbols)), text)


def _word2ph(field: str, n_phonemes: int) -> tuple[int, ...] | None:
    field = field.strip()
    if field in ("None", ""):
        return None
    if not (field.startswith("[") and field.endswith("]")):
        raise ValueError(f"word2ph {field[:40]!r}: expected a list like [2, 2, 1] or None")
    try:
        counts = tuple(int(x) for x in field[1:-1].split(",") if x.strip())
    except ValueError:
        raise ValueError(f"word2ph {field[:40]!r}: expected integers") from None
    if sum(counts) != n_phonemes or any(c < 0 for c in counts):
        raise ValueError(f"word2ph sums to {sum(counts)}, but the line has {n_phonemes} phonemes")
    return counts
