"""`advisor check`: a corpus with planted problems, made here, each found and attributed to its clip.

Clean clips are speech-like tones (tests/check_corpus.py), 1.5-3 s at 32 kHz, with
texts proportional to their duration. Planted: one clipped, one with white noise
at 0 dB SNR, one 6 dB quieter, one with 2 s of leading silence, one carrying the
text of a clip four times its length, an exact copy of a clean clip; the
experiment folder (GPT-SoVITS's formats) also lacks one name's 4-cnhubert file
and has a HuBERT file of the wrong length.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from advisor.check.config import Thresholds
from advisor.check.result import run_check
from advisor.cli import main
from check_corpus import RATE, add_noise, speech_like
from trainer.gptsovits.symbols import table

CLEAN = {f"clean_{i}.wav": 1.5 + 0.2 * i for i in range(8)}  # name -> seconds
CHARS = "我们今天去公园散步天气很好大家都很开心"
SYMBOLS = table("v2")[100:140]
PLANTED = {  # clip -> the checks that must fire for it (and no other)
    "clipped.wav": {"clipping"},
    "noisy.wav": {"snr"},
    "quiet.wav": {"loudness"},
    "leading.wav": {"leading-silence"},
    "mislabelled.wav": {"text-rate"},
    "copy_of_clean_0.wav": {"duplicate"},
}


def _corpus() -> dict[str, tuple[np.ndarray, float]]:
    """name -> (samples, seconds of speech the text is for)."""
    clips = {name: (speech_like(s, seed=i), s) for i, (name, s) in enumerate(CLEAN.items())}
    base = speech_like(2.0, seed=100)
    clips["clipped.wav"] = (np.clip(speech_like(2.0, seed=101) * 4, -0.5, 0.5), 2.0)
    noisy = add_noise(speech_like(2.2, seed=102), 0.0, seed=7)
    clips["noisy.wav"] = (0.5 * noisy / np.abs(noisy).max(), 2.2)
    clips["quiet.wav"] = (base * 10 ** (-6 / 20), 2.0)
    silence = 0.001 * np.random.default_rng(5).standard_normal(2 * RATE).astype(np.float32)
    clips["leading.wav"] = (np.concatenate([silence, speech_like(2.0, seed=103)]), 2.0)
    clips["mislabelled.wav"] = (speech_like(1.5, seed=104), 6.0)  # the text of a 6 s clip
    clips["copy_of_clean_0.wav"] = clips["clean_0.wav"]
    return clips


def _text(seconds: float) -> str:
    n = round(4 * seconds)  # 4 characters per second of speech
    return "".join(CHARS[i % len(CHARS)] for i in range(n))


def _write_list(folder: Path) -> Path:
    (folder / "wavs").mkdir(parents=True)
    lines = []
    for name, (samples, speech) in _corpus().items():
        sf.write(folder / "wavs" / name, samples, RATE, subtype="PCM_16")
        lines.append(f"wavs/{name}|spk|zh|{_text(speech)}")
    path = folder / "voice.list"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_experiment(root: Path, missing_hubert: str, wrong_hubert: str) -> None:
    """logs/<exp> as GPT-SoVITS's preprocessing writes it (INTEROP.md), v2Pro (7-sv_cn present)."""
    for sub in ("3-bert", "4-cnhubert", "5-wav32k", "7-sv_cn"):
        (root / sub).mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    texts, semantic = [], ["item_name\tsemantic_audio"]
    for name, (samples, speech) in _corpus().items():
        sf.write(root / "5-wav32k" / name, samples, RATE, subtype="PCM_16")  # int16 mono 32 kHz
        seconds = len(samples) / RATE
        P, F = round(10 * speech), round(50 * seconds)  # 10 phonemes per second of speech; 50 Hz frames
        phonemes = [SYMBOLS[int(x)] for x in torch.randint(0, len(SYMBOLS), (P,), generator=g)]
        texts.append(f"{name}\t{' '.join(phonemes)}\t[{', '.join(['1'] * P)}]\t{_text(speech)}")
        semantic.append(f"{name}\t{' '.join(str(int(x)) for x in torch.randint(0, 1024, (F // 2,), generator=g))}")
        if name != missing_hubert:
            frames = F // 2 if name == wrong_hubert else F
            torch.save(torch.randn(1, 768, frames, generator=g).half(), root / "4-cnhubert" / f"{name}.pt")
        torch.save(torch.randn(1024, P, generator=g).half(), root / "3-bert" / f"{name}.pt")
        torch.save(torch.randn(1, 20480, generator=g), root / "7-sv_cn" / f"{name}.pt")
    (root / "2-name2text.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (root / "6-name2semantic.tsv").write_text("\n".join(semantic) + "\n", encoding="utf-8")


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _by_clip(findings) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in findings:
        out.setdefault(Path(f.clip).name, set()).add(f.check)
    return out


def _assert_planted(found: dict[str, set[str]], planted: dict[str, set[str]], findings) -> None:
    """Every planted check fires on its clip; no other clip has any finding. A planted clip
    may have a consequence too (clipping x4 also makes it louder: "loudness")."""
    detail = [f.to_json() for f in findings]
    assert set(found) == set(planted), detail
    for clip, checks in planted.items():
        assert checks <= found[clip] <= checks | {"loudness"}, (clip, found[clip], detail)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check")
    _write_list(root / "list")
    _write_experiment(root / "exp", missing_hubert="clean_3.wav", wrong_hubert="clean_5.wav")
    return root


def test_list_planted_problems_found_and_clean_clips_quiet(corpus):
    result = run_check(corpus / "list" / "voice.list")
    _assert_planted(_by_clip(result.findings), PLANTED, result.findings)
    dup = next(f for f in result.findings if f.check == "duplicate")
    assert dup.value == "wavs/clean_0.wav" and dup.severity == "warning"
    for f in result.findings:
        assert f.reason and f.severity in ("error", "warning", "info") and f.where.startswith(str(corpus / "list" / "voice.list"))
    assert result.clean() == len(CLEAN)  # clean_0 is the original: the copy carries the finding
    assert {a.because for a in result.advice} and any("DPO" in a.text for a in result.advice)


def test_experiment_folder_consistency_and_planted_problems(corpus):
    result = run_check(corpus / "exp")
    found = _by_clip(result.findings)
    expected = {**PLANTED, "clean_3.wav": {"missing-file"}, "clean_5.wav": {"hubert-length", "semantic-length"}}  # half the frames: both disagree
    _assert_planted(found, expected, result.findings)
    missing = next(f for f in result.findings if f.check == "missing-file")
    assert missing.value == "4-cnhubert/" and missing.severity == "error"
    rate = {f.severity for f in result.findings if f.clip == "mislabelled.wav"}
    assert rate == {"warning", "error"}  # 40 phonemes/s: outside upstream's 3-25
    assert result.source.experiment.versions == ["v2", "v2Pro", "v2ProPlus"]


def test_cli_json_html_exit_codes_and_input_untouched(corpus, tmp_path, capsys):
    before = _tree_hash(corpus)
    page = tmp_path / "page.html"
    assert main(["check", str(corpus / "list" / "voice.list"), "--json", "--html", str(page), "--vram", "8GiB"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["clips"] == 14 and out["counts"]["snr"] == {"warning": 1}
    assert len(out["per_clip"]) == 14 and all(c["loudness_lufs"] is not None for c in out["per_clip"])
    plans = {p["workload"]: p for p in out["training"]["batch_plans"]}
    assert plans["s2"]["longest_clip"] == "wavs/leading.wav" and plans["s2"]["max_batch_size"] >= 1
    text = page.read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 3 and "noisy.wav" in text
    ranks = [("error", "warning", "info").index(f["severity"]) for f in out["findings"]]
    assert ranks == sorted(ranks) and ranks[-1] == 1  # worst first
    assert main(["check", str(corpus / "exp"), "--vram", "0"]) == 0
    table = capsys.readouterr().out
    assert table.index("4-cnhubert/") < table.index("WADA-SNR")  # worst first: errors before warnings
    assert "v2, v2Pro, v2ProPlus" in table and "advice: do not train with DPO" in table
    assert _tree_hash(corpus) == before


@pytest.mark.parametrize("case", ["missing", "folder", "binary"])
def test_unreadable_input_is_one_line_exit_2(tmp_path, capsys, case):
    target = tmp_path / "data"
    if case == "folder":
        target.mkdir()
        (target / "notes.txt").write_text("hello")
    elif case == "binary":
        target = tmp_path / "voice.list"
        target.write_bytes(b"\xff\xfe\x00garbage\n\x80\x81")
    assert main(["check", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(target) in err and "expected" in err


def test_prepare_adds_the_check_to_its_report(corpus, tmp_path, capsys):
    lst = tmp_path / "one.list"
    wav = corpus / "list" / "wavs"
    lst.write_text("".join(f"{wav / n}|spk|zh|{_text(CLEAN.get(n, 2.2))}\n" for n in ("clean_0.wav", "clean_1.wav", "noisy.wav")), encoding="utf-8")
    assert main(["prepare", str(lst), str(tmp_path / "ds")]) == 0
    assert "check: clips with errors 0, warnings 1" in capsys.readouterr().out
    report = json.loads((tmp_path / "ds" / "report.json").read_text(encoding="utf-8"))
    assert report["skipped"] == [] and report["check"]["counts"] == {"snr": {"warning": 1}}
    assert [f["clip"] for f in report["check"]["findings"]] == [str(wav / "noisy.wav")]
    result = run_check(tmp_path / "ds")  # the prepared dataset itself: normalised audio, same noise
    assert _by_clip(result.findings) == {"noisy.wav": {"snr"}} and result.source.normalised


def test_threshold_option(corpus, capsys):
    assert main(["check", str(corpus / "list" / "voice.list"), "--json", "--vram", "0", "--threshold", "snr_db=-5", "--threshold", "edge_silence=3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "snr" not in out["counts"] and "leading-silence" not in out["counts"] and out["thresholds"]["snr_db"] == -5.0
    for bad in ("snr=3", "snr_db=loud", "clipped=1.5"):
        assert main(["check", str(corpus / "list" / "voice.list"), "--threshold", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("--threshold" in err or "clipped" in err)


def test_thresholds_are_validated():
    with pytest.raises(ValueError, match="snr_db"):
        Thresholds(snr_db=-30)
    with pytest.raises(ValueError, match="pause"):
        Thresholds(pause=0)
    with pytest.raises(ValueError, match="min_seconds"):
        Thresholds(min_seconds=60)
    with pytest.raises(ValueError, match="clipped"):
        Thresholds(clipped=2.0)


def test_damaged_feature_file_is_a_finding_of_its_clip(corpus, tmp_path):
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(corpus / "exp", exp)
    (exp / "4-cnhubert" / "clean_1.wav.pt").write_bytes(b"PK\x03\x04 not a torch file")
    found = _by_clip(run_check(exp).findings)
    assert found["clean_1.wav"] == {"unreadable"} and "clean_2.wav" not in found


def test_prepare_from_gpt_sovits_adds_the_check(corpus, tmp_path, capsys):
    assert main(["prepare", "--from-gpt-sovits", str(corpus / "exp"), str(tmp_path / "ds"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    report = json.loads((tmp_path / "ds" / "report.json").read_text(encoding="utf-8"))
    assert set(report) == {"experiment", "skipped", "check"} and report["skipped"]  # clean_3 (no 4-cnhubert) is skipped
    assert report["check"]["kind"] == "experiment" and report["check"]["counts"]["missing-file"] == {"error": 1}
    assert summary["check"]["clips_with"]["error"] == report["check"]["clips_with"]["error"] == 3
