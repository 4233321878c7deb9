"""The rich view: one frame from a RunState (pure: state in, renderable out).

Laid out for 80x24 first. What must always show: step/total and the ETA,
the losses and the validation metric, memory against the budget and the last
watchdog decision; a long text (the end reason, the last decision's reason)
wraps, never loses its end. A taller terminal adds the validation curve, one
figure per row, where the weights came from and went, and more decisions;
from 96 columns the curves and figures share a row.

    render(state, width, now, height) -> the richest Layout whose frame fits `height`
    rows (height None: the richest, as `advisor dashboard --once` prints into a file)
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from advisor.dashboard.format import GIB, axis, bar, curve, duration, fmt, gib, span_labels, sparkline
from advisor.dashboard.provenance import provenance_rows
from advisor.dashboard.state import RunState
from trainer.events import number

SIDE_BY_SIDE = 96  # from this console width on, curves and figures share a row
LR_MIN_SPAN = 0.30103  # log10(2): an LR change under 2x draws less than full height (the LR curve is log10)


@dataclass(frozen=True)
class Layout:
    """What a frame holds; `render` picks the richest one that fits the terminal."""

    val_rows: int = 4  # rows of the validation curve (0: none)
    full_figures: bool = True  # one figure per row (else packed into four lines)
    provenance: bool = True  # the init file and the exports
    losses: int = 8  # loss rows (total first)
    decisions: int = 6  # watchdog lines (the newest wraps)


RICHEST = Layout()
FALLBACKS = (  # tried in order when the richest does not fit
    Layout(val_rows=0, decisions=1),
    Layout(val_rows=0, full_figures=False, decisions=1),
    Layout(val_rows=0, full_figures=False, provenance=False, decisions=1),
    Layout(val_rows=0, full_figures=False, provenance=False, losses=1, decisions=1),
)
MAX_DECISIONS, MAX_VAL_ROWS = 8, 8


def render(state: RunState, width: int = 100, now: float | None = None, height: int | None = None) -> RenderableType:
    """One dashboard frame for a console `width` x `height`; `now` (unix s) adds "updated ... ago"."""
    if height is None:
        return frame(state, width, now, RICHEST)
    key = shape(state, width, height)
    layout = _CHOSEN.get(key)
    if layout is None:
        layout = choose(state, width, now, height)
        if len(_CHOSEN) >= 64:
            _CHOSEN.clear()
        _CHOSEN[key] = layout
    return frame(state, width, now, layout)


_CHOSEN: dict[tuple, Layout] = {}  # shape -> layout: a frame's rows are measured (5-8 renders) only when its shape changes


def shape(state: RunState, width: int, height: int) -> tuple:
    """Everything a frame's height depends on; numbers that change every step (their digits
    can wrap a packed line) enter as the lengths of the texts they make."""
    newest = state.decisions[-1] if state.decisions else None
    return (width, height, state.status, state.end_reason, len(state.losses), min(len(state.decisions), MAX_DECISIONS),
            newest and (newest.kind, newest.policy, newest.reason), state.val.count >= 2, state.nonfinite_steps > 0,
            tuple(len(text) for _, text in _packed_rows(state)), tuple(len(text) for _, text in _figure_rows(state)),
            tuple(provenance_rows(state, width)), len(status_line(state, width - 4).plain), len(samples_lines(state)))


def choose(state: RunState, width: int, now: float | None, height: int) -> Layout:
    """The richest layout whose frame fits `height` rows, then spare rows to older decisions, to
    what the fallback dropped (loss rows, where the weights came from and went) and to a
    (taller) validation curve."""
    layout = FALLBACKS[-1]
    for candidate in (RICHEST, *FALLBACKS):
        if rows(frame(state, width, now, candidate), width) <= height:
            layout = candidate
            break
    best = frame(state, width, now, layout)
    spare = height - rows(best, width)
    older = max(len(state.decisions) - 1, 0)  # each older decision is one line
    wanted = 1 + min(spare, older, MAX_DECISIONS - 1)  # older lines can widen the columns: check
    while wanted > layout.decisions:
        candidate = frame(state, width, now, replace(layout, decisions=wanted))
        if rows(candidate, width) <= height:
            layout, best = replace(layout, decisions=wanted), candidate
            break
        wanted -= 1
    for richer in (replace(layout, losses=RICHEST.losses), replace(layout, provenance=True)):  # what a fallback dropped
        if richer != layout:
            candidate = frame(state, width, now, richer)
            if rows(candidate, width) <= height:
                layout, best = richer, candidate
    while state.val.count >= 2 and layout.val_rows < MAX_VAL_ROWS:  # then a (taller) validation curve
        taller = replace(layout, val_rows=max(layout.val_rows + 2, 4))
        candidate = frame(state, width, now, taller)
        if rows(candidate, width) > height:
            break
        layout, best = taller, candidate
    return layout


def rows(renderable: RenderableType, width: int) -> int:
    """How many terminal rows `renderable` takes at `width` columns."""
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    return len(console.render_lines(renderable, console.options, pad=False))


def frame(state: RunState, width: int, now: float | None, layout: Layout) -> RenderableType:
    if width >= SIDE_BY_SIDE:
        left = round(width * 0.58)
        body = Table.grid(padding=(0, 1))
        body.add_column(width=left)
        body.add_column(width=width - left - 1)
        body.add_row(render_curves(state, left, layout), render_figures(state, width - left - 1, layout))
    else:
        body = Group(render_curves(state, width, layout), render_figures(state, width, layout))
    return Group(render_header(state, width, now), body, render_decisions(state, layout.decisions))


# --- header ----------------------------------------------------------------------------------------
def render_header(state: RunState, width: int, now: float | None = None) -> Panel:
    r = state.run
    title = " · ".join(
        x
        for x in (
            f"{r.get('workload', '?')} ({r['size']})" if r.get("size") else str(r.get("workload", "run")),
            str(r["version"]) if r.get("version") else "",
            str(r["precision"]) if r.get("precision") else "",
            f"{fmt(number(r.get('slice_seconds')), 3)} s slices" if r.get("slice_seconds") is not None else "",
            "DPO" if r.get("dpo") else "",
            f"batch from {r['batch_source']}" if r.get("batch_source") else "",
        )
        if x
    )
    lines = [status_line(state, width - 4)]
    if state.ended:
        lines.append(Text(end_text(state)))  # wraps: the reason is the point
    subtitle = None
    if now is not None and state.last_time is not None:
        subtitle = f"updated {duration(max(now - state.last_time, 0.0))} ago"
    return Panel(Group(*lines), title=title, title_align="left", subtitle=subtitle, subtitle_align="right")


def end_text(state: RunState) -> str:
    """Why the run ended; a watchdog stop names its policy and points at its reason below
    (the watchdog panel shows the newest decision in full) rather than saying it twice."""
    last = state.decisions[-1] if state.decisions else None
    if last is not None and last.kind == "stop" and last.reason and state.end_reason.endswith(last.reason):
        return f"{state.end_reason[: -len(last.reason)].rstrip(': ')} at step {last.step} (why: the watchdog's last decision)"
    return state.end_reason


def status_line(state: RunState, width: int) -> Text:
    """status, step/total, a progress bar in the room left, epoch, elapsed, ETA (wraps, never cut)."""
    total = state.total_steps
    status = {"waiting": "waiting for events", "running": "running", "restarting": "restarting"}.get(state.status, "ended")
    step = f"step {state.step}" + (f"/{total}" if total else "")
    percent = f"{100 * state.step / total:3.0f}%" if total else ""
    tail = [f"epoch {state.epoch}" + (f"/{state.epochs}" if state.epochs else "") if state.epoch is not None else "",
            f"elapsed {duration(state.elapsed_s())}", "" if state.ended else f"ETA {duration(state.eta_s())}"]
    tail_text = "  ".join(x for x in tail if x)
    room = width - len(status) - len(step) - len(percent) - len(tail_text) - 8  # 8: the gaps
    line = Text()
    line.append(status, style="bold")
    line.append(f"  {step}")
    if total:
        bar_width = min(room, max(10, width // 6))
        line.append(f"  {bar(state.step / total, bar_width)} {percent}" if bar_width >= 6 else f" {percent.strip()}")
    line.append(f"  {tail_text}")
    return line


# --- losses and validation ------------------------------------------------------------------------
def render_curves(state: RunState, width: int, layout: Layout = RICHEST) -> Panel:
    """Loss components and the validation metric: name, sparkline, last value, min/best."""
    name_w, last_w, note_w = 10, 8, 15
    spark = max(8, width - 4 - name_w - last_w - note_w - 3)  # 4: border and padding; 3: gaps
    t = Table.grid(padding=(0, 1))
    t.add_column(width=name_w, no_wrap=True, overflow="ellipsis")
    t.add_column(width=spark, no_wrap=True)
    t.add_column(width=last_w, justify="right", no_wrap=True)
    t.add_column(width=note_w)  # wraps rather than cut
    for name, series in list(state.losses.items())[: layout.losses]:
        t.add_row(name, sparkline(series.values(), spark), fmt(series.last), f"min {fmt(series.low)}")
    if len(state.losses) > layout.losses > 1:
        t.add_row("", f"+{len(state.losses) - layout.losses} more", "", "")
    if not state.losses:
        t.add_row("loss", "-", "", "")
    if state.metric_name or state.val.count:
        best = state.val_best
        note = f"best {fmt(best[1])} @{best[0]}" if best else ""
        t.add_row(state.metric_name or "val", sparkline(state.val.values(), spark), fmt(state.val.last), note)
    if state.nonfinite_steps:
        t.add_row("non-finite", "", str(state.nonfinite_steps), "steps")
    if state.val.count >= 2 and layout.val_rows >= 2:  # the metric as a real curve, on the same columns
        scale = axis(state.val.values())
        for label, row in zip(_axis_labels(scale, layout.val_rows), curve(state.val.values(), spark, layout.val_rows, scale)):
            t.add_row("", row, label, "")
    return Panel(t, title="losses", title_align="left")


def _axis_labels(scale: tuple[float, float], height: int) -> list[str]:
    """The curve's y axis: the top and bottom of its scale (at least 1 % of the value wide,
    so a near-constant metric reads as the flat line it is) beside the first and last rows."""
    low, high = scale
    top, bottom = span_labels(low, high)
    return [top] + [""] * (height - 2) + [bottom]


# --- figures -------------------------------------------------------------------------------------
def render_figures(state: RunState, width: int, layout: Layout = RICHEST) -> Panel:
    """LR, gradient norm, batch, speed, memory against the budget, latest checkpoint, samples,
    where the weights came from and went: one per row, or packed into four lines."""
    t = Table.grid(padding=(0, 1))
    t.add_column(width=10, no_wrap=True, style="bold")
    t.add_column(width=max(8, width - 4 - 11), overflow="fold")  # wraps (long paths fold) rather than cut
    for label, text in (_figure_rows if layout.full_figures else _packed_rows)(state):
        t.add_row(label, text)
    if layout.provenance:
        for label, text in provenance_rows(state, max(8, width - 4 - 11), packed=not layout.full_figures):
            t.add_row(label, text)
    return Panel(t, title="run", title_align="left")


def _figure_rows(state: RunState) -> list[tuple[str, str]]:
    out = []
    lrs = list(state.lr.items())
    for i, (group, value) in enumerate(lrs[:3]):
        out.append(("lr" if i == 0 else "", f"{fmt(value, 3)} {group}"))
    if len(lrs) > 3:
        out.append(("", f"+{len(lrs) - 3} more groups"))
    if not lrs:
        out.append(("lr", "-"))
    if state.lr_curve.count > 1:
        out.append(("", sparkline(state.lr_curve.values(), 20, min_span=LR_MIN_SPAN) + " (log)"))
    out += [("grad norm", fmt(state.grad_norm, 3)), ("batch", _batch_text(state)),
            ("speed", f"{fmt(state.samples_per_s, 3)} samples/s"), ("", f"{fmt(state.audio_per_s, 3)} audio s/s"),
            ("", f"{fmt(state.steps_per_s(), 3)} steps/s")]
    out += [("memory" if i == 0 else "", text) for i, text in enumerate(_memory_lines(state))]
    if state.last_checkpoint:
        out.append(("checkpoint", _checkpoint_text(state)))
    out += [("samples" if i == 0 else "", text) for i, text in enumerate(samples_lines(state))]
    return out


def _packed_rows(state: RunState) -> list[tuple[str, str]]:
    """The figures in four lines, the key fact of each first (80x24)."""
    lrs = list(state.lr.items())
    lr = f"{fmt(lrs[0][1], 3)} {lrs[0][0]}" + (f" (+{len(lrs) - 1})" if len(lrs) > 1 else "") if lrs else "-"
    out = [
        ("lr", f"{lr} · grad {fmt(state.grad_norm, 3)} · batch {_batch_text(state)}"),
        ("speed", f"{fmt(state.samples_per_s, 3)} samples/s · {fmt(state.audio_per_s, 3)} audio s/s · {fmt(state.steps_per_s(), 3)} steps/s"),
        ("memory", " · ".join(_memory_lines(state, bar_width=0))),
    ]
    saved = [x for x in (f"step {_checkpoint_text(state)}"[5:] if state.last_checkpoint else "", " ".join(samples_lines(state)[:1])) if x]
    if saved:
        out.append(("checkpoint" if state.last_checkpoint else "samples", " · ".join(saved)))
    return out


def _checkpoint_text(state: RunState) -> str:
    ckpt = state.last_checkpoint
    flags = ", ".join(x for x in ("best" if ckpt.get("best") else "", "NOT finite" if ckpt.get("finite") is False else "") if x)
    return f"step {ckpt.get('step')}" + (f" ({flags})" if flags else "") + f", {state.checkpoints} saved"


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
    """micro x accumulation (x processes) = effective: the samples of one optimiser step."""
    micro, acc, eff = state.micro_batch, state.accumulation, state.effective_batch
    if micro is None:
        return "-"
    world = state.world_size
    text = f"{micro} x {acc if acc is not None else '?'}" + (f" x {world} processes" if world and world > 1 else "")
    return text + (f" = {eff}" if eff is not None else "") + (f" (bucket {state.bucket})" if state.bucket is not None else "")


def _memory_lines(state: RunState, bar_width: int = 8) -> list[str]:
    """Peak against the budget first (what runs out), then used, the run's max and the source."""
    lines = []
    if state.memory_budget:
        used = max(state.memory_used or 0.0, state.memory_peak or 0.0)  # the peak is what runs out
        drawn = f" {bar(used / state.memory_budget, bar_width)}" if bar_width else ""
        lines.append(f"peak {used / GIB:.2f} of {gib(state.memory_budget)}{drawn} {100 * used / state.memory_budget:.0f}%")
    elif state.memory_peak is not None:
        lines.append(f"peak {gib(state.memory_peak)}")
    rest = [
        f"{state.memory_used / GIB:.2f} used" if state.memory_used is not None else "",
        f"max {state.memory_peak_max / GIB:.2f}" if state.memory_peak_max is not None else "",
        f"({state.memory_source})" if state.memory_source else "",
    ]
    if any(rest):
        lines.append(" ".join(x for x in rest if x))
    return lines or ["-"]


# --- watchdog -------------------------------------------------------------------------------------
def render_decisions(state: RunState, rows: int = 6) -> Panel:
    """The latest watchdog decisions (and OOMs, restarts, resumes), newest last: older ones one
    line each (abbreviated), the newest in full (wrapped)."""
    t = Table.grid(padding=(0, 1), expand=True)
    t.add_column(justify="right", no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(no_wrap=True)
    t.add_column(ratio=1)
    recent = list(state.decisions)[-max(rows, 1):]
    for i, d in enumerate(recent):
        newest = i == len(recent) - 1
        reason = Text(d.reason) if newest else Text(d.reason, no_wrap=True, overflow="ellipsis")
        t.add_row(f"step {d.step}" if d.step is not None else "", d.kind, d.policy, reason)
    if not recent:
        t.add_row("", "none yet", "", "")
    counts = ", ".join(f"{n} {k}" for k, n in state.decision_counts.items())
    extra = [x for x in (counts, f"{state.ooms} OOM" if state.ooms else "", f"{state.restarts} restarts" if state.restarts else "") if x]
    title = "watchdog" + (f" ({'; '.join(extra)})" if extra else "")
    return Panel(t, title=title, title_align="left")
