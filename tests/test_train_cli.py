"""`advisor train`: config resolution, the batch from the tables, refusing to overwrite, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_here import advisor_here
from train_data import demo_dataset, kinds, read_events

from trainer.config import parse_config as parse_trainer_config


def parse_config(text: str):
    """The trainer's part of `--print-config` (the advisor appends its `watchdog:` section)."""
    trainer_part, sep, watchdog = text.partition("# watchdog policies")
    assert not sep or "watchdog:" in watchdog
    return parse_trainer_config(trainer_part)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


def train_here(*args: str) -> subprocess.CompletedProcess:
    """`advisor train ARGS` in this process: for --print-config and refusals (no trainer starts)."""
    return advisor_here("train", *args, cwd=ROOT)


def advisor(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "advisor", "train", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_print_config_resolves_everything_and_writes_nothing(dataset, tmp_path):
    out = tmp_path / "run"
    done = train_here("--workload", "s1", "--data", str(dataset), "--out", str(out), "--size", "tiny",
                   "--epochs", "3", "--effective-batch", "8", "--set", "schedule.warmup_steps=5", "--print-config")
    assert done.returncode == 0, done.stderr
    cfg = parse_config(done.stdout)
    assert (cfg.workload, cfg.size, cfg.epochs, cfg.dataset) == ("s1", "tiny", 3, str(dataset))
    assert (cfg.batch.micro, cfg.batch.effective, cfg.batch.source) == (4, 8, "fallback")
    assert cfg.schedule.warmup_steps == 5 and cfg.precision == "fp32"  # no GPU here
    assert "micro-batch 4 x 2 accumulation = effective 8" in done.stderr
    assert "watchdog:\n  oom:" in done.stdout and "early_stop:" in done.stdout
    assert not out.exists()


def test_full_size_takes_the_micro_batch_from_the_tables_with_ram_as_the_budget(dataset, tmp_path):
    done = train_here("--workload", "s2", "--data", str(dataset), "--out", str(tmp_path / "run"), "--print-config")
    assert done.returncode == 0, done.stderr
    cfg = parse_config(done.stdout)
    assert cfg.batch.source in ("measured", "estimated", "community") and cfg.batch.micro >= 1
    # length buckets (advisor/bucketing.py): each bucket's micro-batch from the tables, one effective batch
    assert cfg.batch.table and cfg.batch.effective is None and "length buckets" in done.stderr  # null: the plan's x processes
    assert "host's available RAM" in done.stderr and f"micro-batch {cfg.batch.micro} x " in done.stderr
    assert ("--size tiny is the CPU rehearsal size" in done.stderr) == (cfg.batch.micro > 8)  # a full model on a CPU


def test_print_config_takes_the_table_name_and_rejects_what_train_rejects(dataset, tmp_path):
    done = train_here("--workload", "s2-v2", "--data", str(dataset), "--out", str(tmp_path / "run"), "--size", "tiny",
                   "--emulate-vram", "6GiB", "--print-config")
    assert done.returncode == 0, done.stderr
    assert parse_config(done.stdout).version == "v2" and "note: --workload s2-v2 is --workload s2 --version v2" in done.stderr
    assert "with --size tiny: the tiny model's tensors stay far below a budget this size" in done.stderr
    done = train_here("--workload", "s2", "--data", str(dataset), "--out", str(tmp_path / "run"), "--set", "optim.lr.gen=1", "--print-config")
    assert done.returncode == 2 and done.stderr.strip().endswith("optim.lr.gen: workload s2 has optimisers generator, discriminator")
    assert not (tmp_path / "run").exists()


def test_micro_batch_flag_overrides_the_table(dataset, tmp_path):
    done = train_here("--workload", "s2", "--data", str(dataset), "--out", str(tmp_path / "run"), "--micro-batch", "3", "--print-config")
    assert done.returncode == 0, done.stderr
    cfg = parse_config(done.stdout)
    assert (cfg.batch.micro, cfg.batch.source, cfg.batch.table) == (3, "flag", None)
    assert "micro-batch from --micro-batch" in done.stderr


def test_train_refuse_an_existing_run_then_resume_it(dataset, tmp_path):
    out = tmp_path / "run"
    common = ("--out", str(out), "--json")
    first = advisor("--workload", "s1", "--data", str(dataset), "--size", "tiny", "--epochs", "1", "--max-buckets", "0", *common)  # 4 steps an epoch
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["reason"] == "epochs" and summary["steps"] == 4 and summary["best"]["step"] == 4
    assert summary["start"]["batch_source"] == "fallback"
    assert (out / "export" / "gpt.pt").is_file() and parse_config((out / "config.yaml").read_text()).epochs == 1

    again = train_here("--workload", "s1", "--data", str(dataset), "--size", "tiny", *common)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"advisor train: error: {out} already holds a run: pass --resume to continue it, or choose another --out (nothing was overwritten)"
    )

    resumed = advisor("--resume", "--epochs", "2", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 8
    events = read_events(out)
    assert [e["from_step"] for e in kinds(events, "resume")] == [4]
    assert [e["step"] for e in kinds(events, "step")] == list(range(1, 9))
    assert parse_config((out / "config.yaml").read_text()).epochs == 2


def test_bad_config_and_impossible_requests_are_one_line_errors(dataset, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workload: s1\nschedule:\n  warmup: 100\n")
    done = train_here("--config", str(bad), "--data", str(dataset), "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"advisor train: error: {bad}:3: unknown key 'schedule.warmup' (expected one of: kind, warmup_steps, t_0, t_mult, eta_min)"

    done = train_here("--resume", "--out", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "holds no run" in done.stderr

    done = train_here("--workload", "s1", "--out", str(tmp_path / "run"), "--size", "tiny")
    assert done.returncode == 2 and "no dataset" in done.stderr
    assert not (tmp_path / "run").exists()

    # found only when the trainer builds the optimisers: the run directory is removed again
    done = train_here("--workload", "s2", "--data", str(dataset), "--out", str(tmp_path / "run"), "--size", "tiny",
                   "--set", "optim.lr_scale.generator/text=0.5")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "advisor train: error: optim.lr_scale.generator/text: no such group in workload s2 "
        "(groups: generator/text_encoder, generator/rest, discriminator/discriminator)"
    )
    assert not (tmp_path / "run").exists()
