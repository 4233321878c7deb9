"""Plans for a prepared dataset's longest clip (probe.longest, `advisor plan --data`)."""

import json

import pytest

from advisor.cli import main
from probe.longest import plan_for_dataset, planned_length, train_clips
from trainer.data.manifest import FORMAT, VERSION, write_json


def dataset(folder, seconds, slice_seconds=10.0):
    clips = [
        {"id": f"c{i:03d}", "file": f"clips/c{i:03d}.pt", "line": i + 1, "audio": f"wav/{i:03d}.wav", "speaker": "a", "language": "en",
         "text": "x", "seconds": s, "frames": int(50 * s), "tokens": int(25 * s), "phonemes": int(12 * s), "splits": ["train"]}
        for i, s in enumerate(seconds)
    ]
    write_json(folder / "manifest.json", {"format": FORMAT, "version": VERSION, "complete": True, "slice_seconds": slice_seconds, "clips": clips})
    return folder


def test_clips_come_longest_first_and_bad_seconds_name_the_field(tmp_path):
    slice_seconds, clips = train_clips(dataset(tmp_path, [3.0, 9.5, 4.0]))
    assert slice_seconds == 10.0 and [c.seconds for c in clips] == [9.5, 4.0, 3.0]
    dataset(tmp_path, [3.0, -1.0])
    with pytest.raises(ValueError, match=r"clips\[1\]\.seconds"):
        train_clips(tmp_path)


def test_gpt_sovits_pads_to_the_longest_clip_ours_to_the_slice():
    assert planned_length("gpt-sovits", 10.0, 7.5) == 7.5
    assert planned_length("advisor", 10.0, 7.5) == 10.0


def test_a_few_long_clips_are_named_and_slicing_is_suggested(tmp_path):
    folder = dataset(tmp_path, [4.0] * 38 + [24.0, 25.0], slice_seconds=25.0)
    worst = plan_for_dataset(8 * 2**30, "s1", folder, precision="fp32", trainer="gpt-sovits")
    assert worst.longest.seconds == 25.0 and worst.planned_seconds == 25.0
    assert worst.warning and "wav/039.wav (25.0 s)" in worst.warning and "wav/038.wav" in worst.warning
    assert "advisor slice --seconds 4" in worst.warning


def test_plan_data_reports_the_longest_clip(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    folder = dataset(tmp_path, [8.0, 10.0, 9.0])
    assert main(["plan", "--vram", "8GiB", "--workload", "s1", "--data", str(folder), "--for", "gpt-sovits", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "planned for the longest clip: wav/001.wav (10.00 s of 3 clips" in out and "GPT-SoVITS webui: batch_size" in out
    assert main(["plan", "--vram", "8GiB", "--workload", "s1", "--data", str(folder), "--precision", "fp32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["longest_clip"]["seconds"] == 10.0 and data["planned_seconds"] == 10.0 and data["trainer"] == "advisor"


def test_plan_wants_slice_seconds_or_data(capsys):
    assert main(["plan", "--vram", "8GiB", "--workload", "s1", "--precision", "fp32"]) == 2
    assert "exactly one of --slice-seconds" in capsys.readouterr().err
