"""`advisor probe`, `advisor plan`, `advisor table` end to end (tiny models, CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advisor.cli import main
from probe.device import inventory
from probe.table import read_table

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--size", "tiny", "--tiers", "600MiB,700MiB,1GiB", "--slice-seconds", "2,4"]


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "tiny.yaml"
    assert main(["probe", *TINY, "--workload", "s1", "--out", str(out)]) == 0
    return out


def test_probe_writes_a_valid_estimated_table_and_prints_where(probed, capsys):
    table = read_table(probed)
    assert table.source == "estimated"
    # the default precision is the device's best: fp32 on a CPU-only machine
    rows = table.table("s1", inventory().best_precision(), "sdpa", "tiny").rows
    assert len(rows) == 2 * 2 * 3  # slices x dpo x tiers
    assert any(r.max_batch_size > 0 for r in rows)


def test_probe_json_prints_the_table(tmp_path, capsys):
    out = tmp_path / "t.yaml"
    assert main(["probe", "--size", "tiny", "--tiers", "700MiB", "--slice-seconds", "2", "--workload", "s2", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "sovits-advisor/vram-table"
    assert data["tables"][0]["workload"] == "s2" and data["tables"][0]["attention"] is None


def test_probe_defaults_to_the_per_user_data_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert main(["probe", "--size", "tiny", "--tiers", "700MiB", "--slice-seconds", "2", "--workload", "s1", "--dpo", "off"]) == 0
    written = list((tmp_path / "sovits-advisor" / "tables").glob("estimated-torch-*.yaml"))
    assert len(written) == 1
    assert str(written[0]) in capsys.readouterr().err.replace("\n", "")


def test_table_show_renders_rows_and_list_finds_tables(probed, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["table", "show", str(probed)]) == 0
    out = capsys.readouterr().out
    assert f"s1 {inventory().best_precision()} (sdpa), margin 0.1" in out and "600.0 MiB" in out and "estimated" in out
    monkeypatch.setenv("SOVITS_ADVISOR_TABLES", str(probed.parent))
    assert main(["table", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert str(probed) in [t["path"] for t in listed["tables"]]
    assert any(t["path"].endswith("community.yaml") for t in listed["tables"])


def test_plan_keeps_the_community_table_as_the_last_resort_and_calls_it_lore(capsys):
    from probe.plan import plan
    from probe.table import read_table

    code = main(["plan", "--vram", "22GB", "--workload", "s1", "--slice-seconds", "10", "--for", "gpt-sovits", "--precision", "fp16", "--no-estimate", "--json"])
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["source"] == "estimated" and answer["row_vram_bytes"] == 16 * 2**30  # ours, from the smaller card, beats the article's exact row
    only_lore = plan(22 * 2**30, "s1", 10.0, precision="fp16", trainer="gpt-sovits", tables=[read_table(ROOT / "tables" / "community.yaml")], allow_estimate=False)
    assert (only_lore.max_batch_size, only_lore.source) == (10, "community")
    assert only_lore.table.endswith("community.yaml") and only_lore.note.startswith("community lore")


def test_plan_reads_a_probed_table(capsys, monkeypatch):
    monkeypatch.setenv("SOVITS_ADVISOR_TABLES", str(ROOT / "tables"))
    assert main(["plan", "--vram", "8GiB", "--workload", "s2", "--slice-seconds", "10", "--precision", "fp16"]) == 0
    out = capsys.readouterr().out
    assert "source: estimated" in out and "estimated.yaml" in out and "max batch" in out


def test_plan_too_small_for_batch_one_exits_1_and_says_what_would_fit(capsys):
    code = main(["plan", "--vram", "2.3GiB", "--workload", "s1", "--slice-seconds", "30", "--dpo", "--precision", "fp16", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["max_batch_size"] == 0
    error = captured.err.strip()
    assert "\n" not in error and "too small for batch 1" in error and "would fit:" in error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "--vram", "eight", "--workload", "s1", "--slice-seconds", "10"], "size 'eight' is not a size"),
        (["plan", "--vram", "8GiB", "--workload", "s1", "--slice-seconds", "99"], "slice seconds"),
        (["plan", "--vram", "8GiB", "--workload", "s2", "--slice-seconds", "10", "--dpo"], "s2 has no DPO"),
        (["probe", "--tiers", "8,lots", "--size", "tiny"], "size 'lots' is not a size"),
        (["probe", "--slice-seconds", "ten", "--size", "tiny"], "'ten' is not a number"),
        (["probe", "--margin", "1.5", "--size", "tiny"], "margin"),
        (["table", "show", "/nonexistent/t.yaml"], "no such table file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_malformed_table_is_rejected_by_show_and_skipped_by_plan(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: sovits-advisor/vram-table\nschema_version: 1\nsource: estimated\ndevice: {name: x}\nsoftware: {}\ntables: [{workload: s9}]\n")
    assert main(["table", "show", str(bad)]) == 2
    assert "bad.yaml:6: tables[0].workload: expected one of s1, s2" in capsys.readouterr().err
    monkeypatch.setenv("SOVITS_ADVISOR_TABLES", str(tmp_path))
    assert main(["plan", "--vram", "22GB", "--workload", "s1", "--slice-seconds", "10", "--attention", "gpt_sovits", "--precision", "fp16", "--no-estimate"]) == 0
    assert "warning: skipped" in capsys.readouterr().err


def test_ctrl_c_mid_probe_keeps_finished_cells_and_exits_130(tmp_path):
    out = tmp_path / "t.yaml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "advisor", "probe", "--size", "tiny", "--tiers", "700MiB", "--slice-seconds", "1,2,3,4,5,6,8,10,12,15,20,25,30", "--out", str(out)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command to resume" in err
    kept = read_table(out)  # never half-written
    assert 1 <= len(kept.tables[0].rows) < 13 * 2 + 13
    assert [p.name for p in tmp_path.iterdir()] == ["t.yaml"]


def test_a_grad_ckpt_probe_writes_a_v4_table_of_its_own_with_larger_batches(tmp_path):
    """--grad-ckpt traces the DiT with checkpointed blocks (tiny v4 here): its rows go to a table
    marked grad_ckpt beside the plain one, and fit at least the plain batch on every card."""
    out = tmp_path / "v4.yaml"
    args = ["probe", "--size", "tiny", "--tiers", "600MiB,1GiB", "--slice-seconds", "4", "--workload", "s2-v4", "--precision", "fp32", "--out", str(out)]
    assert main(args) == 0 and main([*args, "--grad-ckpt"]) == 0
    table = read_table(out)
    plain, ckpt = table.table("s2-v4", "fp32", None, "tiny"), table.table("s2-v4", "fp32", None, "tiny", grad_ckpt=True)
    assert len(plain.rows) == len(ckpt.rows) == 2
    assert all(c.max_batch_size >= p.max_batch_size for p, c in zip(plain.rows, ckpt.rows))
    assert any(c.max_batch_size > p.max_batch_size for p, c in zip(plain.rows, ckpt.rows))
    assert main(["probe", "--size", "tiny", "--workload", "s2-v2", "--grad-ckpt", "--out", str(tmp_path / "x.yaml")]) == 2
    assert not (tmp_path / "x.yaml").exists()
