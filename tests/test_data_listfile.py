"""Parsing GPT-SoVITS .list files and the audio checks, on real files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from trainer.data.audio import AudioError, decode, load_for_training, peak_normalize
from trainer.data.listfile import normalize_language, read_list


@pytest.mark.parametrize("raw,lang", [("zh", "zh"), ("ZH", "zh"), ("JP", "ja"), ("ja", "ja"), ("Ja", "ja"), ("EN", "en"), ("ko", "ko"), ("YUE", "yue"), (" en ", "en")])
def test_languages_as_gpt_sovits_accepts_them(raw, lang):
    assert normalize_language(raw) == lang


@pytest.mark.parametrize("raw", ["fr", "", "auto", "all_zh", "jpn"])
def test_other_languages_are_refused(raw):
    assert normalize_language(raw) is None


def test_paths_resolve_against_the_list_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.wav").write_bytes(b"x")
    (tmp_path / "b.wav").write_bytes(b"x")
    lst = tmp_path / "x.list"
    lst.write_bytes("\ufeffsub/a.wav|s|zh|一\r\n\r\nD:\\\\old machine\\\\b.wav|s|en|b\n/abs/none.wav|s|en|c\n".encode("utf-8"))
    entries, problems = read_list(lst)
    assert problems == []
    assert [e.line for e in entries] == [1, 3, 4]
    assert entries[0].audio == tmp_path / "sub" / "a.wav"
    assert entries[1].audio == tmp_path / "b.wav"  # same name beside the list
    assert str(entries[2].audio) == "/abs/none.wav"


def test_windows_paths_are_looked_for_by_their_tails(tmp_path):
    (tmp_path / "root" / "slicer_opt").mkdir(parents=True)
    (tmp_path / "root" / "slicer_opt" / "a.wav").write_bytes(b"x")
    (tmp_path / "list" / "wavs").mkdir(parents=True)
    (tmp_path / "list" / "wavs" / "b.wav").write_bytes(b"x")
    lst = tmp_path / "list" / "x.list"
    lst.write_text("D:\\GPT-SoVITS\\output\\slicer_opt\\a.wav|s|en|a\ndemo\\wavs\\b.wav|s|en|b\nC:\\c.wav|s|en|c\n", encoding="utf-8")
    entries, problems = read_list(lst, audio_root=tmp_path / "root")
    assert problems == []
    assert entries[0].audio == tmp_path / "root" / "slicer_opt" / "a.wav" and not entries[0].tried
    assert entries[1].audio == tmp_path / "list" / "wavs" / "b.wav" and not entries[1].tried
    assert entries[2].tried == (str(tmp_path / "list" / "C:\\c.wav"), str(tmp_path / "root" / "c.wav"), str(tmp_path / "list" / "c.wav"))
    without_root, _ = read_list(lst)
    assert without_root[0].tried[-1] == str(tmp_path / "list" / "a.wav")  # nowhere beside the list


def test_problems_name_their_lines(tmp_path):
    lst = tmp_path / "x.list"
    lst.write_bytes(b"a.wav|s|en|ok\n|s|en|no path\nb.wav|s|de|x\n" + "c.wav|s|zh|错".encode("gb18030") + b"\na.wav|s|en|dup\n")
    entries, problems = read_list(lst)
    assert [e.line for e in entries] == [1]
    assert [(p.line, p.reason.split()[0]) for p in problems] == [(2, "empty"), (3, "unsupported"), (4, "not"), (5, "duplicate")]
    assert problems[0].describe(lst) == f"{lst}:2: empty audio path"


def test_unreadable_list_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read the list"):
        read_list(tmp_path / "missing.list")


# --- audio -----------------------------------------------------------------------------


def tone(seconds: float, rate: int, peak: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (peak * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_decode_downmixes_and_resamples(tmp_path):
    x = tone(1.0, 44_100)
    sf.write(str(tmp_path / "s.wav"), np.stack([x, -x * 0 + x], 1), 44_100, subtype="FLOAT")
    d = decode(tmp_path / "s.wav")
    assert d.sample_rate == 44_100 and d.channels == 2 and np.allclose(d.samples, x, atol=1e-6)
    y = load_for_training(tmp_path / "s.wav")
    assert len(y) == 32_000 and abs(np.abs(y).max() - 0.95) < 1e-4


def test_truncated_wav_is_detected_from_its_header(tmp_path):
    sf.write(str(tmp_path / "full.wav"), tone(1.0, 16_000), 16_000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:-1000])
    decode(tmp_path / "full.wav")
    with pytest.raises(AudioError, match=r"truncated audio: decodes to 15500 of the 16000 frames"):
        decode(tmp_path / "cut.wav")


def test_truncated_flac_is_unreadable_or_truncated(tmp_path):
    sf.write(str(tmp_path / "full.flac"), tone(2.0, 16_000), 16_000)
    data = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="unreadable audio|truncated audio"):
        decode(tmp_path / "cut.flac")


def test_peak_limit_is_checked_before_normalising(tmp_path):
    sf.write(str(tmp_path / "hot.wav"), tone(1.0, 16_000, peak=2.3), 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match="peak 2.3 is above 2.2"):
        decode(tmp_path / "hot.wav")
    sf.write(str(tmp_path / "warm.wav"), tone(1.0, 16_000, peak=2.1), 16_000, subtype="FLOAT")
    assert abs(np.abs(load_for_training(tmp_path / "warm.wav")).max() - 0.95) < 1e-4


def test_length_limits(tmp_path):
    sf.write(str(tmp_path / "short.wav"), tone(0.59, 8000), 8000)
    sf.write(str(tmp_path / "ok.wav"), tone(0.61, 8000), 8000)
    with pytest.raises(AudioError, match="too short: 0.59 s"):
        decode(tmp_path / "short.wav")
    assert decode(tmp_path / "ok.wav").seconds == pytest.approx(0.61, abs=1e-3)


def test_peak_normalize_of_silence_is_silence():
    assert not peak_normalize(np.zeros(10, np.float32)).any()
