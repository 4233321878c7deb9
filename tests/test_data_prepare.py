"""`advisor prepare` end to end: real audio files, real features, the real CLI; every bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from advisor.cli import main
from trainer.data.dataset import PrepareConfig, assign_splits, prepare
from trainer.data.loader import PreparedDataset

RATE = 32_000


def voice(seconds: float, seed: int = 0, rate: int = RATE, peak: float = 0.5) -> np.ndarray:
    """A harmonic tone with syllable-like amplitude modulation (speech-ish, not silent)."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * seed + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(h * phase) / h for h in range(1, 8)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + seed))
    return (x * peak / np.abs(x).max()).astype(np.float32)


def write(path: Path, samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype=subtype)
    return path.name


def good_list(folder: Path, n: int = 4, speakers: int = 2) -> Path:
    lines = []
    for i in range(n):
        name = write(folder / f"good{i}.wav", voice(1.5 + 0.5 * i, seed=i))
        lang, text = ("en", "Hello world, this is a test.") if i % 2 == 0 else ("zh", "你好，世界。")
        lines.append(f"{name}|spk{i % speakers}|{lang}|{text}")
    path = folder / "good.list"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def hashes(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the happy path --------------------------------------------------------------------


def test_demo_data_then_prepare_via_cli(tmp_path, capsys):
    assert main(["demo-data", str(tmp_path / "d"), "--voice", "synthetic"]) == 0
    lines = (tmp_path / "d" / "demo.list").read_text(encoding="utf-8").splitlines()
    assert 12 <= len(lines) <= 20
    assert {l.split("|")[1] for l in lines} == {"ava", "bo"} and {l.split("|")[2] for l in lines} == {"en", "zh"}
    for line in lines:
        info = sf.info(str(tmp_path / "d" / line.split("|")[0]))
        assert info.samplerate == RATE and info.channels == 1 and 2 <= info.duration <= 8
    capsys.readouterr()
    assert main(["prepare", str(tmp_path / "d" / "demo.list"), str(tmp_path / "ds"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["used"] == len(lines) and summary["problems"] == []
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["slice_seconds"] == 10.0
    assert manifest["list"]["sha256"] == hashlib.sha256((tmp_path / "d" / "demo.list").read_bytes()).hexdigest()
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == len(lines)
    assert manifest["features"]["distinct_semantic_codes"] > 16  # the seeded quantiser has not collapsed
    assert len(PreparedDataset(tmp_path / "ds", "train")) == manifest["counts"]["train"]


def test_clip_tensors_and_peak_normalisation(tmp_path):
    lst = good_list(tmp_path / "in", n=2)
    result = prepare(PrepareConfig(lst, tmp_path / "ds"))
    ds = PreparedDataset(tmp_path / "ds", "train")
    assert ds.manifest is not None and result.computed == 2
    sample = PreparedDataset(tmp_path / "ds", "val")[0]
    frames = sample["ssl"].shape[1]
    assert sample["ssl"].shape == (768, frames)
    assert sample["wav"].shape == (frames * 640,)
    assert sample["semantic_ids"].shape == (frames // 2,)
    assert 0 <= int(sample["semantic_ids"].min()) and int(sample["semantic_ids"].max()) <= 1023
    assert sample["bert_features"].shape == (1024, len(sample["phoneme_ids"])) and not sample["bert_features"].any()
    assert abs(float(sample["wav"].abs().max()) - 0.95) < 1e-3  # peak-normalised


def test_peak_of_2_is_kept_and_normalised(tmp_path):
    write(tmp_path / "loud.wav", voice(1.0, peak=2.0), subtype="FLOAT")
    (tmp_path / "l.list").write_text("loud.wav|a|en|loud\n", encoding="utf-8")
    prepare(PrepareConfig(tmp_path / "l.list", tmp_path / "ds"))
    wav = PreparedDataset(tmp_path / "ds", "train")[0]["wav"]
    assert abs(float(wav.abs().max()) - 0.95) < 1e-3


def test_resampled_stereo_flac_ogg_mp3(tmp_path):
    x = voice(1.2, rate=44_100)
    sf.write(str(tmp_path / "a.flac"), np.stack([x, x], 1), 44_100)
    sf.write(str(tmp_path / "b.ogg"), voice(1.2, rate=48_000), 48_000)
    sf.write(str(tmp_path / "c.mp3"), voice(1.2, rate=24_000), 24_000)
    (tmp_path / "m.list").write_text("a.flac|s|EN|one\nb.ogg|s|JP|に\nc.mp3|s|Yue|三\n", encoding="utf-8")
    result = prepare(PrepareConfig(tmp_path / "m.list", tmp_path / "ds"))
    assert result.problems == [] and result.manifest["counts"]["used"] == 3
    assert {c["language"] for c in result.manifest["clips"]} == {"en", "ja", "yue"}
    for clip in result.manifest["clips"]:
        assert abs(clip["seconds"] - 1.2) < 0.03  # 32 kHz, whole frames


# --- bad input: each one a report line, or with --strict a one-line error ------------


def _truncated(folder: Path) -> str:
    write(folder / "full.wav", voice(2.0))
    data = (folder / "full.wav").read_bytes()
    (folder / "bad.wav").write_bytes(data[: len(data) // 2])
    (folder / "full.wav").unlink()
    return "bad.wav"


BAD_AUDIO = {
    "missing": (lambda f: "nope.wav", "missing audio file"),
    "unreadable": (lambda f: (f / "bad.wav").write_bytes(b"RIFF\x00\x00garbage" * 50) and "bad.wav", "unreadable audio"),
    "truncated": (_truncated, "truncated audio"),
    "zero_length": (lambda f: write(f / "bad.wav", np.zeros(0, np.float32)), "zero-length audio"),
    "silent": (lambda f: write(f / "bad.wav", np.zeros(RATE, np.float32)), "all-silent audio"),
    "nan": (lambda f: write(f / "bad.wav", np.where(np.arange(RATE) == 5, np.nan, voice(1.0)).astype(np.float32), subtype="FLOAT"), "NaN/inf"),
    "inf": (lambda f: write(f / "bad.wav", np.where(np.arange(RATE) == 5, np.inf, voice(1.0)).astype(np.float32), subtype="FLOAT"), "NaN/inf"),
    "peak": (lambda f: write(f / "bad.wav", voice(1.0, peak=2.5), subtype="FLOAT"), "above 2.2"),
    "short": (lambda f: write(f / "bad.wav", voice(0.5)), "too short"),
    "long": (lambda f: write(f / "bad.wav", voice(55.0, rate=8000), rate=8000), "too long"),
    "over_slice": (lambda f: write(f / "bad.wav", voice(12.0, rate=8000), rate=8000), "longer than the slice length"),
}

BAD_LINES = {
    "empty_text": (b"good0.wav|a|en|   ", "empty text"),
    "language": (b"good0.wav|a|fr|bonjour", "unsupported language 'fr'"),
    "fields": (b"good0.wav|a|en", "expected 4 '|'-separated fields"),
    "fields_too_many": (b"good0.wav|a|en|x|y", "found 5"),
    "not_utf8": ("good0.wav|a|zh|你好".encode("gbk"), "not valid UTF-8"),
    "duplicate": (b"./good1.wav|a|en|again", "duplicate of line 2"),
}


def _bad_audio_list(folder: Path, case: str) -> tuple[Path, int]:
    good = good_list(folder, n=2)
    make, _ = BAD_AUDIO[case]
    name = make(folder)
    with open(good, "a", encoding="utf-8") as f:
        f.write(f"{name}|a|en|some words\n")
    return good, 3


def _bad_line_list(folder: Path, case: str) -> tuple[Path, int]:
    good = good_list(folder, n=2)
    with open(good, "ab") as f:
        f.write(BAD_LINES[case][0] + b"\n")
    return good, 3


@pytest.mark.parametrize("case", sorted(BAD_AUDIO))
def test_bad_audio_is_reported_and_skipped(tmp_path, case):
    lst, line = _bad_audio_list(tmp_path / "in", case)
    result = prepare(PrepareConfig(lst, tmp_path / "ds"))
    assert result.manifest["counts"]["used"] == 2 and result.manifest["counts"]["skipped"] == 1
    [problem] = json.loads((tmp_path / "ds" / "report.json").read_text())["skipped"]
    assert problem["line"] == line and BAD_AUDIO[case][1] in problem["reason"]


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_lines_are_reported_and_skipped(tmp_path, case):
    lst, line = _bad_line_list(tmp_path / "in", case)
    result = prepare(PrepareConfig(lst, tmp_path / "ds"))
    assert result.manifest["counts"]["used"] == 2
    [problem] = [p.to_json() for p in result.problems]
    assert problem["line"] == line and BAD_LINES[case][1] in problem["reason"]


@pytest.mark.parametrize("case", ["truncated", "peak", "over_slice", "missing"])
def test_strict_stops_with_one_line_error(tmp_path, capsys, case):
    lst, line = _bad_audio_list(tmp_path / "in", case)
    assert main(["prepare", str(lst), str(tmp_path / "ds"), "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{lst}:{line}" in err and BAD_AUDIO[case][1] in err
    with pytest.raises(ValueError, match="incomplete"):
        PreparedDataset(tmp_path / "ds")


@pytest.mark.parametrize("case", ["not_utf8", "language", "fields"])
def test_strict_stops_on_bad_lines(tmp_path, case):
    lst, line = _bad_line_list(tmp_path / "in", case)
    with pytest.raises(ValueError, match=f":{line}"):
        prepare(PrepareConfig(lst, tmp_path / "ds", strict=True))


def test_summary_lists_problems_without_json(tmp_path, capsys):
    lst, _ = _bad_audio_list(tmp_path / "in", "silent")
    assert main(["prepare", str(lst), str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "1 line(s) not used" in out and f"{lst}:3" in out and "all-silent" in out


def test_zero_usable_clips_is_an_error_and_leaves_no_folder(tmp_path, capsys):
    (tmp_path / "empty.list").write_text("a.wav|s|en|hi\nb.wav|s|xx|hi\n", encoding="utf-8")
    assert main(["prepare", str(tmp_path / "empty.list"), str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "no line names an audio file that exists (2 lines; first:" in err and "missing audio file (tried" in err
    assert not (tmp_path / "ds").exists()
    write(tmp_path / "quiet.wav", np.zeros(RATE, dtype=np.float32))  # found, but silent: skipped while preparing
    (tmp_path / "silent.list").write_text("quiet.wav|s|en|hi\n", encoding="utf-8")
    assert main(["prepare", str(tmp_path / "silent.list"), str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "no usable clips (1 lines skipped; first:" in err and "nothing was written" in err
    assert not (tmp_path / "ds").exists()


def test_windows_paths_resolve_by_their_tails_under_the_audio_root_or_beside_the_list(tmp_path, capsys):
    """What GPT-SoVITS's tools write on Windows: absolute D:\\ paths and relative ones with backslashes."""
    audio = tmp_path / "copied" / "slicer_opt"
    names = [write(audio / f"clip{i}.wav", voice(1.5, seed=i)) for i in range(2)]
    write(tmp_path / "lists" / "demo" / "wavs" / "near.wav", voice(1.5, seed=3))
    lst = tmp_path / "lists" / "voice.list"
    lst.write_text(f"D:\\GPT-SoVITS\\output\\slicer_opt\\{names[0]}|s|en|Hello there.\n"
                   f"output\\slicer_opt\\{names[1]}|s|en|Hello again.\n"
                   "demo\\wavs\\near.wav|s|en|Close by.\n"
                   "D:\\elsewhere\\gone.wav|s|en|Not anywhere.\n", encoding="utf-8")
    assert main(["prepare", str(lst), str(tmp_path / "ds"), "--audio-root", str(tmp_path / "copied"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["used"] == 3
    (problem,) = summary["problems"]
    assert problem["line"] == 4 and "missing audio file (tried" in problem["reason"] and "--audio-root" in problem["reason"]
    assert str(tmp_path / "copied" / "gone.wav") in problem["reason"] and str(tmp_path / "lists" / "gone.wav") in problem["reason"]


def test_out_folder_holding_something_else_is_refused(tmp_path, capsys):
    lst = good_list(tmp_path / "in", n=1)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "thesis.docx").write_bytes(b"precious")
    assert main(["prepare", str(lst), str(tmp_path / "ds")]) == 2
    assert "holds something else" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "ds").iterdir()] == ["thesis.docx"]


def test_inputs_are_never_modified(tmp_path):
    folder = tmp_path / "in"
    lst, _ = _bad_audio_list(folder, "truncated")
    with open(lst, "a", encoding="utf-8") as f:
        f.write("bad.wav|a|en|dup\n")
    before = hashes(folder)
    prepare(PrepareConfig(lst, tmp_path / "ds"))
    prepare(PrepareConfig(lst, tmp_path / "ds", slice_seconds=5))
    assert hashes(folder) == before


# --- idempotent, resumable -------------------------------------------------------------


def test_rerun_reuses_everything_and_writes_the_same_manifest(tmp_path):
    lst = good_list(tmp_path / "in")
    prepare(PrepareConfig(lst, tmp_path / "ds"))
    first = (tmp_path / "ds" / "manifest.json").read_bytes()
    again = prepare(PrepareConfig(lst, tmp_path / "ds"))
    assert (again.computed, again.reused) == (0, 4)
    assert (tmp_path / "ds" / "manifest.json").read_bytes() == first


def test_interrupted_run_is_incomplete_and_resumes(tmp_path):
    lst = good_list(tmp_path / "in")

    def crash_after_two(done, total, entry):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig(lst, tmp_path / "ds"), crash_after_two)
    with pytest.raises(ValueError, match="incomplete"):
        PreparedDataset(tmp_path / "ds")
    resumed = prepare(PrepareConfig(lst, tmp_path / "ds"))
    assert (resumed.computed, resumed.reused) == (2, 2)
    assert len(PreparedDataset(tmp_path / "ds")) + len(PreparedDataset(tmp_path / "ds", "val")) == 4


def test_changed_clip_is_recomputed_and_the_old_file_removed(tmp_path):
    lst = good_list(tmp_path / "in")
    prepare(PrepareConfig(lst, tmp_path / "ds"))
    old = {p.name for p in (tmp_path / "ds" / "clips").iterdir()}
    write(tmp_path / "in" / "good1.wav", voice(2.0, seed=9))
    rerun = prepare(PrepareConfig(lst, tmp_path / "ds"))
    new = {p.name for p in (tmp_path / "ds" / "clips").iterdir()}
    assert (rerun.computed, rerun.reused) == (1, 3)
    assert len(new) == 4 and len(old & new) == 3


def test_damaged_clip_file_is_recomputed(tmp_path):
    lst = good_list(tmp_path / "in", n=2)
    prepare(PrepareConfig(lst, tmp_path / "ds"))
    victim = sorted((tmp_path / "ds" / "clips").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])
    rerun = prepare(PrepareConfig(lst, tmp_path / "ds"))
    assert (rerun.computed, rerun.reused) == (1, 1)
    torch.load(victim, weights_only=True)  # loadable again


# --- validation split ------------------------------------------------------------------


def _clips(counts: dict[str, int]) -> list[dict]:
    return [{"id": f"{s}{i:03d}", "speaker": s} for s, n in counts.items() for i in range(n)]


def test_split_is_per_speaker_and_deterministic():
    clips = _clips({"a": 20, "b": 10, "c": 1})
    assign_splits(clips, 0.1, seed=3)
    val = [c["id"] for c in clips if c["splits"] == ["val"]]
    assert sum(v.startswith("a") for v in val) == 2 and sum(v.startswith("b") for v in val) == 1
    assert not any(v.startswith("c") for v in val)  # its only clip stays in training
    again = _clips({"a": 20, "b": 10, "c": 1})
    assign_splits(again, 0.1, seed=3)
    assert [c["splits"] for c in again] == [c["splits"] for c in clips]
    other = _clips({"a": 20, "b": 10, "c": 1})
    assign_splits(other, 0.1, seed=4)
    assert [c["splits"] for c in other] != [c["splits"] for c in clips]


def test_split_has_at_least_one_val_clip():
    clips = _clips({"a": 3})
    assign_splits(clips, 0.0, seed=0)
    assert sum(c["splits"] == ["val"] for c in clips) == 1
    single = _clips({"a": 1})
    assign_splits(single, 0.1, seed=0)
    assert single[0]["splits"] == ["train", "val"]


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="slice-seconds"):
        PrepareConfig(Path("x.list"), Path("o"), slice_seconds=60)
    with pytest.raises(ValueError, match="val-fraction"):
        PrepareConfig(Path("x.list"), Path("o"), val_fraction=1.0)


def test_rebuilding_a_dataset_from_another_list_says_so(tmp_path, capsys):
    lst = good_list(tmp_path / "in", n=2)
    assert main(["prepare", str(lst), str(tmp_path / "ds")]) == 0
    capsys.readouterr()
    other = tmp_path / "in" / "other.list"
    other.write_text(lst.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    assert main(["prepare", str(other), str(tmp_path / "ds")]) == 0
    err = capsys.readouterr().err
    assert f"was prepared from another list ({lst.resolve()}); rebuilt it from" in err and "refuse --resume" in err


def test_a_list_of_missing_files_leaves_an_existing_dataset_as_it_was(tmp_path, capsys):
    lst = good_list(tmp_path / "in", n=2)
    assert main(["prepare", str(lst), str(tmp_path / "ds")]) == 0
    before = {str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
              for p in sorted((tmp_path / "ds").rglob("*"))}
    (tmp_path / "win.list").write_text("D:\\GPT-SoVITS\\output\\a.wav|s|en|hi\n", encoding="utf-8")
    assert main(["prepare", str(tmp_path / "win.list"), str(tmp_path / "ds")]) == 2
    assert "no line names an audio file that exists" in capsys.readouterr().err
    after = {str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
             for p in sorted((tmp_path / "ds").rglob("*"))}
    assert after == before
