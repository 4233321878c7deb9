"""The rich view: one frame from a RunState (pure: state in, renderable out, fixed size)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from advisor.dashboard.format import GIB, bar, curve, duration, fmt, gib, sparkline, table_source
from advisor.dashboard.state import RunState
from trainer.events import number

SIDE_BY_SIDE = 96  # from this console width on, curves and figures share a row


def render(state: RunState, width: int = 100, now: float | None = None) -> RenderableType:
    """One dashboard frame for a console `width` wide; `now` (unix s) adds "updated ... ago"."""
    if width >= SIDE_BY_SIDE:
        left = round(width * 0.58)
        body = Table.grid(padding=(0, 1))
        body.add_column(width=left)
        body.add_column(width=width - left - 1)
        body.add_row(render_curves(state, left), render_figures(state, width - left - 1))
    else:
        body = Group(render_curves(state, width), render_figures(state, width))
    return Group(render_header(state, width, now), body, render_decisions(state))


def render_header(state: RunState, width: int, now: float | None = None) -> Panel:
    r = state.run
    title = " · ".join(
        x
        for x in (
            f"{r.get('workload', '?')} ({r['size']})" if r.get("size") else str(r.get("workload", "run")),
            str(r["precision"]) if r.get("precision") else "",
            f"{fmt(number(r.get('slice_seconds')), 3)} s slices" if r.get("slice_seconds") is not None else "",
            "DPO" if r.get("dpo") else "",
            table_source(r),
        )
        if x
    )
    status = {"waiting": "waiting for events", "running": "running", "restarting": "restarting"}.get(state.status, "ended")
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(status, style="bold")
    total = state.total_steps
    line.append(f"  step {state.step}" + (f"/{total}" if total else ""))
    if total:
        line.append(f"  {bar(state.step / total, max(10, width // 6))} {100 * state.step / total:3.0f}%")
    if state.epoch is not None:
        line.append(f"  epoch {state.epoch}" + (f"/{state.epochs}" if state.epochs else ""))
    line.append(f"  elapsed {duration(state.elapsed_s())}")
    if not state.ended:
        line.append(f"  ETA {duration(state.eta_s())}")
    rows = [line]
    if state.ended:
        rows.append(Text(state.end_reason, no_wrap=True, overflow="ellipsis"))
    subtitle = None
    if now is not None and state.last_time is not None:
        subtitle = f"updated {duration(max(now - state.last_time, 0.0))} ago"
    return Panel(Group(*rows), title=title, title_align="left", subtitle=subtitle, subtitle_align="right")


def render_curves(state: RunState, width: int) -> Panel:
    """Loss components and the validation metric: name, sparkline, last value, min/best."""
    name_w, last_w, note_w = 10, 8, 14
    spark = max(8, width - 4 - name_w - last_w - note_w - 3)  # 4: border and padding; 3: gaps
    t = Table.grid(padding=(0, 1))
    t.add_column(width=name_w, no_wrap=True, overflow="ellipsis")
    t.add_column(width=spark, no_wrap=True)
    t.add_column(width=last_w, justify="right", no_wrap=True, overflow="ellipsis")
    t.add_column(width=note_w, no_wrap=True, overflow="ellipsis")
    for name, series in list(state.losses.items())[:8]:
        t.add_row(name, sparkline(series.values(), spark), fmt(series.last), f"min {fmt(series.low)}")
    if not state.losses:
        t.add_row("loss", "-", "", "")
    if state.metric_name or state.val.count:
        best = state.val_best
        note = f"best {fmt(best[1])} @{best[0]}" if best else ""
        t.add_row(state.metric_name or "val", sparkline(state.val.values(), spark), fmt(state.val.last), note)
    if state.nonfinite_steps:
        t.add_row("non-finite", "", str(state.nonfinite_steps), "steps")
    if state.val.count >= 2:  # the metric as a real curve, under the sparklines, on the same columns
        for label, row in zip(_axis_labels(state), curve(state.val.values(), spark, VAL_ROWS)):
            t.add_row("", row, label, "")
    return Panel(t, title="losses", title_align="left")


VAL_ROWS = 4  # height of the validation curve


def _axis_labels(state: RunState) -> list[str]:
    """The curve's y axis: its top and bottom values beside the first and last rows."""
    values = state.val.values()
    return [fmt(max(values))] + [""] * (VAL_ROWS - 2) + [fmt(min(values))]


def render_figures(state: RunState, width: int) -> Panel:
    """LR, gradient norm, batch, speed, memory against the budget, latest checkpoint."""
    t = Table.grid(padding=(0, 1))
    t.add_column(width=10, no_wrap=True, style="bold")
    t.add_column(width=max(8, width - 4 - 11), no_wrap=True, overflow="ellipsis")
    lrs = list(state.lr.items())
    for i, (group, value) in enumerate(lrs[:3]):
        t.add_row("lr" if i == 0 else "", f"{fmt(value, 3)} {group}")
    if len(lrs) > 3:
        t.add_row("", f"+{len(lrs) - 3} more groups")
    if not lrs:
        t.add_row("lr", "-")
    if state.lr_curve.count > 1:
        t.add_row("", sparkline(state.lr_curve.values(), 20) + " (log)")
    t.add_row("grad norm", fmt(state.grad_norm, 3))
    t.add_row("batch", _batch_text(state))
    t.add_row("speed", f"{fmt(state.samples_per_s, 3)} samples/s")
    t.add_row("", f"{fmt(state.audio_per_s, 3)} audio s/s")
    t.add_row("", f"{fmt(state.steps_per_s(), 3)} steps/s")
    for i, text in enumerate(_memory_lines(state)):
        t.add_row("memory" if i == 0 else "", text)
    ckpt = state.last_checkpoint
    if ckpt:
        flags = ", ".join(x for x in ("best" if ckpt.get("best") else "", "NOT finite" if ckpt.get("finite") is False else "") if x)
        t.add_row("checkpoint", f"step {ckpt.get('step')}" + (f" ({flags})" if flags else "") + f", {state.checkpoints} saved")
    for i, text in enumerate(samples_lines(state)):
        t.add_row("samples" if i == 0 else "", text)
    return Panel(t, title="run", title_align="left")


def samples_lines(state: RunState) -> list[str]:
    """Where to listen: the latest validation's WAVs and the best checkpoint's copy (none before the first)."""
    s = state.samples
    if not s:
        return []
    if not s.get("folder"):
        return [str(s.get("note") or "none")]
    lines = [f"{s['folder']}/ ({s.get('files', 0)} WAVs, step {s.get('step')})"]
    if s.get("note"):
        lines.append(str(s["note"]))
    if state.best_samples:
        lines.append(f"best: {state.best_samples}/")
    return lines


def _batch_text(state: RunState) -> str:
    micro, acc, eff = state.micro_batch, state.accumulation, state.effective_batch
    if micro is None:
        return "-"
    text = f"{micro} x {acc if acc is not None else '?'}"
    return text + (f" = {eff} effective" if eff is not None else "")


def _memory_lines(state: RunState) -> list[str]:
    """Up to three short lines: used and peak; a bar against the budget; the run's max peak and source."""
    first = ", ".join(
        x
        for x in (
            f"{state.memory_used / GIB:.2f} used" if state.memory_used is not None else "",
            f"peak {state.memory_peak / GIB:.2f}" if state.memory_peak is not None else "",
        )
        if x
    )
    lines = [f"{first} GiB" if first else "-"]
    if state.memory_budget:
        used = max(state.memory_used or 0.0, state.memory_peak or 0.0)  # the peak is what runs out
        lines.append(f"{bar(used / state.memory_budget, 8)} {100 * used / state.memory_budget:.0f}% of {gib(state.memory_budget)}")
    last = []
    if state.memory_peak_max is not None:
        last.append(f"max {gib(state.memory_peak_max)}")
    if state.memory_source:
        last.append(f"({state.memory_source})")
    if last:
        lines.append(" ".join(last))
    return lines


def render_decisions(state: RunState, rows: int = 6) -> Panel:
    """The latest watchdog decisions (and OOMs, restarts, resumes), one line each, newest last."""
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(justify="right", no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    recent = list(state.decisions)[-rows:]
    for d in recent:
        t.add_row(f"step {d.step}" if d.step is not None else "", d.kind, d.policy, d.reason)
    if not recent:
        t.add_row("", "none yet", "", "")
    counts = ", ".join(f"{n} {k}" for k, n in state.decision_counts.items())
    extra = [x for x in (counts, f"{state.ooms} OOM" if state.ooms else "", f"{state.restarts} restarts" if state.restarts else "") if x]
    title = "watchdog" + (f" ({'; '.join(extra)})" if extra else "")
    return Panel(t, title=title, title_align="left")

