"""Dashboard: state model, render functions (golden text), plain lines, `advisor dashboard`.

The run directory is written by the real EventLog, with the real watchdog
policies deciding what happens (an OOM, a NaN step, an oscillation, early
stopping on the seed article's validation curve). EventLog's clock is a fixed,
advancing one, so every frame is the same on every machine.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import trainer.events
from advisor import cli
from advisor.dashboard import Dashboard, RunState, Series, axis, format_event_line, load_state, render, sparkline
from advisor.dashboard.format import curve
from advisor.watchdog import EarlyStopConfig, OscillationConfig, SpikeConfig, WatchdogConfig, default_policies
from trainer.events import EventLog, read_events
from trainer.policy import OOMInfo, StepInfo, ValInfo

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[1]
T0 = 1_795_000_000.0  # 2026-11-18 (UTC); any fixed value would do
ARTICLE = [0.72, 0.58, 0.46, 0.41, 0.45, 0.52, 0.61]
STEPS_PER_EPOCH = 20
GIB = 1024**3


class Clock:
    """Stands in for the `time` module inside trainer.events: EventLog stamps events with `now`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def write_run(run_dir: Path, monkeypatch) -> Path:
    """A finished s2 run: 7 epochs of 20 steps planned, stopped early after the 6th validation."""
    clock = Clock(T0)
    monkeypatch.setattr(trainer.events, "time", clock)
    run_dir.mkdir(parents=True, exist_ok=True)
    policies = default_policies(
        WatchdogConfig(
            spike=SpikeConfig(window=16, min_samples=8),
            oscillation=OscillationConfig(window=20, cooldown=20),
            early_stop=EarlyStopConfig(patience=2),
        ),
        precision="fp16",
    )
    rng = np.random.default_rng(0)
    lr = {"generator/text_encoder": 4e-5, "generator/other": 1e-4, "discriminator/all": 1e-4}
    micro, accumulation, effective = 4, 2, 8
    step = 0

    with EventLog(run_dir / "events.jsonl") as log:

        def decide(moment: str, info) -> list:
            nonlocal micro, accumulation, lr
            out = [d for p in policies for d in getattr(p, moment)(info)]
            for d in out:  # applied and logged as the loop does
                fields = {"reason": d.reason, "policy": d.policy, **d.details}
                if d.action == "scale_lr":
                    lr = {k: v * d.factor for k, v in lr.items()}
                    fields["factor"] = d.factor
                if d.action == "set_micro_batch":
                    fields.update(previous=micro, micro_batch=d.micro_batch)
                    micro, accumulation = d.micro_batch, d.details["accumulation"]
                log.write(d.action, step, **fields)
            return out

        log.write(
            "start", 0, workload="s2", size="tiny", precision="fp16", slice_seconds=10.0, dpo=False,
            micro_batch=micro, accumulation=accumulation, effective_batch=effective, batch_source="measured",
            batch_table="tables/measured/rtx-4060-8gb.yaml", total_steps=7 * STEPS_PER_EPOCH, epochs=7,
            metric_name="val_mel_l1", lr=lr,
        )
        for epoch in range(7):
            for batch in range(STEPS_PER_EPOCH):
                clock.now += 1.5
                if (epoch, batch) == (1, 5):  # the first long clip: OOM, retry at micro-batch 2
                    log.write("oom", step, micro_batch=micro, accumulation=accumulation, error="CUDA out of memory. Tried to allocate 1.20 GiB")
                    decide("on_oom", OOMInfo(step, micro, accumulation, effective, "CUDA out of memory"))
                    clock.now += 0.5
                level = 30.0 * math.exp(-step / 60) + 20.0
                if 80 <= step < 110:  # the loss bounces: the oscillation policy cuts the LR
                    level = 26.0 + 4.0 * (step % 2)
                mel = level * 0.6 + rng.normal(0, 0.3)
                losses = {"total": level + rng.normal(0, 0.3), "mel": mel, "kl": 1.5 + rng.normal(0, 0.05), "adv": 2.5 + rng.normal(0, 0.2)}
                if (epoch, batch) == (2, 3):  # one NaN batch: the spike policy skips it
                    losses = {k: math.nan for k in losses}
                grad = 3.0 + rng.normal(0, 0.3)
                info = StepInfo(step, epoch, losses["total"], losses, grad, next(iter(lr.values())))
                if any(d.action == "skip_step" for d in decide("on_step", info)):
                    continue
                step += 1
                used = (1.0 + 0.4 * micro + 0.01 * (step % 7)) * GIB
                log.write(
                    "step", step, epoch=epoch, batch=batch + 1, losses=losses, lr=lr, grad_norm={"generator": grad, "discriminator": grad / 2},
                    samples_per_s=effective / 1.5, audio_seconds_per_s=effective * 10 / 1.5, micro_batch=micro,
                    accumulation=accumulation, peak_memory_bytes=int(used + 0.3 * GIB),
                    memory={"used_bytes": int(used), "peak_bytes": int(used + 0.3 * GIB), "budget_bytes": 8 * GIB, "source": "emulated"},
                )
            clock.now += 4.0
            value = ARTICLE[epoch]
            log.write("val", step, epoch=epoch + 1, metric="val_mel_l1", value=value, samples=12)
            stop = [d for d in decide("on_val", ValInfo(step, epoch + 1, "val_mel_l1", value)) if d.action == "stop"]
            early = policies[-1]
            log.write("checkpoint", step, file=f"checkpoints/step-{step:06d}.pt", epoch=epoch + 1, metric=value, finite=True, best=early.is_best(step))
            if stop:
                log.write("end", step, reason="stopped", detail=f"{stop[0].policy}: {stop[0].reason}", epoch=epoch + 1)
                break
    return run_dir


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    return write_run(tmp_path / "run", monkeypatch)


def frame_text(state: RunState, width: int, now: float | None = None, height: int | None = None) -> str:
    console = Console(record=True, width=width, height=height or 25, color_system=None, file=io.StringIO())
    console.print(render(state, width, now=now, height=height))
    return console.export_text()


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"frame differs from {path} (UPDATE_GOLDEN=1 rewrites it)"


# --- the fixture run itself -----------------------------------------------------------------
def test_fixture_run_has_the_realistic_sequence(run_dir):
    events, _ = read_events(run_dir / "events.jsonl")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    for kind in ("step", "val", "checkpoint", "oom", "set_micro_batch", "skip_step", "scale_lr", "stop"):
        assert kind in kinds, kind
    assert kinds.count("val") == 6  # stopped after the 6th check


# --- state model ------------------------------------------------------------------------------
def test_state_from_the_run(run_dir):
    state = load_state(run_dir / "events.jsonl")
    assert state.status == "ended" and state.end_reason.startswith("stopped: early_stop:")
    assert state.val_best == (79, 0.41)  # the 4th check (4 epochs of 20 batches, one skipped)
    assert state.val.count == 6 and state.val.last == 0.52
    assert (state.micro_batch, state.accumulation) == (2, 4)  # after the OOM
    assert state.ooms == 1 and state.decision_counts["skip_step"] == 1
    assert state.decision_counts["scale_lr"] >= 1 and state.decision_counts["stop"] == 1
    assert state.memory_budget == 8 * GIB and state.memory_source == "emulated"
    steps = [e for e in read_events(run_dir / "events.jsonl")[0] if e["kind"] == "step"][-64:]
    expected = (steps[-1]["step"] - steps[0]["step"]) / (steps[-1]["time"] - steps[0]["time"])
    assert state.steps_per_s() == expected < 1 / 1.5  # 1.5 s a step, and the validation pauses
    assert set(state.losses) == {"total", "mel", "kl", "adv"}
    last_step = [e for e in read_events(run_dir / "events.jsonl")[0] if e["kind"] == "step"][-1]
    assert state.grad_norm == last_step["grad_norm"]["generator"]  # the worst of the two optimisers
    assert state.summary()["validation"] == {"metric": "val_mel_l1", "checks": 6, "last": 0.52, "best": 0.41, "best_step": 79}


def test_state_is_incremental_and_tolerates_missing_fields():
    state = RunState()
    for event in [
        {"kind": "step", "step": 1},
        {"kind": "step"},
        {"kind": "val"},
        {"kind": "checkpoint"},
        {"kind": "oom"},
        {"kind": "restart"},
        {"kind": "scale_lr"},
        {"kind": "set_micro_batch", "micro_batch": "x"},
        {"kind": "mystery", "step": 3, "x": 1},
        {"no": "kind"},
        {"kind": "step", "step": 4, "losses": {"total": "nan", "ce": 1.0}, "lr": 0.002, "grad_norm": "inf", "memory": "?"},
    ]:
        state.update(event)
    assert state.events == 10 and state.step == 4
    assert state.nonfinite_steps == 1 and state.losses["ce"].last == 1.0 and state.lr == {"lr": 0.002}
    assert state.grad_norm == math.inf
    text = frame_text(state, 100)
    assert "running" in text and "step 4" in text
    json.dumps(state.summary(), allow_nan=False)  # strict JSON: no NaN/inf


def test_only_the_supervisors_restarts_count_and_a_resume_is_a_log_line():
    state = RunState()
    for event in [
        {"time": T0, "kind": "start", "step": 0, "workload": "s1"},
        {"time": T0 + 60, "kind": "restart", "step": 40, "source": "supervisor", "attempt": 1, "reason": "killed by SIGKILL"},
        {"time": T0 + 65, "kind": "resume", "step": 40, "from_step": 40, "checkpoint": "checkpoints/step_00000040.pt", "skipped": []},
        {"time": T0 + 66, "kind": "start", "step": 40, "workload": "s1"},
        {"time": T0 + 99, "kind": "resume", "step": 0, "from_step": None, "checkpoint": None, "skipped": [{"file": "a"}, {"file": "b"}]},
    ]:
        state.update(event)
    assert state.restarts == 1 and state.summary()["restarts"] == 1 and state.status == "running"
    assert [(d.kind, d.reason) for d in state.decisions] == [
        ("restart", "attempt 1: killed by SIGKILL"),
        ("resume", "from step 40 (checkpoints/step_00000040.pt)"),
        ("resume", "no usable checkpoint: starting from step 0 (2 unusable checkpoints skipped)"),
    ]
    assert "1 restarts" in frame_text(state, 100)
    line = format_event_line({"kind": "resume", "step": 40, "from_step": 40, "checkpoint": "checkpoints/step_00000040.pt"}, clock=False)
    assert line == "resume at step 40: from step 40 (checkpoints/step_00000040.pt)"


def test_series_keeps_a_whole_run_in_bounded_points():
    s = Series(capacity=8)
    for i in range(1000):
        s.add(float(i))
    assert len(s.values()) <= 17 and s.count == 1000
    assert (s.low, s.high, s.last) == (0.0, 999.0, 999.0)
    assert s.values() == sorted(s.values())  # means of consecutive runs keep the order
    assert sum(s.points) / len(s.points) == pytest.approx(s.stride * len(s.points) / 2 - 0.5, rel=0.01)


def test_sparkline():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([2.0, 2.0, 2.0], 10) == "▄▄▄"  # constant: the middle of the scale
    assert sparkline(list(range(100)), 10) == "▁▂▃▃▄▅▆▆▇█"  # bucket means 4.5, 14.5, ..., 94.5
    assert sparkline([], 10) == ""


# --- honest scales ---------------------------------------------------------------------------
def test_a_near_constant_series_draws_flat():
    """A 0.0004 % wobble (the issue's validation metric) is not a fall from the top to the bottom."""
    values = [5.28492, 5.28490, 5.28489, 5.28491, 5.28490, 5.28488]
    assert len(set(sparkline(values, 10))) == 1
    assert all(len(set(row)) == 1 for row in curve(values, 12, 4))  # every row one fill level: flat
    low, high = axis(values)
    assert high - low == pytest.approx(0.01 * 5.28492)  # the scale is 1 % of the value wide
    assert sparkline([1.0, 2.0, 3.0], 3) == "▁▅█"  # a real change still fills the height
    lr = [math.log10(1e-4 * (1 - 0.0004 * i / 20)) for i in range(20)]  # LR -0.04 % (the case)
    from advisor.dashboard.rich_view import LR_MIN_SPAN

    assert len(set(sparkline(lr, 20, min_span=LR_MIN_SPAN))) == 1
    assert len(set(sparkline([-4.0] * 10 + [math.log10(5e-5)] * 10, 20, min_span=LR_MIN_SPAN))) == 2  # a halving is a step


def test_the_validation_chart_labels_a_real_span():
    state = RunState()
    for i, value in enumerate([5.28492, 5.28490, 5.28489, 5.28491]):
        state.update({"kind": "val", "step": 10 * (i + 1), "metric": "val_ce", "value": value})
    text = frame_text(state, 100)
    labels = [line.split()[-1] for line in text.splitlines() if "│" in line and line.split("│")[1].strip().startswith(("█", "▄", "▅"))]
    assert "5.314" in text and "5.261" in text, text  # the axis: 1 % of the value wide, not 5.285 to 5.285
    assert labels


# --- rendering (golden text) ----------------------------------------------------------------
KEY_FACTS = ("step 119/140", "elapsed", "total", "val_mel_l1", "best 0.41", "peak 2.10 of 8.00 GiB", "step 119 stop", "keep")


@pytest.mark.parametrize("width, height", [(80, 24), (100, 30), (140, 45)])
def test_frame_fits_the_terminal_and_matches_golden(run_dir, width, height):
    text = frame_text(load_state(run_dir / "events.jsonl"), width, height=height)
    lines = text.splitlines()
    assert len(lines) <= height and all(len(line) <= width for line in lines)
    for fact in KEY_FACTS:  # step, loss, validation, memory against the budget, the last decision in full
        assert fact in text, fact
    check_golden(f"dashboard_{width}x{height}.txt", text)


def test_unbounded_frame_matches_golden(run_dir):
    check_golden("dashboard_100.txt", frame_text(load_state(run_dir / "events.jsonl"), 100))


def test_running_frame_at_80x24_shows_the_eta(run_dir):
    events, _ = read_events(run_dir / "events.jsonl")
    state = RunState()
    state.update_all(events[: len(events) // 2])  # mid-run: ETA and "updated ... ago" show
    text = frame_text(state, 80, now=state.last_time + 12.0, height=24)
    assert len(text.splitlines()) <= 24 and "ETA 0:02:15" in text and "updated 0:00:12 ago" in text
    assert "peak" in text and "of 8.00 GiB" in text and "val_mel_l1" in text
    check_golden("dashboard_running_80x24.txt", text)


def test_running_frame_with_injected_now_matches_golden(run_dir):
    events, _ = read_events(run_dir / "events.jsonl")
    state = RunState()
    state.update_all(events[: len(events) // 2])
    last = state.last_time
    check_golden("dashboard_running_100.txt", frame_text(state, 100, now=last + 12.0))


def test_frame_names_where_the_weights_came_from_and_went():
    state = RunState()
    init = {"path": "/data/GPT-SoVITS/GPT_SoVITS/pretrained_models/s1v3.ckpt", "sha256": "ab" * 32, "kind": "GPT-SoVITS s1 pretrained"}
    state.update({"kind": "start", "step": 0, "workload": "s1", "init": init, "total_steps": 10, "world_size": 2,
                  "micro_batch": 4, "accumulation": 1, "effective_batch": 8})
    state.update({"kind": "export", "step": 10, "source": "best", "files": ["export/GPT_weights_v2Pro/voice-e2.ckpt", "export/info.json"],
                  "copied_to": ["/data/GPT-SoVITS/GPT_weights_v2Pro/voice-e2.ckpt"]})
    text = frame_text(state, 140)
    assert "…/" in text and "pretrained_models/s1v3.ckpt" in text and "sha256 abababababababab" in text and "GPT-SoVITS s1 pretrained" in text
    assert "export     export/GPT_weights_v2Pro/voice-e2.ckpt" in text and "copied to  /data/GPT-SoVITS/GPT_weights_v2Pro/voice-e2" in text
    assert "copied to  /data/GPT-SoVITS/GPT_weights_v2Pro/voice-e2.ckpt" in frame_text(state, 160)
    assert "4 x 1 x 2 processes = 8" in text  # micro x accumulation x processes = effective
    assert state.summary()["init"] == init and state.summary()["export"]["copied_to"]
    for _ in range(6):  # a busy run: the figures are packed at 80x24, the init and export one line each
        state.update({"kind": "scale_lr", "step": 9, "policy": "oscillation", "reason": "no decrease"})
    state.update({"kind": "step", "step": 10, "losses": {"total": 2.0, "a": 1.0, "b": 1.0, "c": 1.0}, "lr": 1e-4,
                  "memory": {"peak_bytes": GIB, "budget_bytes": 8 * GIB}})
    small = frame_text(state, 80, height=24)
    assert len(small.splitlines()) <= 24 and "init       s1v3.ckpt · sha256 abababababab" in small, small
    assert "export     export/GPT_weights_v2Pro/voice-e2.ckpt · copied to" in small and "/data/GPT-SoVITS/GPT_weights_v2Pro/voice-e2.ckpt" in small
    start = format_event_line({"kind": "start", "step": 0, "workload": "s1", "init": init, "micro_batch": 4, "accumulation": 1,
                               "effective_batch": 8, "world_size": 2}, clock=False)
    assert "batch 4 x 1 x 2 processes = 8" in start and "init /data/GPT-SoVITS/GPT_SoVITS/pretrained_models/s1v3.ckpt" in start
    export = format_event_line({"kind": "export", "step": 10, "source": "best", "files": ["export/GPT_weights_v2Pro/voice-e2.ckpt"],
                                "copied_to": ["/g/GPT_weights_v2Pro/voice-e2.ckpt"]}, clock=False)
    assert export == "export step 10 (best): export/GPT_weights_v2Pro/voice-e2.ckpt; copied to /g/GPT_weights_v2Pro/voice-e2.ckpt"


def test_step_line_compares_the_budgets_own_peak_with_the_budget():
    """--emulate-vram: the emulated budget's peak against the budget, not the process's RSS."""
    event = {"kind": "step", "step": 3, "losses": {"total": 1.0}, "peak_memory_bytes": int(2.55 * GIB),
             "memory": {"used_bytes": 1000, "peak_bytes": int(0.5 * GIB), "budget_bytes": 2 * GIB, "source": "emulated"}}
    line = format_event_line(event, clock=False)
    assert "peak 0.50 GiB of 2.00 GiB emulated" in line and "2.55" not in line
    assert format_event_line({"kind": "step", "step": 3, "peak_memory_bytes": GIB}, clock=False).endswith("peak 1.00 GiB")


def test_frame_of_an_empty_run():
    text = frame_text(RunState(), 60)
    assert "waiting for events" in text and "none yet" in text


# --- plain lines ------------------------------------------------------------------------------
def test_plain_lines_match_golden(run_dir, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        events, _ = read_events(run_dir / "events.jsonl")
        lines = [format_event_line(e) for e in events if e["kind"] != "step" or e["step"] % 20 == 0]
        check_golden("dashboard_lines.txt", "\n".join(lines) + "\n")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_plain_line_without_clock_and_for_unknown_kinds():
    assert format_event_line({"kind": "mystery", "step": 9, "source": "best"}, clock=False) == "mystery step 9 source=best"
    line = format_event_line({"time": T0, "kind": "skip_step", "step": 3, "policy": "spike", "reason": "loss is nan"}, clock=False)
    assert line == "watchdog step 3 skip_step [spike]: loss is nan"


# --- drivers ----------------------------------------------------------------------------------
def test_dashboard_reads_incrementally(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write("start", 0, workload="s1", total_steps=10)
    dash = Dashboard(path, console=Console(file=io.StringIO(), width=100))
    assert [e["kind"] for e in dash.poll()] == ["start"]
    log.write("step", 1, losses={"total": 2.0})
    with open(path, "a") as f:
        f.write('{"time": 1, "kind": "st')  # a writer mid-append
    assert [e["kind"] for e in dash.poll()] == ["step"]
    assert dash.poll() == []  # the torn line waits
    log.close()
    assert dash.state.step == 1 and dash.state.status == "running"


def test_live_dashboard_returns_at_the_end_event(run_dir):
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system=None)
    state = Dashboard(run_dir / "events.jsonl", refresh_per_second=50, console=console).run()
    assert state.ended
    assert "ended  step 119/140" in out.getvalue() and "stopped: early_stop at step 119" in out.getvalue()


def test_plain_driver_prints_every_event_and_stops_when_told(run_dir):
    out = io.StringIO()
    events, _ = read_events(run_dir / "events.jsonl")
    dash = Dashboard(run_dir / "events.jsonl", refresh_per_second=50, console=Console(file=io.StringIO()))
    dash.run(plain=True, out=out)
    assert len(out.getvalue().splitlines()) == len(events)


def test_drivers_stop_when_the_run_is_gone_without_an_end_event(tmp_path):
    """A trainer killed mid-run writes no end event: `until` (the supervisor's child check) ends the view."""
    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        log.write("start", 0, workload="s1", total_steps=100)
        log.write("step", 1, losses={"total": 3.0})
    out = io.StringIO()
    state = Dashboard(path, refresh_per_second=50, console=Console(file=io.StringIO())).run(until=lambda: True, plain=True, out=out)
    assert not state.ended and len(out.getvalue().splitlines()) == 2
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    calls = iter([False, False, True])
    state = Dashboard(path, refresh_per_second=50, console=console).run(until=lambda: next(calls))
    assert state.status == "running" and state.step == 1


# --- the command ------------------------------------------------------------------------------
def test_command_once_in_a_real_process_matches_the_golden_frame(run_dir):
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "advisor", "dashboard", str(run_dir), "--once"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (GOLDEN / "dashboard_100.txt").read_text(encoding="utf-8")


def test_command_json(run_dir, capsys):
    assert cli.main(["dashboard", str(run_dir / "events.jsonl"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "ended" and summary["validation"]["best"] == 0.41
    assert summary["batch"] == {"micro": 2, "accumulation": 4, "effective": 8}
    assert summary["decisions"]["counts"]["stop"] == 1


def test_command_plain_lines_without_a_terminal(run_dir, capsys):
    assert cli.main(["dashboard", str(run_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "start s2 (tiny)" in out[0] and "end at step" in out[-1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["dashboard", "/nonexistent/run"], "/nonexistent/run: no such run directory"),
        (["dashboard", "{tmp}"], "no events.jsonl (expected a run directory written by `advisor train`)"),
        (["dashboard", "{run}", "--refresh", "0"], "--refresh: expected a rate > 0"),
    ],
)
def test_command_errors_are_one_line(argv, message, tmp_path, run_dir, capsys):
    argv = [a.format(tmp=tmp_path, run=run_dir) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
