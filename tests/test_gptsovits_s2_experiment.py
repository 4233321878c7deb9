"""GPT-SoVITS s2 end to end: its experiment folder (v2Pro, with 7-sv_cn/) and pretrained
s2G/s2D files -> a supervised fine-tune with validation on mel L1 and early stopping ->
a SoVITS_weights_v2Pro file with the `05` header, copied into the GPT-SoVITS root.

Real processes (`advisor prepare`, `advisor train` with its supervisor and child), files in
exactly GPT-SoVITS's formats (tests/gptsovits_data.py; random values), the tiny model size
(the same key names as the 79.4 M generator: test_s2_gptsovits checks full-size keys).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from gptsovits_data import write_experiment

from trainer.gptsovits.s2_files import restore_header
from trainer.workloads.s2 import S2Workload

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def advisor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)


def write_pretrained(folder: Path, version: str = "v2Pro") -> Path:
    """s2G<ver>.pth and s2D<ver>.pth side by side, as GPT-SoVITS ships them: {"weight": state_dict}."""
    torch.manual_seed(5)
    models = S2Workload("tiny", version=version).build("cpu")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": models["generator"].state_dict(), "info": "pretrained"}, folder / f"s2G{version}.pth")
    torch.save({"weight": models["discriminator"].state_dict()}, folder / f"s2D{version}.pth")
    return folder / f"s2G{version}.pth"


def test_v2pro_experiment_folder_fine_tunes_under_the_supervisor_to_sovits_weights(tmp_path):
    exp = tmp_path / "logs" / "voice"
    write_experiment(exp, n=8, sv=True)
    done = advisor("prepare", "--from-gpt-sovits", str(exp), str(tmp_path / "ds"), "--val-fraction", "0.25", "--json")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["phonemes"] == "gpt-sovits-v2"
    init = write_pretrained(tmp_path / "pretrained")
    gsv = tmp_path / "GPT-SoVITS"
    gsv.mkdir()
    (gsv / "webui.py").write_text("# GPT-SoVITS's checkout root holds webui.py\n")
    run = tmp_path / "voice"
    done = advisor("train", "--workload", "s2", "--version", "v2Pro", "--data", str(tmp_path / "ds"), "--out", str(run),
                   "--size", "tiny", "--init", str(init), "--micro-batch", "2", "--epochs", "6", "--gpt-sovits-root", str(gsv),
                   "--set", "watchdog.early_stop.min_delta=1000", "--set", "watchdog.early_stop.patience=1",
                   "--set", "validation.samples=1", "--no-dashboard", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["kind"] == "start")
    assert "s2Dv2Pro.pth" in start["init"]["kind"], start["init"]  # the D file beside the G file was found
    vals = [e for e in events if e["kind"] == "val"]
    assert vals and all(e["metric"] == "val_mel_l1" for e in vals)
    stop = [e for e in events if e["kind"] == "stop"]
    assert len(vals) == 2 and stop and stop[0]["policy"] == "early_stop"  # min_delta 1000: no check improves on the first
    (exported,) = sorted((run / "export" / "SoVITS_weights_v2Pro").glob("*.pth"))
    data = exported.read_bytes()
    assert data[:2] == b"05"  # v2Pro's version header in place of PK
    saved = torch.load(io.BytesIO(restore_header(data)), map_location="cpu", weights_only=True)
    assert saved["weight"] and not any("enc_q" in k for k in saved["weight"])
    assert {v.dtype for v in saved["weight"].values()} == {torch.float16}
    assert "sv_emb.weight" in saved["weight"] and saved["config"]["model"]["version"] == "v2Pro"
    assert (gsv / "SoVITS_weights_v2Pro" / exported.name).read_bytes() == data
