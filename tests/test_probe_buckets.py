"""The bucket plan of a prepared dataset (probe/buckets.py, `advisor plan --data` for advisor train)."""

import json
import os
import random
import subprocess
import sys

import pytest

from advisor.cli import main
from probe.buckets import plan_buckets
from probe.longest import plan_for_dataset
from probe.plan import plan
from trainer.data.buckets import BucketPlan
from trainer.data.manifest import FORMAT, VERSION, write_json

GiB = 2**30


@pytest.fixture(scope="module")
def tables():
    """The shipped tables, read once (reading the YAML is most of a lookup's time)."""
    from probe.table import load_tables

    return load_tables()[0]


def dataset(folder, seconds, slice_seconds=30.0, val=()):
    folder.mkdir(exist_ok=True)
    clips = [
        {"id": f"c{i:03d}", "file": f"clips/c{i:03d}.pt", "line": i + 1, "audio": f"wav/{i:03d}.wav", "speaker": "a", "language": "en",
         "text": "x", "seconds": s, "frames": round(50 * s), "tokens": int(25 * s), "phonemes": int(12 * s),
         "splits": ["val"] if i in val else ["train"]}
        for i, s in enumerate(seconds)
    ]
    write_json(folder / "manifest.json", {"format": FORMAT, "version": VERSION, "complete": True, "slice_seconds": slice_seconds, "clips": clips})
    return folder


def issue_folder(folder):
    """The issue's folder: 58 clips of 4-12 s plus 2 of 24-28 s."""
    rng = random.Random(0)
    return dataset(folder, [round(rng.uniform(4, 12), 2) for _ in range(58)] + [24.0, 28.0])


def test_each_bucket_gets_what_advisor_plan_answers_for_its_bound(tmp_path, tables):
    root = issue_folder(tmp_path)
    report = plan_buckets(8 * GiB, "s2", root, precision="fp16", allow_estimate=False, tables=tables)
    assert report.plan.clips == 60 and report.fits
    for i, row in enumerate(report.rows):
        same = plan(8 * GiB, "s2", row.seconds, precision="fp16", allow_estimate=False, tables=tables)
        assert row.result == same
        assert row.micro == min(same.recommended_batch_size, report.plan.effective)
        assert row.accumulation == report.plan.accumulation(i)
    micro = [r.micro for r in report.rows]
    assert micro[0] > micro[-1]  # the long clips no longer set everyone's batch
    assert report.useful_fraction >= 0.85 > report.slice_useful_fraction


def test_the_default_effective_batch_is_the_median_clips_micro_batch_and_can_be_set(tmp_path, tables):
    root = issue_folder(tmp_path)
    report = plan_buckets(8 * GiB, "s1", root, precision="fp16", allow_estimate=False, tables=tables)
    median = sorted(f for b in report.plan.buckets for f in b.frames)[29]
    home = next(r for r in report.rows if r.seconds * 50 >= median)
    assert home.accumulation == 1 and home.micro == report.plan.effective
    fixed = plan_buckets(8 * GiB, "s1", root, precision="fp16", effective=4, allow_estimate=False, tables=tables)
    assert fixed.plan.effective == 4 and all(r.micro <= 4 for r in fixed.rows)
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        plan_buckets(8 * GiB, "s1", root, precision="fp16", effective=5, world=2, allow_estimate=False, tables=tables)


def test_the_plan_indexes_the_training_split(tmp_path, tables):
    root = dataset(tmp_path, [5.0, 6.0, 7.0, 8.0, 9.0], val=(1,))
    report = plan_buckets(8 * GiB, "s2", root, precision="fp16", allow_estimate=False, tables=tables)
    assert sorted(i for b in report.plan.buckets for i in b.clips) == [0, 1, 2, 3]
    assert sorted(f for b in report.plan.buckets for f in b.frames) == [250, 350, 400, 450]


def test_the_long_clip_warning_says_what_they_cost_under_the_plan(tmp_path, tables):
    root = issue_folder(tmp_path)
    report = plan_buckets(8 * GiB, "s2", root, precision="fp16", allow_estimate=False, tables=tables)
    worst = plan_for_dataset(8 * GiB, "s2", root, precision="fp16", buckets=report, allow_estimate=False, tables=tables)
    assert worst.warning and "wav/059.wav (28.0 s)" in worst.warning
    assert "of the epoch's frames for" in worst.warning and "advisor slice" not in worst.warning
    one = plan_buckets(8 * GiB, "s2", dataset(tmp_path / "one", [6.0] * 20 + [29.0]), precision="fp16", max_buckets=1, allow_estimate=False, tables=tables)
    cost = plan_for_dataset(8 * GiB, "s2", tmp_path / "one", precision="fp16", buckets=one, allow_estimate=False, tables=tables).warning
    assert "their bucket (<= 29 s at micro-batch" in cost and "other buckets" not in cost  # one bucket: nothing else to keep
    old = plan_for_dataset(8 * GiB, "s2", root, precision="fp16", allow_estimate=False, tables=tables)
    assert "advisor slice" in old.warning  # without the plan: the old advice


def test_plan_data_prints_the_bucket_plan(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    root = issue_folder(tmp_path)
    argv = ["plan", "--vram", "8GiB", "--workload", "s2", "--data", str(root), "--precision", "fp16", "--no-estimate"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "bucket plan:" in out and "micro-batch" in out and "computed frames that are real:" in out
    assert main([*argv, "--json", "--effective", "6"]) == 0
    data = json.loads(capsys.readouterr().out)
    bp = data["bucket_plan"]
    assert bp["effective_batch"] == 6 and sum(b["clips"] for b in bp["buckets"]) == 60
    assert BucketPlan.from_json(bp["plan"]).effective == 6
    assert {"bound_seconds", "micro_batch", "accumulation", "predicted_peak_bytes", "source"} <= set(bp["buckets"][0])
    assert main([*argv[:-1], "--for", "gpt-sovits", "--no-estimate", "--json"]) == 0
    assert "bucket_plan" not in json.loads(capsys.readouterr().out)  # GPT-SoVITS's trainer has its own sampler
    assert main([*argv, "--effective", "0"]) == 2


def test_the_bucket_plan_from_the_tables_does_not_import_torch(tmp_path):
    (tmp_path / "ds").mkdir()
    root = issue_folder(tmp_path / "ds")
    env = {**os.environ, "SOVITS_ADVISOR_TABLES": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    code = (
        "import contextlib, io, sys\n"
        "from advisor import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = cli.main(['plan', '--vram', '8GiB', '--workload', 's1', '--data', {str(root)!r}, '--precision', 'fp16', '--no-estimate'])\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["0", "False"]
