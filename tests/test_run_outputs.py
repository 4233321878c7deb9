"""What a run leaves besides events.jsonl: TensorBoard files, samples to listen to (tiny real runs, CPU)."""

from __future__ import annotations

import json

import pytest

from train_data import demo_dataset, kinds, one_thread, read_events, tiny_config  # noqa: F401 (fixture)
from trainer.loop import train
from trainer.rundir import RunDir


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, one_thread):
    return demo_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def s2_run(dataset, tmp_path_factory):
    """A tiny s2 run: 2 epochs of 3 steps, a validation after each, 2 samples per validation."""
    root = tmp_path_factory.mktemp("s2-run")
    cfg = tiny_config(dataset, workload="s2", epochs=2, **{"batch.micro": 4, "batch.effective": 8, "validation.samples": 2})
    assert train(cfg, RunDir(root)) == "epochs"
    return root


def test_tensorboard_files_load_with_tensorboards_reader_and_hold_the_expected_tags(s2_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted((s2_run / "tensorboard").glob("events.out.tfevents.*"))
    assert files, "no TensorBoard event file"
    acc = EventAccumulator(str(s2_run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {"loss/total", "loss/mel", "loss/g", "loss/d", "val/val_mel_l1", "lr/generator/text_encoder", "lr/generator/rest",
                "lr/discriminator/discriminator", "grad_norm/generator", "grad_norm/discriminator", "memory/peak_gib",
                "memory/used_gib", "memory/budget_gib", "throughput/samples_per_s", "throughput/audio_seconds_per_s", "batch/micro"}
    assert expected <= tags, sorted(expected - tags)
    events = read_events(s2_run)
    steps = [e["step"] for e in kinds(events, "step")]
    assert [s.step for s in acc.Scalars("loss/total")] == steps
    vals = kinds(events, "val")
    assert [round(s.value, 5) for s in acc.Scalars("val/val_mel_l1")] == [round(e["value"], 5) for e in vals]
    assert {"samples/text_summary", "run/end/text_summary"} <= set(acc.Tags()["tensors"])  # text is stored as tensors


def test_export_tb_replays_the_events_into_the_same_scalars(s2_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.tensorboard import export

    with pytest.raises(ValueError, match="already holds TensorBoard event files"):
        export(s2_run / "events.jsonl", s2_run / "tensorboard")
    from advisor import cli

    assert cli.main(["export-tb", str(s2_run)]) == 2  # the live files are kept: one line, exit 2
    assert cli.main(["export-tb", str(s2_run), "--out", str(tmp_path / "cli"), "--json"]) == 0
    assert len(list((tmp_path / "cli").glob("events.out.tfevents.*"))) == 1
    events = tmp_path / "events.jsonl"  # the run's events and a watchdog cut, as the loop writes one
    cut = {"time": 1.0, "kind": "scale_lr", "step": 3, "policy": "oscillation", "reason": "no decrease in 200 steps", "details": {"factor": 0.5}}
    events.write_text((s2_run / "events.jsonl").read_text() + json.dumps(cut) + "\n")
    n, files = export(events, tmp_path / "tb")
    assert n == len(read_events(s2_run)) + 1 and len(files) == 1
    live, again = (EventAccumulator(str(d), size_guidance={"scalars": 0}) for d in (s2_run / "tensorboard", tmp_path / "tb"))
    live.Reload(), again.Reload()
    assert set(live.Tags()["scalars"]) == set(again.Tags()["scalars"])
    assert [(s.step, s.value) for s in live.Scalars("loss/total")] == [(s.step, s.value) for s in again.Scalars("loss/total")]
    again = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    again.Reload()
    (note,) = again.Tensors("watchdog/scale_lr/text_summary")
    assert note.step == 3 and b"oscillation" in note.tensor_proto.string_val[0]


def test_each_s2_validation_leaves_playable_whole_clip_samples_and_the_export_keeps_the_best(s2_run):
    from trainer.data import audio_backend
    from trainer.loop.samples import is_audible

    sf = audio_backend.soundfile()
    events = read_events(s2_run)
    vals, samples = kinds(events, "val"), kinds(events, "samples")
    assert [e["step"] for e in samples] == [e["step"] for e in vals] and len(vals) == 2
    for event in samples:
        folder = s2_run / event["folder"]
        assert folder.name == f"step_{event['step']:08d}" and len(event["files"]) == 4  # 2 clips + their references
        for name in event["files"]:
            wav, rate = sf.read(str(s2_run / name), dtype="float32")
            assert rate == 32000 and wav.ndim == 1 and is_audible(wav), name
        made = sorted(f for f in event["files"] if not f.endswith(".ref.wav"))
        refs = sorted(f for f in event["files"] if f.endswith(".ref.wav"))
        for out, ref in zip(made, refs):  # the whole clip (4-6 s), not one 0.64 s window
            n_out, n_ref = sf.info(str(s2_run / out)).frames, sf.info(str(s2_run / ref)).frames
            assert n_out == n_ref and n_out > 4 * 32000
    best = [e for e in kinds(events, "checkpoint") if e["best"]][-1]
    kept = s2_run / "export" / "samples"
    assert (kept / "step.txt").read_text().strip() == str(best["step"])
    assert json.loads((s2_run / "export" / "info.json").read_text())["step"] == best["step"]
    source = s2_run / "samples" / f"step_{best['step']:08d}"
    assert sorted(p.name for p in source.iterdir()) == sorted(p.name for p in kept.iterdir() if p.name != "step.txt")
    assert all((kept / p.name).read_bytes() == p.read_bytes() for p in source.iterdir())


def test_report_of_a_recorded_run_has_every_plot_and_marks(tmp_path, monkeypatch):
    """The dashboard tests' recorded run (real watchdog policies: an OOM, a skip, an LR cut, an early stop)."""
    import base64
    import re

    from test_dashboard import write_run

    from advisor import cli
    from advisor.report import PLOTS

    run_dir = write_run(tmp_path / "run", monkeypatch)
    monkeypatch.undo()  # the fixture's clock: the report reads the real one
    assert cli.main(["report", str(run_dir), "--json"]) == 0
    page = (run_dir / "report.html").read_text()
    for name in PLOTS:
        (data,) = re.findall(rf"<img alt='{name}' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", page)
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "val_mel_l1 0.41 at step 79" in page  # the best check
    assert "stopped: early_stop" in page and "oscillation" in page and "CUDA out of memory" in page
    assert "No samples in this run" in page


def test_report_embeds_the_samples_of_a_real_run(s2_run, tmp_path):
    import base64
    import re

    from advisor.report import write_report

    page = write_report(s2_run, tmp_path / "elsewhere" / "page.html")
    text = page.read_text()
    players = re.findall(r"src='data:audio/wav;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(players) == 2 * 4 + 4  # two validations of 2 clips + references, and the export's copy
    assert all(base64.b64decode(p)[:4] == b"RIFF" for p in players) and "src='../" not in text
    assert "best checkpoint (export/samples)" in text


def test_dashboard_once_and_the_plain_lines_name_where_the_samples_are(s2_run, capsys):
    from advisor import cli
    from advisor.dashboard import format_event_line, load_state

    assert cli.main(["dashboard", str(s2_run), "--once"]) == 0
    out = capsys.readouterr().out
    last = kinds(read_events(s2_run), "samples")[-1]
    assert f"{last['folder']}/ (4 WAVs, step {last['step']})" in out and "best: export/samples/" in out
    assert format_event_line(last, clock=False).startswith(f"samples step {last['step']}: 4 WAVs in {last['folder']}/")
    # a 6-step run's generator is still silent (a DC offset, std ~2e-5): the event says that is expected
    sf = __import__("trainer.data.audio_backend", fromlist=["x"]).soundfile()
    made = [f for f in last["files"] if not f.endswith(".ref.wav")]
    quiet = sum(float(sf.read(str(s2_run / f))[0].std()) < 1e-3 for f in made)
    assert quiet == 0 or f"{quiet} of 2 samples near-silent" in last["note"] and "expected early in training" in last["note"]
    assert load_state(s2_run / "events.jsonl").summary()["samples"]["best"] == "export/samples"


def test_s1_samples_are_voiced_through_an_s2_export_or_the_run_says_it_needs_one(dataset, s2_run, tmp_path):
    from trainer.data import audio_backend
    from trainer.loop.samples import is_audible

    without = tiny_config(dataset, workload="s1", **{"batch.micro": 8, "validation.samples": 1})
    train(without, RunDir(tmp_path / "plain"))
    (note,) = kinds(read_events(tmp_path / "plain"), "samples")
    assert note["folder"] is None and "s1 samples need an s2 checkpoint: pass --s2 PATH" in note["note"]

    voiced = tiny_config(dataset, workload="s1", **{"batch.micro": 8, "validation.samples": 1, "validation.sample_s2": str(s2_run / "export" / "generator.pt")})
    train(voiced, RunDir(tmp_path / "voiced"))
    (event,) = kinds(read_events(tmp_path / "voiced"), "samples")
    assert len(event["files"]) == 2
    for name in event["files"]:
        wav, rate = audio_backend.soundfile().read(str(tmp_path / "voiced" / name), dtype="float32")
        assert rate == 32000 and is_audible(wav) and len(wav) > 4 * 32000

    bad = tiny_config(dataset, workload="s1", **{"validation.sample_s2": str(s2_run / "export" / "info.json")})
    with pytest.raises(ValueError, match="validation.sample_s2: .*info.json"):
        train(bad, RunDir(tmp_path / "bad"))
