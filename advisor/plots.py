"""The report's plots: one matplotlib (Agg) figure per view of a run's Record.

    Record --<name>_figure(r)--> Figure (its Axes readable by tests) --png(fig)--> PNG bytes

Scales are honest: linear y axes carry plain tick labels (no offset notation)
and span at least 1 % of the value, so a near-constant series draws flat and
the plot states its change as a number; log axes only where the values span
a ratio worth one (LR over 1.5x, losses over 20x).
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

from trainer.events import number

if TYPE_CHECKING:
    from advisor.report import Record

GIB = 1024**3
CUT_COLOUR, OOM_COLOUR, BEST_COLOUR, STOP_COLOUR = "crimson", "tab:red", "tab:green", "tab:purple"


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


def png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def _series(events: list[dict], get) -> tuple[list[float], list[float]]:
    """(steps, values) of the events whose value is finite."""
    xs, ys = [], []
    for e in events:
        y = get(e)
        if y is not None and math.isfinite(y) and isinstance(e.get("step"), int):
            xs.append(e["step"])
            ys.append(y)
    return xs, ys


MIN_RELATIVE_SPAN = 0.01  # a linear y axis spans at least 1 % of the values' mean magnitude
MIN_LOG_RATIO = 1.5  # an LR that changed less than this is drawn on a linear (honest) axis


def honest_y(ax, ys: list[float]) -> None:
    """A linear y axis that does not exaggerate: plain tick labels (no offset such as
    `1e-5+5.2849`), and never narrower than 1 % of the mean |value|, so a near-constant
    series draws flat; the change is then stated as a number on the plot."""
    if ax.get_yscale() != "linear" or not ys:
        return
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    low, high = min(ys), max(ys)
    span = MIN_RELATIVE_SPAN * sum(abs(y) for y in ys) / len(ys)
    if high - low >= span or span == 0:
        return
    middle = (low + high) / 2
    bottom, top = ax.get_ylim()
    ax.set_ylim(min(bottom, middle - span), max(top, middle + span))  # 2 % of the value: flat, as it is
    change = high - low
    text = f"range {low:.6g} to {high:.6g}: a change of {change:.2g} ({100 * change / max(abs(middle), 1e-300):.2g} %)"
    ax.text(0.01, 0.04, text, transform=ax.transAxes, fontsize=8, color="dimgrey")


def _log_if_positive(ax, ys: list[float]) -> None:
    if ys and min(ys) > 0 and max(ys) / min(ys) > 20:
        ax.set_yscale("log")
        _plain_ticks(ax)


def losses_figure(r: Record):
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
        honest_y(ax, every)
        _legend(ax)
    else:
        _empty(ax, "no step events")
    ax.set_ylabel("loss")
    return fig


def validation_figure(r: Record):
    fig, ax = _figure(f"validation: {r.metric} (lower is better)")
    xs, ys = _series(r.vals, lambda e: number(e.get("value")))
    if xs:
        ax.plot(xs, ys, marker="o", color="tab:blue", label=r.metric)
        best = r.best_val()
        if best is not None:
            ax.plot([best["step"]], [number(best["value"])], marker="*", markersize=16, color=BEST_COLOUR, linestyle="none",
                    label=f"best {number(best['value']):.4g} @ step {best['step']}")
        honest_y(ax, ys)
    else:
        _empty(ax, "no validation yet")
    stop = r.stop()
    if stop is not None:
        ax.axvline(stop["step"], color=STOP_COLOUR, linestyle="--", label=f"stop ({stop.get('policy') or 'watchdog'}) @ step {stop['step']}")
    _legend(ax)
    ax.set_ylabel(r.metric)
    return fig


def lr_figure(r: Record):
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
    if drawn and min(drawn) > 0 and max(drawn) / min(drawn) > MIN_LOG_RATIO:
        ax.set_yscale("log")
        _plain_ticks(ax)
    elif drawn:
        honest_y(ax, drawn)
    cuts = [d for d in r.decisions if d.get("kind") == "scale_lr"]
    for i, d in enumerate(cuts):
        factor = number(d.get("factor", (d.get("details") or {}).get("factor") if isinstance(d.get("details"), dict) else None))
        label = f"cut x{factor:g} ({d.get('policy') or 'watchdog'})" if factor is not None else f"cut ({d.get('policy') or 'watchdog'})"
        ax.axvline(d["step"], color=CUT_COLOUR, linestyle="--", linewidth=1.2, label=label if i < 4 else None)
    if not drawn:
        _empty(ax, "no step events")
    _legend(ax)
    ax.set_ylabel("LR")
    return fig


def memory_figure(r: Record):
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
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_ylabel("GiB")
    return fig


def _gib(v: float | None) -> float | None:
    return v / GIB if v is not None else None


def throughput_figure(r: Record):
    fig, ax = _figure("throughput")
    xs, sps = _series(r.steps, lambda e: number(e.get("samples_per_s")))
    ax.plot(xs, sps, color="tab:blue", label="samples / s")
    ax.set_ylabel("samples / s", color="tab:blue")
    ax.set_ylim(bottom=0)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax2 = ax.twinx()
    ax_, audio = _series(r.steps, lambda e: number(e.get("audio_seconds_per_s", e.get("audio_s_per_s"))))
    ax2.plot(ax_, audio, color="tab:orange", linewidth=1, linestyle="--", label="audio seconds / s (right)")
    ax2.set_ylabel("audio seconds / s", color="tab:orange")
    ax2.set_ylim(bottom=0)
    ax2.ticklabel_format(axis="y", useOffset=False, style="plain")
    if not xs:
        _empty(ax, "no step events")
    _legend(ax2, ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0], right=1.1)
    return fig


FIGURES = {"losses": losses_figure, "validation": validation_figure, "lr": lr_figure, "memory": memory_figure,
           "throughput": throughput_figure}
