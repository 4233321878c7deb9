"""`advisor prepare --from-gpt-sovits` and an end-to-end fine-tune from GPT-SoVITS's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from trainer.data.loader import PreparedDataset
from trainer.gptsovits.experiment import convert

from gptsovits_data import write_experiment, write_s1_ckpt

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def advisor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True, env=ENV, timeout=300)


def test_converts_every_documented_file_into_the_prepared_format(tmp_path):
    exp = tmp_path / "logs" / "voice"
    names = write_experiment(exp, n=6)
    result = convert(exp, tmp_path / "ds", val_fraction=0.2)
    m = result.manifest
    assert m["features"]["clips_with"] == {"sv_emb": 6, "bert_features": 6}
    assert m["phonemes"] == "gpt-sovits-v2" and m["counts"]["used"] == 6 and m["counts"]["val"] == 1 and not result.skipped
    train = PreparedDataset(tmp_path / "ds", "train")
    sample = train[0]
    assert sample["ssl"].shape[0] == 768 and sample["wav"].shape[0] == sample["ssl"].shape[1] * 640
    stored = torch.load(tmp_path / "ds" / m["clips"][0]["file"], weights_only=True)
    assert stored["sv_emb"].shape == (20480,) and stored["sv_emb"].dtype == torch.float16
    assert stored["bert_features"].shape == (1024, len(stored["phoneme_ids"]))
    text = (exp / "2-name2text.txt").read_text().splitlines()[0].split("\t")[1].split()
    from trainer.gptsovits.symbols import phoneme_ids

    first = next(c for c in m["clips"] if c["audio"] == f"5-wav32k/{names[0]}")
    assert torch.load(tmp_path / "ds" / first["file"], weights_only=True)["phoneme_ids"].tolist() == phoneme_ids(text)
    assert m["versions"] == ["v2", "v2Pro", "v2ProPlus"]  # every clip has its 7-sv_cn/ embedding


def test_clip_files_carry_their_sha256_and_a_damaged_one_is_refused_on_first_read(tmp_path):
    exp = tmp_path / "logs" / "voice"
    write_experiment(exp, n=4)
    m = convert(exp, tmp_path / "ds", val_fraction=0.25).manifest
    clip = next(c for c in m["clips"] if "train" in c["splits"])
    path = tmp_path / "ds" / clip["file"]
    assert clip["bytes"] == path.stat().st_size and len(clip["sha256"]) == 64
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size: only the hash can tell
    path.write_bytes(bytes(data))
    train = PreparedDataset(tmp_path / "ds", "train")
    index = train.clips.index(clip)
    with pytest.raises(ValueError, match="sha256 does not match the manifest"):
        train[index]


def test_damaged_and_mismatched_items_are_reported_and_skipped(tmp_path):
    exp = tmp_path / "voice"
    names = write_experiment(exp, n=7, bert=False, sv=False)
    (exp / "4-cnhubert" / f"{names[0]}.pt").write_bytes(b"\x00garbage\xff")  # garbage
    data = (exp / "4-cnhubert" / f"{names[1]}.pt").read_bytes()
    (exp / "4-cnhubert" / f"{names[1]}.pt").write_bytes(data[: len(data) // 2])  # truncated
    (exp / "5-wav32k" / names[2]).write_bytes(b"RIFF\x00\x00")  # not audio
    sem = (exp / "6-name2semantic.tsv").read_text().splitlines()
    sem[4] = sem[4].replace(" ", " \x00", 1)  # NUL bytes in a line (item 3)
    sem.append("ghost.wav\t1 2 3")  # a name 2-name2text.txt does not have
    (exp / "6-name2semantic.tsv").write_text("\n".join(sem) + "\n")
    text = (exp / "2-name2text.txt").read_text().splitlines()
    text[4] = text[4].split("\t")[0] + "\tAA\tNone\tfour"  # 1 phoneme for >1 s: below 3/s
    (exp / "2-name2text.txt").write_text("\n".join(text) + "\n")
    result = convert(exp, tmp_path / "ds")
    reasons = {(s.file, s.name): s.reason for s in result.skipped}
    assert result.manifest["counts"]["used"] == 2 and len(result.skipped) == 7
    assert "unreadable torch file" in reasons[(f"4-cnhubert/{names[0]}.pt", names[0])]
    assert "unreadable torch file" in reasons[(f"4-cnhubert/{names[1]}.pt", names[1])]
    assert "unreadable audio" in reasons[(f"5-wav32k/{names[2]}", names[2])]
    assert "NUL" in reasons[("6-name2semantic.tsv", None)]
    assert "not in 2-name2text.txt" in reasons[("6-name2semantic.tsv", "ghost.wav")]
    assert "no semantic tokens for it" in reasons[("2-name2text.txt", names[3])]
    assert "phonemes per second" in reasons[("6-name2semantic.tsv", names[4])]
    report = json.loads((tmp_path / "ds" / "report.json").read_text())
    assert len(report["skipped"]) == 7
    with pytest.raises(ValueError, match="--strict"):
        convert(exp, tmp_path / "strict", strict=True)
    assert json.loads((tmp_path / "strict" / "manifest.json").read_text())["complete"] is False


@pytest.mark.parametrize("damage,message", [
    (lambda e: (e / "6-name2semantic.tsv").unlink(), "6-name2semantic.tsv: missing"),
    (lambda e: (e / "6-name2semantic.tsv").write_bytes(b"item_name\tsemantic_audio\n\xff\xfe"), "not UTF-8 text"),
    (lambda e: (e / "6-name2semantic.tsv").write_text("name\ttokens\n"), "6-name2semantic.tsv:1: expected the header"),
    (lambda e: (e / "2-name2text.txt").write_bytes(b"\xc3\x28 bad"), "2-name2text.txt: not UTF-8"),
])
def test_missing_or_undecodable_index_files_are_one_line_errors(tmp_path, damage, message):
    exp = tmp_path / "voice"
    write_experiment(exp, n=2, bert=False, sv=False)
    damage(exp)
    done = advisor("prepare", "--from-gpt-sovits", str(exp), str(tmp_path / "ds"))
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_experiment_folder_and_upstream_ckpt_fine_tune_to_gpt_weights_under_the_supervisor(tmp_path):
    """Tiny size: the same key names as the 77.6 M file (test_gptsovits_s1 loads and exports
    that one); a full-size step on a shared 2-core CPU would take most of the test budget."""
    exp = tmp_path / "logs" / "voice"
    write_experiment(exp, n=8)
    done = advisor("prepare", "--from-gpt-sovits", str(exp), str(tmp_path / "ds"), "--val-fraction", "0.25", "--json")
    assert done.returncode == 0, done.stderr
    write_s1_ckpt(tmp_path / "s1v3.ckpt", size="tiny")
    root = tmp_path / "GPT-SoVITS"
    root.mkdir()
    (root / "webui.py").write_text("# GPT-SoVITS's checkout root holds webui.py\n")
    run = tmp_path / "voice"
    done = advisor("train", "--workload", "s1", "--data", str(tmp_path / "ds"), "--out", str(run), "--size", "tiny",
                   "--init", str(tmp_path / "s1v3.ckpt"), "--recipe", "gpt-sovits", "--micro-batch", "2", "--epochs", "6",
                   "--gpt-sovits-root", str(root), "--set", "watchdog.early_stop.min_delta=1000",
                   "--set", "watchdog.early_stop.patience=1", "--no-dashboard", "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    vals = [e for e in events if e["kind"] == "val"]
    stops = [e for e in events if e["kind"] == "stop"]
    assert len(vals) == 2 and stops and stops[0]["policy"] == "early_stop"
    start = next(e for e in events if e["kind"] == "start")
    assert start["accumulation"] == 4 and start["effective_batch"] == 8  # a step every 4 batches
    best = json.loads((run / "manifest.json").read_text())["best"]["file"]
    epoch = next(e["epoch"] for e in events if e["kind"] == "checkpoint" and e["file"] == best)
    files = sorted((run / "export" / "GPT_weights_v2Pro").glob("*.ckpt"))
    assert [f.name for f in files] == [f"voice-e{epoch}.ckpt"]  # the best checkpoint's, only
    saved = torch.load(files[0], weights_only=True)
    assert saved["info"] == f"GPT-e{epoch}" and saved["config"]["data"]["max_sec"] == 54
    assert all(k.startswith("model.") and v.dtype == torch.float16 for k, v in saved["weight"].items())
    assert (root / "GPT_weights_v2Pro" / files[0].name).read_bytes() == files[0].read_bytes()
    import hashlib  # where the weights came from and went: the start event, the console, the export event

    digest = hashlib.sha256((tmp_path / "s1v3.ckpt").read_bytes()).hexdigest()
    assert start["init"]["path"] == str(tmp_path / "s1v3.ckpt") and start["init"]["sha256"] == digest
    assert start["init"]["kind"].startswith("GPT-SoVITS s1 weights: ")
    assert f"init: {tmp_path / 's1v3.ckpt'} (GPT-SoVITS s1 weights: " in done.stderr and digest[:16] in done.stderr
    export = [e for e in events if e["kind"] == "export"][-1]
    assert export["copied_to"] == [str(root / "GPT_weights_v2Pro" / files[0].name)]
    assert json.loads(done.stdout)["copied_to"] == export["copied_to"]  # the closing report says where too


def test_gpt_sovits_recipe_resumes_exactly(tmp_path):
    """ScaledAdam state, the first-step LR and upstream's rejected rows (global RNG) survive a resume."""
    from trainer.config import TrainConfig, apply_overrides
    from trainer.loop import train
    from trainer.rundir import RunDir

    torch.set_num_threads(1)
    write_experiment(tmp_path / "voice", n=10, bert=False, sv=False)
    convert(tmp_path / "voice", tmp_path / "ds", val_fraction=0.2)
    base = {"workload": "s1", "size": "tiny", "dataset": str(tmp_path / "ds"), "device": "cpu", "recipe": "gpt-sovits", "dpo": True,
            "epochs": 2, "batch.micro": 2, "batch.effective": 4, "checkpoint.every_steps": 1}

    def run(folder: str, **more):
        cfg = apply_overrides(TrainConfig(), {**base, **more})
        return train(cfg, RunDir(tmp_path / folder))

    assert run("straight") == "epochs"
    assert run("resumed", max_steps=2) == "max_steps"
    assert run("resumed") == "epochs"
    a, b = (torch.load(tmp_path / f / "export" / "gpt.pt", weights_only=True) for f in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line) for line in (tmp_path / "straight" / "events.jsonl").read_text().splitlines()]
    lrs = [e["lr"]["gpt/all"] for e in steps if e["kind"] == "step"]  # one ScaledAdam group, as upstream
    assert len(lrs) >= 4 and lrs[0] == pytest.approx(0.01) and lrs[1:] == pytest.approx([0.002] * (len(lrs) - 1))


def test_a_folder_with_no_usable_item_leaves_no_dataset_behind(tmp_path):
    exp = tmp_path / "logs" / "voice"
    write_experiment(exp, n=3)
    for path in (exp / "4-cnhubert").iterdir():
        path.unlink()  # GPT-SoVITS's HuBERT step never ran
    with pytest.raises(ValueError, match=r"no usable clips \(3 skipped; first: 4-cnhubert/vocal_000.wav.pt.*missing\); nothing was written"):
        convert(exp, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
