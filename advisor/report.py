"""`advisor report RUN_DIR`: one self-contained HTML page of a run, from its events.jsonl.

    events.jsonl --read_run--> Record (per-kind lists) --plot_*--> PNG bytes --page--> RUN_DIR/report.html

Five plots, each a PNG embedded as base64 (the page opens anywhere, mailed or
copied): loss components; the validation metric with the best check and the
early stop marked; the LR of every group with each watchdog cut; memory against
the budget with the OOMs; throughput. Then the samples (RUN_DIR/samples/,
export/samples/), linked relative to the page so they play beside it.

matplotlib with the Agg backend (no display needed), imported on first use.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from trainer.events import DECISIONS, number, read_events

GIB = 1024**3
PLOTS = ("losses", "validation", "lr", "memory", "throughput")
CUT_COLOUR, OOM_COLOUR, BEST_COLOUR, STOP_COLOUR = "crimson", "tab:red", "tab:green", "tab:purple"


@dataclass
class Record:
    """A run's events, by what the plots need (x is always the optimiser step)."""

    start: dict = field(default_factory=dict)
    end: dict = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    vals: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    ooms: list[dict] = field(default_factory=list)
    restarts: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return str(self.start.get("metric_name") or (self.vals[0].get("metric") if self.vals else "") or "validation metric")

    def best_val(self) -> dict | None:
        finite = [v for v in self.vals if _finite(number(v.get("value")))]
        return min(finite, key=lambda v: number(v["value"])) if finite else None

    def stop(self) -> dict | None:
        """The decision that ended the run (early stop or another policy's stop), if one did."""
        stops = [d for d in self.decisions if d.get("kind") == "stop"]
        return stops[-1] if stops else None


def read_run(events_path: str | os.PathLike) -> Record:
    """Every event of the file, sorted into a Record (the one place the report reads events)."""
    events, _ = read_events(events_path)
    r = Record()
    lists = {"step": r.steps, "val": r.vals, "oom": r.ooms, "restart": r.restarts, "samples": r.samples}
    for e in events:
        kind = e.get("kind")
        if kind == "start" and not r.start:
            r.start = e
        elif kind == "end":
            r.end = e
        elif kind in DECISIONS:
            r.decisions.append(e)
        elif kind in lists:
            lists[kind].append(e)
    return r


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _series(events: list[dict], get) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for e in events:
        y = get(e)
        if _finite(y) and isinstance(e.get("step"), int):
            xs.append(e["step"])
            ys.append(y)
    return xs, ys


# --- plots ---------------------------------------------------------------------------------------
def _figure(title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_xlabel("optimiser step")
    ax.grid(True, alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    return fig, ax


def _legend(ax, handles=None, right: float = 1.01) -> None:
    """Outside the axes, on the right (past a twin axis's labels: `right`): never over a curve."""
    if handles is None:
        handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(right, 1.0), fontsize=8, frameon=False)


def _plain_ticks(ax) -> None:
    """Log axes labelled 0.0001, 20, 40 rather than 10^-4, 2x10^1."""
    from matplotlib.ticker import FuncFormatter

    def label(v: float, _) -> str:
        return f"{v:.3g}" if f"{v:.0e}"[0] in "125" else ""  # 1, 2, 5 per decade: readable, never crowded

    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(FuncFormatter(label))


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def _log_if_positive(ax, ys: list[float]) -> None:
    if ys and min(ys) > 0 and max(ys) / min(ys) > 20:
        ax.set_yscale("log")
        _plain_ticks(ax)


def plot_losses(r: Record) -> bytes:
    fig, ax = _figure("training losses (per component; total in bold)")
    names: list[str] = []
    for e in r.steps:
        for name in e.get("losses") or {}:
            if name not in names:
                names.append(name)
    names.sort(key=lambda n: n != "total")
    every = []
    for name in names[:10]:
        xs, ys = _series(r.steps, lambda e, n=name: number((e.get("losses") or {}).get(n)))
        ax.plot(xs, ys, label=name, linewidth=2.2 if name == "total" else 1.0, color="black" if name == "total" else None)
        every += ys
    if every:
        _log_if_positive(ax, every)
        _legend(ax)
    else:
        _empty(ax, "no step events")
    ax.set_ylabel("loss")
    return _png(fig)


def plot_validation(r: Record) -> bytes:
    fig, ax = _figure(f"validation: {r.metric} (lower is better)")
    xs, ys = _series(r.vals, lambda e: number(e.get("value")))
    if xs:
        ax.plot(xs, ys, marker="o", color="tab:blue", label=r.metric)
        best = r.best_val()
        if best is not None:
            ax.plot([best["step"]], [number(best["value"])], marker="*", markersize=16, color=BEST_COLOUR, linestyle="none",
                    label=f"best {number(best['value']):.4g} @ step {best['step']}")
    else:
        _empty(ax, "no validation yet")
    stop = r.stop()
    if stop is not None:
        ax.axvline(stop["step"], color=STOP_COLOUR, linestyle="--", label=f"stop ({stop.get('policy') or 'watchdog'}) @ step {stop['step']}")
    _legend(ax)
    ax.set_ylabel(r.metric)
    return _png(fig)


def plot_lr(r: Record) -> bytes:
    fig, ax = _figure("learning rate per group, with the watchdog's cuts")
    groups: list[str] = []
    for e in r.steps:
        lr = e.get("lr")
        for g in lr if isinstance(lr, dict) else ["lr"]:
            if g not in groups:
                groups.append(g)
    drawn = []
    styles = ("-", "--", ":", "-.")
    for i, g in enumerate(groups[:8]):  # groups often share an LR: thinner and dashed on top, so each shows
        xs, ys = _series(r.steps, lambda e, g=g: number(e["lr"].get(g)) if isinstance(e.get("lr"), dict) else number(e.get("lr")))
        ax.step(xs, ys, where="post", label=g, linewidth=max(3.0 - 0.8 * i, 1.0), linestyle=styles[i % len(styles)])
        drawn += ys
    if drawn and min(drawn) > 0:
        ax.set_yscale("log")
        _plain_ticks(ax)
    cuts = [d for d in r.decisions if d.get("kind") == "scale_lr"]
    for i, d in enumerate(cuts):
        factor = number(d.get("factor", (d.get("details") or {}).get("factor") if isinstance(d.get("details"), dict) else None))
        label = f"cut x{factor:g} ({d.get('policy') or 'watchdog'})" if factor is not None else f"cut ({d.get('policy') or 'watchdog'})"
        ax.axvline(d["step"], color=CUT_COLOUR, linestyle="--", linewidth=1.2, label=label if i < 4 else None)
    if not drawn:
        _empty(ax, "no step events")
    _legend(ax)
    ax.set_ylabel("LR")
    return _png(fig)


def plot_memory(r: Record) -> bytes:
    fig, ax = _figure("memory against the budget, with the OOMs")

    def mem(e, key):
        m = e.get("memory") if isinstance(e.get("memory"), dict) else {}
        v = number(m.get(key))
        return v / GIB if v is not None else None

    xs, peak = _series(r.steps, lambda e: mem(e, "peak_bytes") if mem(e, "peak_bytes") is not None else _gib(number(e.get("peak_memory_bytes"))))
    ax.plot(xs, peak, color="tab:blue", label="peak")
    ux, used = _series(r.steps, lambda e: mem(e, "used_bytes"))
    if used:
        ax.plot(ux, used, color="tab:cyan", linewidth=1, label="used")
    bx, budget = _series(r.steps, lambda e: mem(e, "budget_bytes"))
    if budget:
        ax.step(bx, budget, where="post", color="black", linestyle=":", linewidth=1.5, label=f"budget {budget[-1]:.2f} GiB")
    for i, o in enumerate(r.ooms):
        ax.axvline(o.get("step", 0), color=OOM_COLOUR, linewidth=1.5, label=f"OOM at micro-batch {o.get('micro_batch', '?')}" if i < 3 else None)
    if not xs:
        _empty(ax, "no memory figures in the step events")
    _legend(ax)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("GiB")
    return _png(fig)


def _gib(v: float | None) -> float | None:
    return v / GIB if v is not None else None


def plot_throughput(r: Record) -> bytes:
    fig, ax = _figure("throughput")
    xs, sps = _series(r.steps, lambda e: number(e.get("samples_per_s")))
    ax.plot(xs, sps, color="tab:blue", label="samples / s")
    ax.set_ylabel("samples / s", color="tab:blue")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax_, audio = _series(r.steps, lambda e: number(e.get("audio_seconds_per_s", e.get("audio_s_per_s"))))
    ax2.plot(ax_, audio, color="tab:orange", linewidth=1, linestyle="--", label="audio seconds / s (right)")
    ax2.set_ylabel("audio seconds / s", color="tab:orange")
    ax2.set_ylim(bottom=0)
    if not xs:
        _empty(ax, "no step events")
    _legend(ax2, ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0], right=1.1)
    return _png(fig)


# --- the page ----------------------------------------------------------------------------------
def sample_links(run_root: Path, page_dir: Path) -> list[tuple[str, list[str]]]:
    """(heading, [relative paths of the WAVs]) per samples folder: each validation's, then the export's."""
    out = []
    folders = sorted((run_root / "samples").glob("step_*")) if (run_root / "samples").is_dir() else []
    kept = run_root / "export" / "samples"
    for folder in folders + ([kept] if kept.is_dir() else []):
        wavs = sorted(folder.glob("*.wav"))
        if not wavs:
            continue
        if folder == kept:
            marker = kept / "step.txt"
            heading = "best checkpoint (export/samples)" + (f", step {marker.read_text().strip()}" if marker.is_file() else "")
        else:
            heading = f"step {int(folder.name.split('_')[1])}"
        out.append((heading, [os.path.relpath(w, page_dir) for w in wavs]))
    return out


def render_page(r: Record, plots: dict[str, bytes], samples: list[tuple[str, list[str]]], title: str) -> str:
    e = html.escape
    start, end = r.start, r.end
    facts = [
        ("workload", f"{start.get('workload', '?')} ({start.get('size', '?')}), {start.get('precision', '?')}"),
        ("batch", f"{start.get('micro_batch', '?')} x {start.get('accumulation', '?')} = {start.get('effective_batch', '?')}"),
        ("steps", f"{r.steps[-1]['step'] if r.steps else 0} of {start.get('total_steps', '?')} planned"),
        ("end", ": ".join(str(x) for x in (end.get("reason"), end.get("detail")) if x) or "still running (no end event)"),
    ]
    best = r.best_val()
    if best is not None:
        facts.append(("best", f"{r.metric} {number(best['value']):.4g} at step {best['step']}"))
    facts.append(("watchdog", ", ".join(f"{sum(1 for d in r.decisions if d.get('kind') == k)} {k}" for k in DECISIONS if any(d.get("kind") == k for d in r.decisions)) or "no decisions"))
    facts.append(("OOMs / restarts", f"{len(r.ooms)} / {len(r.restarts)}"))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "td{padding:2px 12px 2px 0;vertical-align:top}img{max-width:100%;border:1px solid #ddd}"
        "h2{margin-top:1.6em}audio{height:28px;vertical-align:middle}</style></head><body>",
        f"<h1>{e(title)}</h1><table>",
        *(f"<tr><td><b>{e(k)}</b></td><td>{e(v)}</td></tr>" for k, v in facts),
        "</table>",
    ]
    captions = {"losses": "Loss components", "validation": "Validation", "lr": "Learning rate",
                "memory": "Memory", "throughput": "Throughput"}
    for name in PLOTS:
        data = base64.b64encode(plots[name]).decode("ascii")
        parts.append(f"<h2 id='{name}'>{captions[name]}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    decisions = r.decisions + r.ooms + r.restarts
    if decisions:
        parts.append("<h2 id='decisions'>Watchdog decisions</h2><table>")
        for d in sorted(decisions, key=lambda d: (d.get("step", 0), number(d.get("time")) or 0)):
            what = d.get("reason") or d.get("error") or ""
            parts.append(f"<tr><td>step {e(str(d.get('step')))}</td><td>{e(str(d.get('kind')))}</td><td>{e(str(d.get('policy') or ''))}</td><td>{e(str(what))}</td></tr>")
        parts.append("</table>")
    parts.append("<h2 id='samples'>Samples</h2>")
    notes = [s.get("note") for s in r.samples if s.get("note")]
    if samples:
        for heading, wavs in samples:
            parts.append(f"<h3>{e(heading)}</h3><ul>")
            parts += [f"<li><audio controls preload='none' src='{e(w)}'></audio> <a href='{e(w)}'>{e(Path(w).name)}</a></li>" for w in wavs]
            parts.append("</ul>")
    else:
        parts.append(f"<p>{e(notes[-1] if notes else 'No samples in this run (validation.samples: 0, or no validation yet).')}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_root: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the page (default RUN_DIR/report.html, atomically); returns its path."""
    from trainer.atomic import atomic_write_bytes

    root = Path(run_root).resolve()
    events = root / "events.jsonl"
    if not events.is_file():
        raise ValueError(f"{root}: no events.jsonl (expected a run directory written by `advisor train`)")
    page = Path(out) if out is not None else root / "report.html"
    r = read_run(events)
    plots = {name: fn(r) for name, fn in zip(PLOTS, (plot_losses, plot_validation, plot_lr, plot_memory, plot_throughput))}
    page.parent.mkdir(parents=True, exist_ok=True)
    text = render_page(r, plots, sample_links(root, page.parent.resolve()), f"Run report: {root.name}")
    atomic_write_bytes(page, text.encode("utf-8"))
    return page
