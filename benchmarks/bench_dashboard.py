"""Dashboard cost on a long run: one frame with 100 000 events in the state.

    /work/venv/bin/python -m pytest benchmarks/bench_dashboard.py --benchmark-only -q

Target: a frame in <= 50 ms whatever the run length (the state keeps
downsampled series, not the events). Also measured: reading and applying the
whole file once (what `advisor dashboard` does when it attaches), and one
incremental poll. Results: benchmarks/results/watchdog.md.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from rich.console import Console

from advisor.dashboard import Dashboard, RunState, render
from trainer.events import EventLog, read_events

EVENTS = 100_000
GIB = 1024**3


@pytest.fixture(scope="module")
def events_path(tmp_path_factory):
    """A realistic long s1 run written by EventLog: steps, a val + checkpoint every 1000 steps, decisions."""
    path = tmp_path_factory.mktemp("run") / "events.jsonl"
    rng = np.random.default_rng(0)
    lr = {"gpt/decay": 2e-3, "gpt/no_decay": 2e-3}
    with EventLog(path) as log:
        log.write("start", 0, workload="s1", size="full", precision="fp16", slice_seconds=10.0, dpo=True, micro_batch=8,
                  accumulation=4, effective_batch=32, batch_source="measured", total_steps=120_000, epochs=50, metric_name="val_ce")
        written, step = 1, 0
        while written < EVENTS - 1:
            step += 1
            loss = 2.0 + 3.0 * math.exp(-step / 20_000) + rng.normal(0, 0.1)
            log.write("step", step, epoch=step // 2400, losses={"total": loss, "ce": loss * 0.8, "dpo": loss * 0.2}, lr=lr,
                      grad_norm={"gpt": 1.0 + rng.normal(0, 0.1)}, samples_per_s=41.3, audio_seconds_per_s=413.0,
                      peak_memory_bytes=int(6.1 * GIB), memory={"used_bytes": int(5.8 * GIB), "peak_bytes": int(6.1 * GIB),
                      "budget_bytes": 8 * GIB, "source": "pynvml"})
            written += 1
            if step % 1000 == 0:
                log.write("val", step, epoch=step // 2400, metric="val_ce", value=3.0 * math.exp(-step / 30_000) + 1.0)
                log.write("checkpoint", step, file=f"checkpoints/step-{step:06d}.pt", finite=True, best=True)
                written += 2
            if step % 997 == 0:
                log.write("skip_step", step, policy="spike", reason="loss 9.1 spiked above 3.2 (mean 2.5 + 6 sigma 0.11)")
                written += 1
        log.write("end", step, reason="epochs")
    return path


@pytest.fixture(scope="module")
def full_state(events_path) -> RunState:
    state = RunState()
    events, _ = read_events(events_path)
    assert len(events) == EVENTS
    state.update_all(events)
    return state


def test_frame_with_100k_events(benchmark, full_state):
    console = Console(file=io.StringIO(), width=120, color_system=None)

    def frame():
        console.file = io.StringIO()
        console.print(render(full_state, 120, now=full_state.last_time + 1.0))

    benchmark(frame)
    benchmark.extra_info["events"] = full_state.events


@pytest.mark.parametrize("fresh", [False, True], ids=["same_shape", "layout_search"])
def test_frame_fitted_to_80x24(benchmark, full_state, fresh):
    """A live frame fitted to a terminal: the layout is measured (5-8 renders) when the frame's
    shape changes, reused while it does not (the usual refresh)."""
    from advisor.dashboard import rich_view

    console = Console(file=io.StringIO(), width=80, height=24, color_system=None)

    def frame():
        if fresh:
            rich_view._CHOSEN.clear()
        console.file = io.StringIO()
        console.print(render(full_state, 80, now=full_state.last_time + 1.0, height=24))

    benchmark(frame)


def test_attach_read_and_apply_100k_events(benchmark, events_path):
    def attach():
        state = RunState()
        events, _ = read_events(events_path)
        state.update_all(events)
        return state

    state = benchmark.pedantic(attach, rounds=3, warmup_rounds=0)
    assert state.events == EVENTS


def test_incremental_poll_of_10_new_events(benchmark, events_path, tmp_path):
    """A live refresh: the file grows by 10 step events between polls."""
    live = tmp_path / "events.jsonl"
    live.write_bytes(events_path.read_bytes())
    dash = Dashboard(live, console=Console(file=io.StringIO(), width=120))
    dash.poll()
    log = EventLog(live)

    def grow_and_poll():
        for i in range(10):
            log.write("step", dash.state.step + 1, losses={"total": 2.0}, lr={"gpt/decay": 2e-3})
        return dash.poll()

    benchmark(grow_and_poll)
    log.close()
