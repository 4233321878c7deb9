"""Table files: round trip, atomic writes, and one-line errors for every kind of bad file."""

import os
from pathlib import Path

import pytest

from probe.table import Device, Row, Table, TableError, TableFile, dump_table, read_table, table_dirs, table_files, user_tables_dir, write_table

GIB = 1024**3
SHIPPED = Path(__file__).resolve().parent.parent / "tables"


def sample() -> TableFile:
    table = Table("s1", "fp16", "sdpa", "full", 0.1)
    table.put(Row(8 * GIB, 10.0, False, 9, 8, 7 * GIB, 12.5, 125.0, "measured"))
    table.put(Row(6 * GIB, 10.0, False, 5, 5, 5 * GIB, 11.0, 110.0, "measured"))
    table.put(Row(6 * GIB, 10.0, True, 0, 0, None, None, None, "measured", "batch 1 does not fit"))
    return TableFile("measured", Device("NVIDIA GeForce RTX 4090", 24 * GIB, "8.9"), {"torch": "2.11.0", "cuda": "13.0", "sovits_advisor": "0.1.0"}, [table], "test", "2026-11-21T00:00:00Z")


def test_write_then_read_gives_the_same_table_and_leaves_no_temp_file(tmp_path):
    path = write_table(sample(), tmp_path / "t.yaml")
    back = read_table(path)
    assert back.device == sample().device
    assert back.tables[0].rows == sample().tables[0].rows  # sorted by (dpo, slice, vram)
    assert [r.vram_bytes for r in back.tables[0].rows] == [6 * GIB, 8 * GIB, 6 * GIB]
    assert os.listdir(tmp_path) == ["t.yaml"]


def test_a_failed_write_keeps_the_old_file_whole(tmp_path, monkeypatch):
    path = write_table(sample(), tmp_path / "t.yaml")
    before = path.read_text()

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_table(sample(), path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["t.yaml"]


def broken(tmp_path, old: str, new: str) -> Path:
    path = tmp_path / "bad.yaml"
    text = dump_table(sample())
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("schema: sovits-advisor/vram-table", "schema: someone-else/table", r"bad.yaml:1: schema: not a sovits-advisor VRAM table"),
        ("schema_version: 1", "schema_version: 7", r"bad.yaml:2: schema_version: version 7 is from a newer sovits-advisor"),
        ("max_batch_size: 9", "max_batch_size: nine", r"bad.yaml:\d+: tables\[0\].rows\[1\].max_batch_size: expected an integer >= 0"),
        ("recommended_batch_size: 8", "recommended_batch_size: 10", r"rows\[1\].recommended_batch_size: expected 1..max_batch_size \(9\)"),
        ("source: measured, note", "source: guessed, note", r"rows\[0\].source: expected one of measured, estimated, community"),
        ("precision: fp16", "precision: fp8", r"tables\[0\].precision: expected one of fp32, fp16, bf16"),
        ("slice_seconds: 10.0, dpo: true", "slice_seconds: 99, dpo: true", r"rows\[2\].slice_seconds: expected seconds in \(0, 54\]"),
        ("vram_bytes: 8589934592", "vram_bytes: 6442450944", r"rows\[1\]: a second row for vram"),
        ("dpo: true", "dpo: maybe", r"rows\[2\].dpo: expected true or false"),
        ("note: null}", "note: null, colour: red}", r"rows\[0\].colour: unknown field"),
        ("rows:", "rowz:", r"tables\[0\].rows: expected a list of rows"),
    ],
)
def test_bad_tables_are_rejected_with_file_line_and_field(tmp_path, old, new, message):
    with pytest.raises(TableError, match=message) as info:
        read_table(broken(tmp_path, old, new))
    assert "\n" not in str(info.value)


def test_broken_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("schema: sovits-advisor/vram-table\nschema_version: 1\ntables: [unclosed\n")
    with pytest.raises(TableError, match=r"bad.yaml:\d+: not valid YAML"):
        read_table(path)


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "42\n"])
def test_a_foreign_file_is_not_a_table(tmp_path, text):
    path = tmp_path / "other.yaml"
    path.write_text(text)
    with pytest.raises(TableError, match="other.yaml"):
        read_table(path)


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(TableError, match="no such table file"):
        read_table(tmp_path / "nope.yaml")


def test_every_shipped_table_is_valid_and_the_community_table_keeps_its_provenance():
    files = sorted(SHIPPED.glob("*.yaml"))
    assert {p.name for p in files} >= {"community.yaml", "estimated.yaml"}
    for path in files:
        read_table(path)
    community = read_table(SHIPPED / "community.yaml")
    assert community.source == "community" and "community article" in community.provenance
    table = community.table("s1", "fp16", "gpt_sovits", trainer="gpt-sovits")
    assert table.row(8 * GIB, 10.0, False).max_batch_size == 2
    assert table.row(8 * GIB, 10.0, True).max_batch_size == 0  # "cannot train with DPO at all"
    assert table.row(80 * GIB, 10.0, True).max_batch_size == 18
    assert all(r.source == "community" for r in table.rows)


def test_shipped_estimated_tables_cover_every_workload_and_every_tier():
    estimated = read_table(SHIPPED / "estimated.yaml")
    assert estimated.source == "estimated"
    workloads = {t.workload for t in estimated.tables}
    assert workloads == {"s1", "s2", "s2-v2", "s2-v2ProPlus", "s2-v3", "s2-v4"}  # s2 = v2Pro; one workload per s2 version
    for version in ("s2", "s2-v2", "s2-v2ProPlus", "s2-v3", "s2-v4"):
        for trainer in ("advisor", "gpt-sovits"):
            assert {t.precision for t in estimated.tables if (t.workload, t.trainer, t.grad_ckpt) == (version, trainer, False)} == {"fp16", "fp32"}
    # gradient checkpointing: s2-v3 / s2-v4 only, both precisions and trainers, never a smaller batch
    ckpt = {(t.workload, t.precision, t.trainer): t for t in estimated.tables if t.grad_ckpt}
    assert set(ckpt) == {(w, p, tr) for w in ("s2-v3", "s2-v4") for p in ("fp16", "fp32") for tr in ("advisor", "gpt-sovits")}
    for (w, p, tr), t in ckpt.items():
        plain = estimated.table(w, p, None, trainer=tr)
        assert all(r.max_batch_size >= plain.row(r.vram_bytes, r.slice_seconds, r.dpo).max_batch_size for r in t.rows)
    for t in estimated.tables:
        assert {r.vram_bytes // GIB for r in t.rows} == {6, 8, 12, 16, 24, 32, 40, 80}
        assert {r.slice_seconds for r in t.rows} == {5.0, 10.0, 15.0, 30.0}


def test_table_folders_env_first_then_user_then_shipped(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    extra.mkdir()
    write_table(sample(), extra / "mine.yaml")
    monkeypatch.setenv("SOVITS_ADVISOR_TABLES", str(extra))
    dirs = table_dirs()
    assert dirs[0] == extra and dirs[1] == user_tables_dir() and dirs[-1] == SHIPPED
    assert str(user_tables_dir()).endswith(os.path.join("sovits-advisor", "tables"))
    assert extra / "mine.yaml" in table_files()


def test_the_parse_cache_holds_what_yaml_parses_and_a_damaged_cache_is_parsed_again(tmp_path, monkeypatch):
    """`advisor plan` starts from a marshal cache of each table's parse (keyed by its text): the
    same data as PyYAML's, and a cache file that does not load is ignored and rewritten."""
    import yaml

    from probe import table as tables

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    text = (Path(__file__).resolve().parents[1] / "tables" / "estimated.yaml").read_text(encoding="utf-8")
    first = tables._load(text)
    cache = tables._cache_path(text)
    assert cache.is_file() and str(cache).startswith(str(tmp_path / "cache"))
    assert tables._load(text) == first == yaml.safe_load(text)
    cache.write_bytes(b"\x00 not marshal")
    assert tables._load(text) == first and tables._cached(cache) == first  # parsed again, the cache rewritten


def test_gradient_checkpointing_is_a_table_of_its_own_for_v3_v4_only(tmp_path):
    """`grad_ckpt: true` marks s2-v3 / s2-v4 rows traced with checkpointed DiT blocks: a table
    of its own beside the plain one; absent reads as false, and s1 or the GAN cannot have it."""
    plain, ckpt = Table("s2-v4", "fp16", None, "full", 0.1), Table("s2-v4", "fp16", None, "full", 0.1, grad_ckpt=True)
    plain.put(Row(8 * GIB, 10.0, False, 2, 2, 7 * GIB, None, None, "estimated"))
    ckpt.put(Row(8 * GIB, 10.0, False, 13, 13, 7 * GIB, None, None, "estimated"))
    tf = TableFile("estimated", Device("estimated tiers (any CUDA card)", None, None), {"torch": "2.13.0"}, [plain, ckpt], "test", "2026-12-07T00:00:00Z")
    path = write_table(tf, tmp_path / "v4.yaml")
    text = path.read_text()
    assert text.count("grad_ckpt: true") == 1 and "grad_ckpt: false" not in text  # absent = false: older files read the same
    back = read_table(path)
    assert back.table("s2-v4", "fp16", None).rows[0].max_batch_size == 2
    assert back.table("s2-v4", "fp16", None, grad_ckpt=True).rows[0].max_batch_size == 13
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("workload: s2-v4", "workload: s2-v2ProPlus"))
    with pytest.raises(TableError, match=r"bad.yaml:\d+: tables\[1\].grad_ckpt: gradient checkpointing is an option of s2-v3, s2-v4 only"):
        read_table(bad)
    bad.write_text(text.replace("grad_ckpt: true", "grad_ckpt: sometimes"))
    with pytest.raises(TableError, match=r"tables\[1\].grad_ckpt: expected true or false"):
        read_table(bad)
