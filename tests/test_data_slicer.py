"""The silence slicer: exact cut positions on constructed audio, and `advisor slice` on real files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from advisor.cli import main
from trainer.data.slicer import SlicerConfig, slice_points

RATE = 32_000


def sound(seconds: float, freq: float = 200.0, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * freq * t) * (0.7 + 0.3 * np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def seconds(pieces):
    return [round((b - a) / RATE, 2) for a, b in pieces]


def test_cuts_at_the_first_silence_after_the_minimum():
    x = np.concatenate([sound(2), silence(0.4), sound(3), silence(0.4), sound(2), silence(0.4), sound(5)])
    pieces = slice_points(x, RATE, SlicerConfig(max_seconds=10))
    # the 2 s and 3 s runs join (first silence after 4 s is at 5.4 s), then 2 s + 5 s would pass 4 s at the next silence
    starts_in_silence = [a / RATE for a, _ in pieces[1:]]
    assert len(pieces) == 2
    assert 5.0 <= starts_in_silence[0] <= 5.8  # inside the second silence (5.4-5.8 s)
    assert all(s <= 10 for s in seconds(pieces))


def test_long_silence_keeps_250_ms_each_side():
    x = np.concatenate([sound(5), silence(2.0), sound(5)])
    pieces = slice_points(x, RATE, SlicerConfig(max_seconds=10))
    assert len(pieces) == 2
    (a0, a1), (b0, b1) = pieces
    assert abs(a1 / RATE - 5.25) < 0.02 and abs(b0 / RATE - 6.75) < 0.02
    assert b1 == len(x)


def test_no_silence_is_cut_at_the_quietest_point_within_the_maximum():
    t = np.arange(25 * RATE) / RATE
    envelope = 1.0 - 0.9 * np.exp(-(((t % 7.0) - 6.0) ** 2) / 0.01)  # quiet dips (-20 dB, above the threshold) at 6, 13, 20 s
    x = (0.5 * envelope * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    pieces = slice_points(x, RATE, SlicerConfig(max_seconds=8))
    cuts = [b / RATE for _, b in pieces[:-1]]
    assert len(cuts) == 3 and all(abs(c - d) < 0.05 for c, d in zip(cuts, (6, 13, 20)))
    assert max(seconds(pieces)) <= 8


@pytest.mark.parametrize("limit", [2.0, 5.0, 10.0, 54.0])
def test_pieces_respect_maximum_and_minimum(limit):
    rng = np.random.default_rng(int(limit))
    parts = []
    for _ in range(40):
        parts += [sound(rng.uniform(0.3, 6), freq=rng.uniform(100, 300)), silence(rng.choice([0.05, 0.35, 0.8]))]
    x = np.concatenate(parts)
    pieces = slice_points(x, RATE, SlicerConfig(max_seconds=limit))
    lengths = seconds(pieces)
    assert max(lengths) <= limit
    assert min(lengths[:-1]) >= min(4.0, limit) - 0.01  # only the tail may be shorter
    assert all(b0 >= a1 for (_, a1), (b0, _) in zip(pieces, pieces[1:]))


def test_silent_recording_gives_no_pieces_and_leading_silence_is_trimmed():
    assert slice_points(silence(5), RATE, SlicerConfig()) == []
    x = np.concatenate([silence(3), sound(3)])
    [(a, b)] = slice_points(x, RATE, SlicerConfig())
    assert abs(a / RATE - 2.75) < 0.02 and b == len(x)


def test_tiny_tail_joins_the_previous_piece():
    x = np.concatenate([sound(4.5), silence(0.35), sound(0.1)])  # tail: ~0.2 s of silence + 0.1 s
    assert len(slice_points(x, RATE, SlicerConfig(max_seconds=10))) == 1


def test_config_is_validated():
    with pytest.raises(ValueError, match="--seconds 60"):
        SlicerConfig(max_seconds=60)
    with pytest.raises(ValueError, match="threshold"):
        SlicerConfig(threshold_db=3)


def test_slice_command_writes_32k_mono_pieces_and_a_list_skeleton(tmp_path, capsys):
    rec = tmp_path / "rec"
    (rec / "day2").mkdir(parents=True)
    x = np.concatenate([sound(3), silence(0.5), sound(4), silence(0.5), sound(6), silence(0.6), sound(9)])
    sf.write(str(rec / "a.wav"), np.stack([x, x], 1), RATE)
    y = sound(12)
    sf.write(str(rec / "day2" / "b.flac"), y[:: 2], 16_000)
    (rec / "notes.txt").write_text("not audio")
    before = {p: p.read_bytes() for p in rec.rglob("*") if p.is_file()}
    assert main(["slice", str(rec), str(tmp_path / "out"), "--seconds", "8", "--language", "EN", "--speaker", "kim", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = (tmp_path / "out" / "slices.list").read_text(encoding="utf-8").splitlines()
    assert len(lines) == summary["pieces"] >= 5 and summary["longest_seconds"] <= 8
    for line in lines:
        name, speaker, lang, text = line.split("|")
        info = sf.info(str(tmp_path / "out" / name))
        assert (speaker, lang, text) == ("kim", "en", "") and info.samplerate == RATE and info.channels == 1
        assert info.duration <= 8.0
    assert any(l.startswith("day2_b_") for l in lines)
    assert before == {p: p.read_bytes() for p in rec.rglob("*") if p.is_file()}
    # a re-run with another length replaces the earlier pieces
    assert main(["slice", str(rec), str(tmp_path / "out"), "--seconds", "20"]) == 0
    names = {l.split("|")[0] for l in (tmp_path / "out" / "slices.list").read_text().splitlines()}
    assert names == {p.name for p in (tmp_path / "out").glob("*.wav")}


def test_slice_command_refuses_foreign_output_and_reports_unusable_input(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    sf.write(str(tmp_path / "a.wav"), sound(3), RATE)
    assert main(["slice", str(tmp_path / "a.wav"), str(tmp_path / "busy")]) == 2
    assert "holds something else" in capsys.readouterr().err
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "broken.wav").write_bytes(b"not a wav at all")
    assert main(["slice", str(tmp_path / "rec"), str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "broken.wav: unreadable audio" in captured.out and "no pieces written" in captured.err
