"""`advisor check` wall time on CPU: the demo dataset and a realistic 200-clip folder.

    /work/venv/bin/python -m pytest benchmarks/bench_check.py --benchmark-only -q

Each round is the whole command (`advisor check DATA --json --html PAGE`, default
--vram 24GiB: read, measure, rules, batch plans from the tables, the page with its
three histograms), in-process, stdout discarded. Target: < 30 s on 2 cores.
Inputs:
  demo      `advisor demo-data` (16 clips, 82 s, en + zh, synthetic voice)
  list-200  a .list of 200 speech-like clips of 2-10 s (about 20 minutes, 32 kHz
            16-bit WAV, zh texts in proportion), 10 of them with noise at 5 dB
  exp-200   the same 200 clips as a GPT-SoVITS experiment folder (2-name2text.txt,
            6-name2semantic.tsv, 3-bert/, 4-cnhubert/ fp16, 5-wav32k/, 7-sv_cn/)
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from advisor.cli import main
from trainer.data.demo import make_demo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from check_corpus import RATE, add_noise, speech_like

from trainer.gptsovits.symbols import table

CHARS = "我们今天去公园散步天气很好大家都很开心"
CLIPS = 200


def _clips():
    rng = np.random.default_rng(0)
    for i in range(CLIPS):
        seconds = float(rng.uniform(2.0, 10.0))
        x = speech_like(seconds, seed=i)
        if i % 20 == 7:
            x = add_noise(x, 5.0, seed=i)
            x = 0.5 * x / np.abs(x).max()
        yield f"clip_{i:03d}.wav", x, seconds


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-check")
    make_demo(root / "demo", voice="synthetic")
    (root / "list" / "wavs").mkdir(parents=True)
    exp = root / "exp"
    for sub in ("3-bert", "4-cnhubert", "5-wav32k", "7-sv_cn"):
        (exp / sub).mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    symbols = table("v2")[100:140]
    lines, texts, semantic = [], [], ["item_name\tsemantic_audio"]
    for name, x, seconds in _clips():
        sf.write(root / "list" / "wavs" / name, x, RATE, subtype="PCM_16")
        os.link(root / "list" / "wavs" / name, exp / "5-wav32k" / name)
        text = "".join(CHARS[j % len(CHARS)] for j in range(round(4 * seconds)))
        lines.append(f"wavs/{name}|spk|zh|{text}")
        P, F = round(10 * seconds), round(50 * seconds)
        texts.append(f"{name}\t{' '.join(symbols[int(k)] for k in torch.randint(0, 40, (P,), generator=g))}\t[{', '.join(['1'] * P)}]\t{text}")
        semantic.append(f"{name}\t{' '.join(map(str, torch.randint(0, 1024, (F // 2,), generator=g).tolist()))}")
        torch.save(torch.randn(1, 768, F, generator=g).half(), exp / "4-cnhubert" / f"{name}.pt")
        torch.save(torch.randn(1024, P, generator=g).half(), exp / "3-bert" / f"{name}.pt")
        torch.save(torch.randn(1, 20480, generator=g), exp / "7-sv_cn" / f"{name}.pt")
    (root / "list" / "voice.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (exp / "2-name2text.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (exp / "6-name2semantic.tsv").write_text("\n".join(semantic) + "\n", encoding="utf-8")
    return {"demo": root / "demo" / "demo.list", "list-200": root / "list" / "voice.list", "exp-200": exp}


@pytest.mark.parametrize("name", ["demo", "list-200", "exp-200"])
def test_check(benchmark, inputs, tmp_path, name):
    page = tmp_path / "page.html"

    def run() -> int:
        with contextlib.redirect_stdout(io.StringIO()):
            return main(["check", str(inputs[name]), "--json", "--html", str(page)])

    assert benchmark.pedantic(run, rounds=3, iterations=1) == 0
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
