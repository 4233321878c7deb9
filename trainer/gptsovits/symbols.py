"""GPT-SoVITS's phoneme symbol tables: a phoneme's id is its index in the table.

`v2` (732 symbols) is used by every GPT-SoVITS version but v1; `v1` has 322.
The tables ship as `symbols.json` beside this module (its "source" field names
the upstream files and commit they were read from).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

TABLE_VERSIONS = ("v2", "v1")


@functools.cache
def table(version: str = "v2") -> tuple[str, ...]:
    """The symbols of one table, in id order."""
    if version not in TABLE_VERSIONS:
        raise ValueError(f"symbol table {version!r}: expected one of {', '.join(TABLE_VERSIONS)}")
    data = json.loads((Path(__file__).with_name("symbols.json")).read_text(encoding="utf-8"))
    return tuple(data[version])


@functools.cache
def _ids(version: str) -> dict[str, int]:
    return {symbol: i for i, symbol in enumerate(table(version))}


def symbol_id(symbol: str, version: str = "v2") -> int:
    """Id of one symbol; KeyError if the table does not have it."""
    return _ids(version)[symbol]


def phoneme_ids(phonemes: list[str] | tuple[str, ...], version: str = "v2") -> list[int]:
    """Ids of a phoneme sequence; ValueError naming the first symbol the table lacks."""
    ids = _ids(version)
    try:
        return [ids[p] for p in phonemes]
    except KeyError as exc:
        raise ValueError(f"phoneme {exc.args[0]!r} is not in GPT-SoVITS's {version} symbol table") from None

