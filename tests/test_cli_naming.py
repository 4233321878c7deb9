"""What users type: one workload naming across commands, sizes, keys (cheap: no torch, no training)."""

from __future__ import annotations

import json

import pytest

from advisor.cli import main
from trainer import checks


def plan_json(capsys, *argv: str) -> tuple[dict, str]:
    assert main(["plan", "--vram", "8GiB", "--slice-seconds", "10", "--precision", "fp16", "--no-estimate", "--json", *argv]) == 0
    out = capsys.readouterr()
    return json.loads(out.out), out.err


def test_plan_takes_the_same_workload_and_version_flags_as_train(capsys):
    flags, err = plan_json(capsys, "--workload", "s2", "--version", "v2")
    assert flags["workload"] == "s2-v2" and err == ""
    table_form, err = plan_json(capsys, "--workload", "s2-v2")
    assert table_form == flags  # the older form: the same answer ...
    assert "note: --workload s2-v2 is --workload s2 --version v2" in err  # ... and a note naming the flags
    default, _ = plan_json(capsys, "--workload", "s2")
    assert default["workload"] == "s2" and default["max_batch_size"] != flags["max_batch_size"]  # v2Pro is bigger than v2
    s1, _ = plan_json(capsys, "--workload", "s1", "--version", "v2")  # s1 is one GPT for every version
    assert s1["workload"] == "s1"


def test_contradicting_names_and_unknown_versions_are_one_line_errors(capsys):
    assert main(["plan", "--vram", "8GiB", "--slice-seconds", "10", "--workload", "s2-v2", "--version", "v2Pro"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--workload s2-v2 is version v2, but --version v2Pro" in err and "\n" not in err
    with pytest.raises(ValueError, match="unknown workload 's3'"):
        checks.resolve_workload("s3")


def test_the_version_list_is_one_list():
    import trainer.config
    import trainer.sovits.config
    import trainer.workloads

    import trainer.versions

    assert trainer.config.VERSIONS is checks.VERSIONS is trainer.versions.ALL
    # the model configs cover every version: the VITS family and v3/v4 (the CFM/DiT s2)
    assert trainer.sovits.config.VERSIONS + trainer.sovits.config.V3_VERSIONS == checks.VERSIONS
    assert checks.TABLE_NAMES == ("s1", "s2", *(f"s2-{v}" for v in checks.VERSIONS if v != checks.DEFAULT_VERSION))
    assert trainer.workloads.TABLE_NAMES is checks.TABLE_NAMES
    assert [checks.split_table_name(checks.table_name("s2", v)) for v in checks.VERSIONS] == [
        ("s2", None if v == checks.DEFAULT_VERSION else v) for v in checks.VERSIONS]


def test_a_bare_number_past_1024_is_asked_about(capsys):
    assert main(["plan", "--vram", "80000", "--workload", "s1", "--slice-seconds", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "80000MiB" in err and "78.1GiB" in err
    from probe.sizes import GIB, parse_size

    assert parse_size("80000MiB") == 80000 * 2**20 and parse_size("1024") == 1024 * GIB


def test_plain_table_lists_the_tables(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["table"]) == 0
    out = capsys.readouterr().out
    assert "VRAM tables" in out and "estimated.yaml" in out and "s2 v2ProPlus" in out


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("epoch", "'epochs'"), ("schedule.warmup", "'schedule.warmup_steps'"), ("warmup_step", "'schedule.warmup_steps'")],
)
def test_set_suggests_the_key_meant(key, suggestion):
    from trainer.config import TrainConfig, apply_overrides

    with pytest.raises(ValueError, match=f"unknown key '{key}' \\(did you mean {suggestion}"):
        apply_overrides(TrainConfig(), {key: 3}, "--set")
    with pytest.raises(ValueError, match=r"unknown key 'zzz'$"):
        apply_overrides(TrainConfig(), {"zzz": 3}, "--set")
