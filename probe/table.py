"""VRAM-to-batch-size tables: schema, YAML read/validate/write, where tables live.

A table file (YAML) holds one device and software key and one or more
tables, each for one (workload, precision, attention, model size, trainer):

    schema: sovits-advisor/vram-table
    schema_version: 1
    source: estimated            # measured | estimated | community
    created: '2026-11-21T12:00:00Z'
    device: {name: NVIDIA GeForce RTX 4090, total_bytes: 25757220864, compute_capability: '8.9'}
    software: {torch: 2.11.0+cu130, cuda: '13.0', sovits_advisor: 0.1.0}
    provenance: free text (where the numbers come from)
    tables:
    - workload: s1
      precision: bf16
      attention: sdpa            # s1 only (null for s2)
      model_size: full
      margin: 0.1                # safety margin the max batch leaves free (null: unknown)
      trainer: advisor           # whose training loop: advisor (ours) | gpt-sovits (its own s1/s2_train.py); absent = advisor
      grad_ckpt: true            # s2-v3 / s2-v4 only: rows with gradient checkpointing of the DiT's blocks; absent = false
      rows:
      - {vram_bytes: 8589934592, slice_seconds: 10.0, dpo: false, max_batch_size: 9,
         recommended_batch_size: 9, peak_bytes: 7301234688, samples_per_second: null,
         audio_seconds_per_second: null, source: estimated, note: null}

A row with max_batch_size 0 means batch 1 does not fit that card. Readers
reject a malformed or foreign-schema file with one line naming the file, the
line and the field. Writers replace the file atomically (temp file in the same
folder, fsync, os.replace, fsync the folder), so a file is always whole.

Where tables live, searched in this order:
  1. each folder in $SOVITS_ADVISOR_TABLES (os.pathsep-separated)
  2. the per-user data folder, where `advisor probe` writes:
     $XDG_DATA_HOME/sovits-advisor/tables (default ~/.local/share/sovits-advisor/tables)
  3. the tables shipped with sovits-advisor (community and estimated)

Why one file over 400 lines: the schema, its validator (every field checked with
file:line: field errors, damaged bytes named) and the writer describe one format;
kept together so a change to a field is made in one place.
"""

from __future__ import annotations

import datetime
import importlib.util
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from probe.trainers import TRAINERS
from trainer.atomic import atomic_write_bytes
from trainer.audio_constants import MAX_SLICE_SECONDS
from trainer.checks import GRAD_CKPT_WORKLOADS, PRECISIONS, TABLE_NAMES, check_slice_seconds

SCHEMA = "sovits-advisor/vram-table"
SCHEMA_VERSION = 1
SOURCES = ("measured", "estimated", "community")  # best first
SOURCE_RANK = {s: i for i, s in enumerate(SOURCES)}
WORKLOADS = TABLE_NAMES  # "s1", "s2" (v2Pro, the default), "s2-<version>" for the others (trainer.checks.VERSIONS)
ATTENTIONS = ("sdpa", "gpt_sovits")
ENV_DIRS = "SOVITS_ADVISOR_TABLES"


class TableError(ValueError):
    """A table file that cannot be used; the message is one line naming file, line and field."""


# --- data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    vram_bytes: int  # the card's memory this row is for
    slice_seconds: float
    dpo: bool
    max_batch_size: int  # 0: batch 1 does not fit
    recommended_batch_size: int  # fastest within the margin (estimates: = max)
    peak_bytes: int | None  # predicted/measured card peak at max_batch_size (None: unknown or max 0)
    samples_per_second: float | None  # at the recommended batch; None when not measured
    audio_seconds_per_second: float | None
    source: str  # measured | estimated | community
    note: str | None = None


@dataclass
class Table:
    workload: str
    precision: str
    attention: str | None  # s1's attention implementation; None for s2
    model_size: str = "full"
    margin: float | None = 0.1
    rows: list[Row] = field(default_factory=list)
    trainer: str = "advisor"  # advisor | gpt-sovits: whose training loop the rows are for
    grad_ckpt: bool = False  # s2-v3 / s2-v4: rows with gradient checkpointing of the DiT's blocks

    def key(self) -> tuple:
        return (self.workload, self.precision, self.attention, self.model_size, self.trainer, self.grad_ckpt)

    def row(self, vram_bytes: int, slice_seconds: float, dpo: bool) -> Row | None:
        for r in self.rows:
            if r.vram_bytes == vram_bytes and math.isclose(r.slice_seconds, slice_seconds) and r.dpo == dpo:
                return r
        return None

    def put(self, row: Row) -> None:
        """Add or replace the row for (vram, slice, dpo); rows stay sorted."""
        self.rows = [r for r in self.rows if not (r.vram_bytes == row.vram_bytes and math.isclose(r.slice_seconds, row.slice_seconds) and r.dpo == row.dpo)]
        self.rows.append(row)
        self.rows.sort(key=lambda r: (r.dpo, r.slice_seconds, r.vram_bytes))


@dataclass(frozen=True)
class Device:
    name: str
    total_bytes: int | None  # None: not one card (estimated tiers, community)
    compute_capability: str | None


@dataclass
class TableFile:
    source: str  # measured | estimated | community
    device: Device
    software: dict[str, str | None]  # torch, cuda, sovits_advisor
    tables: list[Table] = field(default_factory=list)
    provenance: str | None = None
    created: str | None = None
    path: Path | None = None

    def table(self, workload: str, precision: str, attention: str | None, model_size: str = "full", trainer: str = "advisor",
              grad_ckpt: bool = False) -> Table | None:
        for t in self.tables:
            if t.key() == (workload, precision, attention, model_size, trainer, grad_ckpt):
                return t
        return None

    def ensure_table(self, workload: str, precision: str, attention: str | None, model_size: str, margin: float | None, trainer: str = "advisor",
                     grad_ckpt: bool = False) -> Table:
        found = self.table(workload, precision, attention, model_size, trainer, grad_ckpt)
        if found is None:
            found = Table(workload, precision, attention, model_size, margin, trainer=trainer, grad_ckpt=grad_ckpt)
            self.tables.append(found)
        return found


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- reading ------------------------------------------------------------------------------


def read_table(path: str | os.PathLike) -> TableFile:
    """Parse and validate one table file. Raises TableError (one line)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TableError(f"{path}: no such table file") from None
    except OSError as exc:
        raise TableError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # a damaged file, or not a table (a binary file)
        line = data.count(b"\n", 0, exc.start) + 1
        raise TableError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): damaged, or not a VRAM table") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise TableError(f"{path}:{line}: NUL bytes: a damaged table (truncated by a crash or zero-filled)")
    try:
        data = _load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TableError(f"{path}{where}: not valid YAML: {problem}") from None
    return _parse(data, _Where(path, text))


class _Where:
    """Turns a field path into 'file:line: field' for error messages (the line map is
    built only when an error needs it: a valid table is parsed once, without it)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text

    def fail(self, keys: tuple, message: str) -> TableError:
        lines = _load_with_lines(self.text)[1]
        line = None
        for n in range(len(keys), -1, -1):
            line = lines.get(keys[:n])
            if line is not None:
                break
        name = "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else str(k)) for i, k in enumerate(keys)) or "file"
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        return TableError(f"{where}: {name}: {message}")


# libyaml's parser when PyYAML was built with it (~7x faster on the 160 KB shipped estimate:
# `advisor plan` starts in < 0.3 s); the same safe constructors and node marks either way.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(text: str) -> Any:
    """The parsed table, from a parse cache when this exact text was parsed before (`_cached`)."""
    cache = _cache_path(text)
    data = _cached(cache)
    if data is None:
        data = yaml.load(text, Loader=_LOADER)
        _store(cache, data)
    return data


# A parse cache: the 160 KB shipped estimate takes ~0.1 s to parse even with libyaml, a third of
# `advisor plan`'s start-up. Keyed by the text's sha256 and the Python version (marshal's format),
# in $XDG_CACHE_HOME/sovits-advisor/tables/; marshal holds exactly YAML's plain types (dicts with
# any keys, lists, str, int, float, bool, None) and executes nothing. Any problem: parse again.
def _cache_path(text: str) -> Path | None:
    import hashlib
    import sys

    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    return Path(root) / "sovits-advisor" / "tables" / f"{digest}-py{sys.version_info[0]}{sys.version_info[1]}.marshal"


def _cached(path: Path | None) -> Any:
    import marshal

    try:
        return marshal.loads(path.read_bytes()) if path is not None and path.is_file() else None
    except (OSError, ValueError, EOFError, TypeError):
        return None


def _store(path: Path | None, data: Any) -> None:
    import marshal

    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, marshal.dumps(data))
    except (OSError, ValueError):
        pass  # a read-only home: parse every time


def _load_with_lines(text: str) -> tuple[Any, dict[tuple, int]]:
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}

    def walk(n: yaml.Node, keys: tuple) -> None:
        lines[keys] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                walk(v, keys + (k.value,))
                lines[keys + (k.value,)] = k.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, keys + (i,))

    if node is not None:
        walk(node, ())
    return data, lines


def _parse(data: Any, where: _Where) -> TableFile:
    if not isinstance(data, dict):
        raise where.fail((), f"expected a mapping with schema: {SCHEMA}, got {type(data).__name__}")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise where.fail(("schema",), f"not a sovits-advisor VRAM table (schema {schema!r}, expected {SCHEMA!r})")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise where.fail(("schema_version",), f"expected an integer, got {version!r}")
    if version != SCHEMA_VERSION:
        newer = "a newer" if version > SCHEMA_VERSION else "an older"
        raise where.fail(("schema_version",), f"version {version} is from {newer} sovits-advisor; this one reads version {SCHEMA_VERSION}")
    source = _choice(data, ("source",), SOURCES, where)
    device_data = _mapping(data, ("device",), where)
    device = Device(
        name=_text(device_data, ("device", "name"), where),
        total_bytes=_integer(device_data, ("device", "total_bytes"), where, minimum=1, optional=True),
        compute_capability=_text(device_data, ("device", "compute_capability"), where, optional=True, number_ok=True),
    )
    software_data = _mapping(data, ("software",), where)
    software = {str(k): (None if v is None else str(v)) for k, v in software_data.items()}
    tables_data = data.get("tables")
    if not isinstance(tables_data, list):
        raise where.fail(("tables",), f"expected a list of tables, got {tables_data!r}")
    tables = [_parse_table(t, ("tables", i), where) for i, t in enumerate(tables_data)]
    seen: set[tuple] = set()
    for i, t in enumerate(tables):
        if t.key() in seen:
            raise where.fail(("tables", i), f"a second table for {t.key()}: each (workload, precision, attention, model_size, trainer, grad_ckpt) once")
        seen.add(t.key())
    provenance = data.get("provenance")
    created = data.get("created")
    return TableFile(source, device, software, tables, None if provenance is None else str(provenance), None if created is None else str(created), where.path)


def _parse_table(data: Any, keys: tuple, where: _Where) -> Table:
    if not isinstance(data, dict):
        raise where.fail(keys, f"expected a mapping, got {data!r}")
    workload = _choice(data, keys + ("workload",), WORKLOADS, where)
    precision = _choice(data, keys + ("precision",), PRECISIONS, where)
    attention = data.get("attention")
    if workload == "s1" and attention not in ATTENTIONS:
        raise where.fail(keys + ("attention",), f"expected one of {', '.join(ATTENTIONS)} for s1, got {attention!r}")
    if workload != "s1" and attention is not None:
        raise where.fail(keys + ("attention",), f"expected null for s2, got {attention!r}")
    model_size = _choice(data, keys + ("model_size",), ("full", "tiny"), where)
    margin = data.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1):
        raise where.fail(keys + ("margin",), f"expected a fraction in [0, 1) or null, got {margin!r}")
    trainer = data.get("trainer", "advisor")
    if trainer not in TRAINERS:
        raise where.fail(keys + ("trainer",), f"expected one of {', '.join(TRAINERS)}, got {trainer!r}")
    grad_ckpt = data.get("grad_ckpt", False)
    if not isinstance(grad_ckpt, bool):
        raise where.fail(keys + ("grad_ckpt",), f"expected true or false, got {grad_ckpt!r}")
    if grad_ckpt and workload not in GRAD_CKPT_WORKLOADS:
        raise where.fail(keys + ("grad_ckpt",), f"gradient checkpointing is an option of {', '.join(GRAD_CKPT_WORKLOADS)} only, not {workload}: expected false")
    rows_data = data.get("rows")
    if not isinstance(rows_data, list):
        raise where.fail(keys + ("rows",), f"expected a list of rows, got {rows_data!r}")
    table = Table(workload, precision, attention, model_size, None if margin is None else float(margin), trainer=trainer, grad_ckpt=grad_ckpt)
    for i, r in enumerate(rows_data):
        row = _parse_row(r, keys + ("rows", i), where)
        if table.row(row.vram_bytes, row.slice_seconds, row.dpo) is not None:
            raise where.fail(keys + ("rows", i), f"a second row for vram {row.vram_bytes}, slice {row.slice_seconds:g} s, dpo {row.dpo}")
        if row.dpo and workload != "s1":
            raise where.fail(keys + ("rows", i, "dpo"), "s2 has no DPO mode: expected false")
        table.rows.append(row)
    return table


def _parse_row(data: Any, keys: tuple, where: _Where) -> Row:
    if not isinstance(data, dict):
        raise where.fail(keys, f"expected a mapping, got {data!r}")
    unknown = set(data) - {f for f in Row.__dataclass_fields__}
    if unknown:
        raise where.fail(keys + (sorted(unknown)[0],), f"unknown field (expected {', '.join(Row.__dataclass_fields__)})")
    slice_seconds = data.get("slice_seconds")
    try:
        if isinstance(slice_seconds, bool) or not isinstance(slice_seconds, (int, float)):
            raise ValueError(f"slice seconds {slice_seconds!r} is not a number")
        check_slice_seconds(slice_seconds)  # the one slice-length rule (trainer/checks.py)
    except ValueError:
        raise where.fail(keys + ("slice_seconds",), f"expected seconds in (0, {MAX_SLICE_SECONDS:g}], got {slice_seconds!r}") from None
    dpo = data.get("dpo")
    if not isinstance(dpo, bool):
        raise where.fail(keys + ("dpo",), f"expected true or false, got {dpo!r}")
    max_batch = _integer(data, keys + ("max_batch_size",), where, minimum=0)
    recommended = _integer(data, keys + ("recommended_batch_size",), where, minimum=0)
    if recommended > max_batch or (max_batch > 0 and recommended < 1):
        raise where.fail(keys + ("recommended_batch_size",), f"expected 1..max_batch_size ({max_batch}), got {recommended}")
    return Row(
        vram_bytes=_integer(data, keys + ("vram_bytes",), where, minimum=1),
        slice_seconds=float(slice_seconds),
        dpo=dpo,
        max_batch_size=max_batch,
        recommended_batch_size=recommended,
        peak_bytes=_integer(data, keys + ("peak_bytes",), where, minimum=1, optional=True),
        samples_per_second=_number(data, keys + ("samples_per_second",), where),
        audio_seconds_per_second=_number(data, keys + ("audio_seconds_per_second",), where),
        source=_choice(data, keys + ("source",), SOURCES, where),
        note=_text(data, keys + ("note",), where, optional=True),
    )


def _mapping(data: dict, keys: tuple, where: _Where) -> dict:
    value = data.get(keys[-1])
    if not isinstance(value, dict):
        raise where.fail(keys, f"expected a mapping, got {value!r}")
    return value


def _choice(data: dict, keys: tuple, allowed: tuple, where: _Where) -> str:
    value = data.get(keys[-1])
    if value not in allowed:
        raise where.fail(keys, f"expected one of {', '.join(allowed)}, got {value!r}")
    return value


def _integer(data: dict, keys: tuple, where: _Where, minimum: int, optional: bool = False) -> int | None:
    value = data.get(keys[-1])
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise where.fail(keys, f"expected an integer >= {minimum}{' or null' if optional else ''}, got {value!r}")
    return value


def _number(data: dict, keys: tuple, where: _Where) -> float | None:
    value = data.get(keys[-1])
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
        raise where.fail(keys, f"expected a number >= 0 or null, got {value!r}")
    return float(value)


def _text(data: dict, keys: tuple, where: _Where, optional: bool = False, number_ok: bool = False) -> str | None:
    value = data.get(keys[-1])
    if value is None and optional:
        return None
    if number_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise where.fail(keys, f"expected text{' or null' if optional else ''}, got {value!r}")
    return value


# --- writing ------------------------------------------------------------------------------


class _FlowRow(dict):
    """A row, dumped on one line."""


class _Dumper(yaml.SafeDumper):
    """A SafeDumper of our own, so registering representers leaves yaml's global one alone."""


_Dumper.add_representer(_FlowRow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True))


def to_data(tf: TableFile) -> dict:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "source": tf.source,
        "created": tf.created or now_utc(),
        "device": asdict(tf.device),
        "software": {str(k): (None if v is None else str(v)) for k, v in tf.software.items()},
        "provenance": tf.provenance,
        "tables": [
            {
                "workload": t.workload,
                "precision": t.precision,
                "attention": t.attention,
                "model_size": t.model_size,
                "margin": t.margin,
                "trainer": t.trainer,
                **({"grad_ckpt": True} if t.grad_ckpt else {}),  # absent = false: files without the option read the same
                "rows": [_FlowRow(asdict(r)) for r in t.rows],
            }
            for t in tf.tables
        ],
    }


def dump_table(tf: TableFile) -> str:
    return yaml.dump(to_data(tf), Dumper=_Dumper, sort_keys=False, width=10_000, allow_unicode=True)


def write_table(tf: TableFile, path: str | os.PathLike) -> Path:
    """Write atomically: a temp file in the same folder, fsync, os.replace, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, dump_table(tf).encode("utf-8"))
    tf.path = path
    return path


# --- locating -----------------------------------------------------------------------------


def user_tables_dir() -> Path:
    """Where `advisor probe` writes: $XDG_DATA_HOME/sovits-advisor/tables
    (default ~/.local/share/sovits-advisor/tables)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "sovits-advisor" / "tables"


def shipped_tables_dir() -> Path | None:
    """The tables shipped with sovits-advisor: the installed `sovits_advisor_tables`
    data folder, or `tables/` beside the source tree."""
    try:
        spec = importlib.util.find_spec("sovits_advisor_tables")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if Path(location).is_dir():
                return Path(location)
    source_tree = Path(__file__).resolve().parent.parent / "tables"
    return source_tree if source_tree.is_dir() else None


def table_dirs() -> list[Path]:
    """Folders searched for tables, in order (see the module docstring)."""
    dirs = [Path(p) for p in os.environ.get(ENV_DIRS, "").split(os.pathsep) if p]
    dirs.append(user_tables_dir())
    shipped = shipped_tables_dir()
    if shipped is not None:
        dirs.append(shipped)
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def table_files() -> list[Path]:
    """Every *.yaml / *.yml in the table folders."""
    files = []
    for folder in table_dirs():
        if folder.is_dir():
            files.extend(sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
    return files


def load_tables(paths: list[Path] | None = None) -> tuple[list[TableFile], list[str]]:
    """All readable tables, and one line for each file that could not be used."""
    loaded, problems = [], []
    for path in table_files() if paths is None else paths:
        try:
            loaded.append(read_table(path))
        except TableError as exc:
            problems.append(str(exc))
    return loaded, problems


def slug(text: str) -> str:
    """File-name-safe lowercase: 'NVIDIA GeForce RTX 4090' -> 'nvidia-geforce-rtx-4090'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "table"
