"""`advisor train --workload s2 --version v4` end to end (issue 21's Done-when), as a user runs it:
GPT-SoVITS's experiment folder -> `advisor prepare --from-gpt-sovits --version v4` -> train from a
file in s2Gv4.pth's format (tiny size, CPU, real processes with the supervisor) -> validation
(val_cfm_loss), early stopping on a rising curve, the LoRA export that GPT-SoVITS's inference
loads, `advisor report` and `advisor export-tb`; then an emulated OOM and a resume (which may not
change the LoRA rank its checkpoints hold); audio samples through a v4 vocoder.pth
(`--vocoder`), and its refusals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_here import advisor_here
from gptsovits_data import write_experiment
from test_preflight import refused, snapshot
from test_s2v3 import load_as_upstream_inference, read_export
from test_vocoder import v4_file

from trainer.events import read_events
from trainer.gptsovits import s2v3_files
from trainer.sovits.config import v3_config
from trainer.sovits.v3 import SynthesizerTrnV3

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def advisor(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def v4(tmp_path_factory) -> dict[str, Path]:
    """A GPT-SoVITS checkout with a tiny s2Gv4.pth where its webui keeps it, and a v4 dataset of
    4 clips (3 train, 1 val; 1.6-2 s) prepared from an experiment folder."""
    base = tmp_path_factory.mktemp("v4")
    exp = base / "logs" / "voice"
    write_experiment(exp, n=4, seconds=(1.6, 2.0), bert=False, sv=False)
    done = advisor("prepare", "--from-gpt-sovits", exp, base / "ds", "--version", "v4", "--val-fraction", "0.25", "--json")
    assert done.returncode == 0, done.stderr
    root = base / "GPT-SoVITS"
    torch.manual_seed(0)
    state = SynthesizerTrnV3(v3_config("v4", "tiny")).state_dict()
    pretrained = root / s2v3_files.PRETRAINED_PATH["v4"]
    pretrained.parent.mkdir(parents=True)
    torch.save({"weight": {k: v.half() for k, v in state.items()}, "config": {"model": {"version": "v4"}}}, pretrained)
    return {"ds": base / "ds", "root": root, "init": pretrained}


def tiny_v4(v4, run: Path, *extra) -> list:
    return ["train", "--workload", "s2", "--version", "v4", "--data", v4["ds"], "--out", run, "--size", "tiny",
            "--init", v4["init"], "--no-dashboard", *extra]


def kinds(run: Path, kind: str) -> list[dict]:
    return [e for e in read_events(run / "events.jsonl")[0] if e["kind"] == kind]


def test_v4_trains_validates_stops_early_and_exports_what_gpt_sovits_inference_loads(v4, tmp_path):
    run = tmp_path / "voice"
    # a high LR for the tiny DiT: val_cfm_loss falls, then rises; patience 1 stops at the first rise
    out = advisor(*tiny_v4(v4, run, "--epochs", "8", "--lora-rank", "8", "--gpt-sovits-root", v4["root"], "--json",
                           "--set", "optim.lr.generator=0.05", "--set", "watchdog.early_stop.patience=1",
                           "--set", "watchdog.oscillation=null"))
    assert out.returncode == 0, out.stdout + out.stderr
    start = kinds(run, "start")[0]
    assert start["micro_batch"] == 4 and start["batch_source"] == "fallback"  # tiny: no table lookup
    vals = kinds(run, "val")
    assert {e["metric"] for e in vals} == {"val_cfm_loss"} and all(0 < e["value"] < 10 for e in vals)
    assert kinds(run, "end")[-1]["reason"] == "stopped" and kinds(run, "stop")[-1]["policy"] == "early_stop"
    assert vals[-1]["value"] > vals[-2]["value"] and len(vals) < 8  # stopped on the rise, before the last epoch
    notes = [e["note"] for e in kinds(run, "samples")]
    assert notes and all("vocoder" in n and "not given" in n for n in notes)  # a mel model: says why there is no audio

    manifest = json.loads((run / "manifest.json").read_text())
    best = min(vals, key=lambda e: e["value"])
    assert manifest["best"]["step"] == best["step"] < manifest["latest"]["step"]
    files = sorted((run / "export" / "SoVITS_weights_v4").glob("*.pth"))
    assert [f.name for f in files] == [f"voice_e{best['epoch']}_s{best['step']}_l8.pth"]
    assert (v4["root"] / "SoVITS_weights_v4" / files[0].name).read_bytes() == files[0].read_bytes()
    obj = read_export(files[0])
    assert obj["lora_rank"] == 8 and obj["config"]["model"]["version"] == "v4"
    trained = torch.load(run / manifest["best"]["file"], weights_only=False)["models"]["generator"]
    latest = torch.load(run / manifest["latest"]["file"], weights_only=False)["models"]["generator"]
    assert all(torch.equal(v, trained[k].half()) for k, v in obj["weight"].items())  # the best checkpoint's weights,
    assert not all(torch.equal(v, latest[k].half()) for k, v in obj["weight"].items())  # not the last

    model, wrapped = load_as_upstream_inference(v4["init"], files[0], "v4")  # no trainable key missing or unexpected
    assert torch.equal(model.state_dict()["wns1.pre.weight"], trained["wns1.pre.weight"].half().float())

    report = advisor_here("report", run)
    assert report.returncode == 0 and (run / "report.html").is_file(), report.stderr
    assert "val_cfm_loss" in (run / "report.html").read_text()
    tb = advisor_here("export-tb", run, "--out", tmp_path / "tb")
    assert tb.returncode == 0, tb.stderr
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_v4_recovers_from_an_emulated_oom_and_resumes(v4, tmp_path):
    run = tmp_path / "run"
    # 12 MiB of live tensors: micro-batch 4 of the tiny v4 model does not fit, 2 does
    out = advisor(*tiny_v4(v4, run, "--epochs", "1", "--effective-batch", "4", "--emulate-vram", "12MiB", "--no-supervisor"))
    assert out.returncode == 0, out.stdout + out.stderr
    shrinks = kinds(run, "set_micro_batch")
    assert kinds(run, "oom") and [s["micro_batch"] for s in shrinks] == [4 // 2 ** (i + 1) for i in range(len(shrinks))]
    assert all(s["micro_batch"] * s["accumulation"] == 4 for s in shrinks)  # the effective batch kept
    assert kinds(run, "end")[-1]["reason"] == "epochs" and [e["epoch"] for e in kinds(run, "val")] == [1]

    config = (run / "config.yaml").read_bytes()
    refused = advisor_here("train", "--out", run, "--resume", "--epochs", "2", "--lora-rank", "8")  # the checkpoints hold rank 32
    assert refused.returncode == 2 and "--resume: lora_rank 8 differs from the run's 32" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and (run / "config.yaml").read_bytes() == config

    resumed = advisor("train", "--out", run, "--resume", "--epochs", "2", "--no-dashboard", "--no-supervisor", "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    starts = kinds(run, "start")
    assert len(starts) == 2 and starts[-1]["step"] == 1 and starts[-1]["micro_batch"] == shrinks[-1]["micro_batch"]
    assert [e["epoch"] for e in kinds(run, "val")] == [1, 2] and kinds(run, "end")[-1]["reason"] == "epochs"
    best = json.loads((run / "manifest.json").read_text())["best"]  # the export is the best validation's weights
    assert [f.name for f in (run / "export" / "SoVITS_weights_v4").glob("*.pth")] == [f"run_e{best['epoch']}_s{best['step']}_l32.pth"]


def test_full_size_v4_takes_its_batch_from_the_s2_v4_estimate(v4, tmp_path):
    """`advisor train` asks the tables for s2-v4 (not the GAN's s2); no row has this dataset's
    slice, so the estimate made on the fly answers; with --grad-ckpt it answers from the
    checkpointed trace (a larger micro-batch); --print-config writes nothing."""
    out = advisor_here("train", "--workload", "s2", "--version", "v4", "--data", v4["ds"], "--out", tmp_path / "run",
                       "--emulate-vram", "8GiB", "--print-config")
    assert out.returncode == 0, out.stderr
    assert "(s2-v4 fp32); micro-batch from an estimate made on the fly" in out.stderr and "emulated budget 8.00 GiB" in out.stderr, out.stderr
    config = out.stdout
    assert "source: estimated" in config and "table: estimated on the fly" in config and "lora_rank: 32" in config
    micro = int(next(line for line in config.splitlines() if line.strip().startswith("micro:")).split(":")[1].split("#")[0])
    assert micro >= 1 and not (tmp_path / "run").exists()
    ckpt = advisor_here("train", "--workload", "s2", "--version", "v4", "--data", v4["ds"], "--out", tmp_path / "run",
                        "--emulate-vram", "8GiB", "--grad-ckpt", "--print-config")
    assert ckpt.returncode == 0, ckpt.stderr
    assert "grad_ckpt: true" in ckpt.stdout and "micro-batch from an estimate made on the fly" in ckpt.stderr
    micro_ckpt = int(next(line for line in ckpt.stdout.splitlines() if line.strip().startswith("micro:")).split(":")[1].split("#")[0])
    assert micro_ckpt > micro and not (tmp_path / "run").exists()


def test_v4_samples_through_the_vocoder_are_48khz_and_repeat_bit_for_bit(v4, tmp_path):
    """--vocoder: each validation writes the first val clip's sample at 48 kHz, 480 samples per
    generated mel frame; synthesised again in this process from the checkpoint, it is the same."""
    import soundfile

    from trainer.config import load_config
    from trainer.data.loader import PreparedDataset
    from trainer.loop.samples import synthesize_cfm
    from trainer.sovits.vocoder import load_vocoder
    from trainer.workloads import workload_for_config

    vocoder = v4_file(tmp_path / "vocoder.pth")
    run = tmp_path / "run"
    out = advisor(*tiny_v4(v4, run, "--epochs", "1", "--no-supervisor", "--json", "--vocoder", vocoder, "--set", "validation.samples=1"))
    assert out.returncode == 0, out.stdout + out.stderr
    event = kinds(run, "samples")[-1]
    assert "note" not in event and len(event["files"]) == 2, event.get("note")
    wav_path, ref_path = (run / f for f in event["files"])
    data, rate = soundfile.read(wav_path, dtype="float32")
    assert rate == 48_000 and soundfile.info(ref_path).samplerate == 32_000

    cfg = load_config(run / "config.yaml")
    assert cfg.validation.vocoder == str(vocoder)
    workload = workload_for_config(cfg)
    models = workload.build("cpu")
    latest = json.loads((run / "manifest.json").read_text())["latest"]
    assert latest["step"] == event["step"]
    models["generator"].load_state_dict(torch.load(run / latest["file"], weights_only=False)["models"]["generator"])
    model = models["generator"].eval()
    val = PreparedDataset(v4["ds"], "val")
    batch = workload.collate([val[0]], val.slice_seconds)
    again = [synthesize_cfm(model, batch, load_vocoder(vocoder, "v4"), "v4", seed=4321) for _ in range(2)]
    (wav, prompt), (wav2, _) = again
    mel_frames = int(batch["mel_lens"][0])
    assert prompt == mel_frames // 3 and len(data) == wav.shape[0] == 480 * (mel_frames - prompt)
    assert torch.equal(wav, wav2) and torch.isfinite(wav).all()
    assert (torch.from_numpy(data) - wav).abs().max() <= 2 / 32768  # the file is this sample, to 16-bit precision

    resumed = advisor_here("train", "--out", run, "--resume", "--epochs", "2", "--print-config")  # a resume keeps the run's vocoder
    assert resumed.returncode == 0 and f"vocoder: {vocoder}" in resumed.stdout, resumed.stderr


def test_a_bad_vocoder_is_refused_before_anything_is_written(v4, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    bad = v4_file(tmp_path / "bad.pth", edit=lambda state: state.pop("ups.1.bias"))
    before = snapshot(tmp_path)
    line = refused(advisor_here(*tiny_v4(v4, run, "--vocoder", bad)), f"--vocoder {bad}", "first: ups.1.bias")
    assert "vocoder.pth" in line
    refused(advisor_here(*tiny_v4(v4, run, "--vocoder", tmp_path / "none.pth")), "no such file")
    assert snapshot(tmp_path) == before


def test_preflight_takes_a_bigvgan_folder_for_v3_and_refuses_a_file(tmp_path):
    from types import SimpleNamespace

    from test_vocoder import bigvgan_folder

    from advisor.errors import UserError
    from advisor.preflight import check_vocoder

    def config(path, version="v3"):
        return SimpleNamespace(version=version, validation=SimpleNamespace(vocoder=str(path)))

    folder = bigvgan_folder(tmp_path / "models--nvidia--bigvgan_v2_24khz_100band_256x")
    check_vocoder(config(folder))
    for path, version, needle in [(folder / "bigvgan_generator.pt", "v3", "v3 takes the BigVGAN folder (config.json + bigvgan_generator.pt)"),
                                  (folder, "v4", "a folder; v4 takes GPT-SoVITS's gsv-v4-pretrained/vocoder.pth")]:
        with pytest.raises(UserError) as caught:
            check_vocoder(config(path, version))
        assert str(caught.value).startswith(f"--vocoder {path}") and needle in str(caught.value), str(caught.value)
