"""Files exactly as GPT-SoVITS writes them, with random values (not a test module).

`write_experiment` writes a logs/<exp> folder in the formats of docs/ARCHITECTURE.md
("GPT-SoVITS interop"); `write_s1_ckpt` a pretrained-style s1 file from the model's
own key list (equal to upstream's manifest, test_gptsovits_s1.py checks that).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch

from trainer.gptsovits.symbols import table

SYMBOLS = table("v2")[100:140]  # real v2 symbols


def write_wav32k(path: Path, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(32000 * seconds)
    t = np.arange(n) / 32000
    samples = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)) * 32767 * 0.5
    with wave.open(str(path), "wb") as w:  # int16 mono 32 kHz, as 5-wav32k holds
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(32000)
        w.writeframes(samples.astype("<i2").tobytes())


def write_experiment(root: Path, n: int = 8, seconds=(1.0, 1.6), bert: bool = True, sv: bool = True, durations=None) -> list[str]:
    """n items of 1-1.6 s (or of the given `durations`): 10 phonemes/s, 25 tokens/s, 50 content frames/s. Returns the names."""
    for sub in ("3-bert", "4-cnhubert", "5-wav32k", "7-sv_cn"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    names, text_lines, sem_lines = [], [], ["item_name\tsemantic_audio"]
    durations = list(durations) if durations is not None else [seconds[0] + (seconds[1] - seconds[0]) * i / max(1, n - 1) for i in range(n)]
    for i, s in enumerate(durations):
        name = f"vocal_{i:03d}.wav"
        P, T, F = round(10 * s), round(25 * s), round(50 * s)
        phonemes = [SYMBOLS[int(x)] for x in torch.randint(0, len(SYMBOLS), (P,), generator=g)]
        word2ph = f"[{', '.join(['1'] * P)}]" if bert else "None"
        text_lines.append(f"{name}\t{' '.join(phonemes)}\t{word2ph}\ttext {i}")
        sem_lines.append(f"{name}\t{' '.join(str(int(x)) for x in torch.randint(0, 1024, (T,), generator=g))}")
        torch.save(torch.randn(1, 768, F, generator=g).half(), root / "4-cnhubert" / f"{name}.pt")
        if bert:
            torch.save(torch.randn(1024, P, generator=g).half(), root / "3-bert" / f"{name}.pt")
        if sv:
            torch.save(torch.randn(1, 20480, generator=g), root / "7-sv_cn" / f"{name}.pt")
        write_wav32k(root / "5-wav32k" / name, s, i)
        names.append(name)
    (root / "2-name2text.txt").write_text("\n".join(text_lines) + "\n", encoding="utf-8")
    (root / "6-name2semantic.tsv").write_text("\n".join(sem_lines) + "\n", encoding="utf-8")
    return names


def write_s1_ckpt(path: Path, size: str = "full", dtype=torch.float16, seed: int = 0, phonemes: int | None = None) -> dict:
    """{"weight": {"model.<key>": random tensor}} as GPT-SoVITS's pretrained s1 file; returns the weights."""
    from trainer.workloads.s1 import S1Workload

    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in S1Workload(size=size).build("meta")["gpt"].state_dict().items()}
    if phonemes is not None:
        shapes["ar_text_embedding.word_embeddings.weight"] = torch.Size([phonemes, shapes["ar_text_embedding.word_embeddings.weight"][1]])
    weight = {f"model.{k}": (0.02 * torch.randn(s, generator=g)).to(dtype) for k, s in shapes.items()}
    for k in weight:
        if k.endswith("alpha") or "norm" in k and k.endswith("weight"):
            weight[k] = torch.ones_like(weight[k])
    torch.save({"weight": weight}, path)
    return weight
