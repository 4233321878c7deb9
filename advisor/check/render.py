"""`advisor check`'s output: the terminal table (worst first) and the HTML page.

The page follows `advisor report`'s (advisor/report.py): one self-contained file,
plots as PNGs embedded in base64 (matplotlib, Agg backend, imported on first use):
histograms of duration, loudness (LUFS) and SNR (dB) with the thresholds marked.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from advisor.check.result import CheckResult

STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}
CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
       "td,th{padding:2px 10px 2px 0;vertical-align:top;text-align:left}img{max-width:100%;border:1px solid #ddd}"
       ".error{color:#b00020;font-weight:bold}.warning{color:#a36500}.info{color:#666}")
HISTOGRAMS = (("seconds", "Duration", "s"), ("loudness_lufs", "Loudness (BS.1770 integrated)", "LUFS"), ("snr_db", "SNR (WADA)", "dB"))


def headline(r: CheckResult) -> str:
    s = r.summary()
    w = s["clips_with"]
    return (f"{s['data']} ({s['kind']}): {s['clips']} clips, {s['seconds']:.1f} s; {s['clean_clips']} clean; "
            f"clips with errors {w['error']}, warnings {w['warning']}, notes {w['info']}")


def print_report(r: CheckResult, console, limit: int) -> None:
    from rich.table import Table

    s = r.summary()
    console.print(headline(r), markup=False, highlight=False)
    if s["note"]:
        console.print(f"note: {s['note']}", markup=False, highlight=False)
    if s["experiment"]:
        console.print(f"trainable versions: {', '.join(s['experiment']['versions'])} ({s['experiment']['versions_note']})", markup=False, highlight=False)
    if r.findings:
        table = Table(show_lines=False, pad_edge=False, box=None, header_style="bold")
        table.add_column("severity", no_wrap=True)
        table.add_column("clip", overflow="fold", max_width=36)
        table.add_column("check", no_wrap=True)
        table.add_column("value", no_wrap=True, max_width=14, overflow="ellipsis")
        table.add_column("threshold", no_wrap=True, max_width=28, overflow="ellipsis")
        table.add_column("reason", overflow="fold", ratio=1, min_width=30)
        for f in r.findings[:limit]:
            table.add_row(f"[{STYLE[f.severity]}]{f.severity}[/]", _plain(f.clip), f.check, _plain(_short(f.value)), _plain(_short(f.threshold)), _plain(f.reason))
        console.print(table)
        if len(r.findings) > limit:
            console.print(f"... {len(r.findings) - limit} more findings (--limit, or --json for all)")
        console.print("clips per check: " + "; ".join(f"{check} {', '.join(f'{n} {sev}' for sev, n in by.items())}" for check, by in s["counts"].items()),
                      markup=False, highlight=False)
    for line in training_lines(r):
        console.print(line, markup=False, highlight=False)


def training_lines(r: CheckResult) -> list[str]:
    out = []
    for p in r.plans:
        if "error" in p:
            out.append(f"batch plan {p['workload']}: {p['error']}")
            continue
        line = (f"batch plan {p['workload']} on {p['vram_bytes'] / 1024**3:g} GiB: `advisor train` pads every batch to the slice, so the longest clip "
                f"({p['longest_clip']}, {p['longest_seconds']:.1f} s) sets every batch: max batch {p['max_batch_size']}")
        out.append(line + (f"; {p['warning']}" if p["warning"] else ""))
    if r.plans:
        out.append(f"watchdog: {r.summary()['training']['watchdog']}")
    for a in r.advice:
        out.append(f"advice: {a.text} (because of: {', '.join(a.because)}; {a.source}: \"{a.quote}\")")
    return out


def _short(value, width: int = 40) -> str:
    if value is None:
        return ""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _plain(text: str) -> str:
    return text.replace("[", r"\[")


def histogram(r: CheckResult, key: str, title: str, unit: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [getattr(m.audio, key) for m in r.measured]
    values = [v for v in values if math.isfinite(v)]
    fig, ax = plt.subplots(figsize=(6.4, 2.6), dpi=100)
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(unit)
    ax.set_ylabel("clips")
    if values:
        ax.hist(values, bins=min(40, max(5, len(values) // 3)), color="tab:blue", alpha=0.8)
    else:
        ax.text(0.5, 0.5, "no clip measured", ha="center", va="center", transform=ax.transAxes)
    t = r.thresholds
    marks = {"seconds": [t.min_seconds, t.long_seconds], "snr_db": [t.snr_db]}.get(key, [])
    if key == "loudness_lufs" and "loudness" in r.stats:
        median = r.stats["loudness"]["median_lufs"]
        marks = [median - t.loudness_lu, median + t.loudness_lu]
    for x in marks:
        ax.axvline(x, color="crimson", linestyle="--", linewidth=1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def render_page(r: CheckResult) -> str:
    e = html.escape
    s = r.summary()
    parts = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>Dataset check: {e(Path(s['data']).name)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>Dataset check: {e(s['data'])}</h1><p>{e(headline(r))}</p>"]
    if s["note"]:
        parts.append(f"<p>Note: {e(s['note'])}</p>")
    if s["experiment"]:
        parts.append(f"<p>Trainable versions: <b>{e(', '.join(s['experiment']['versions']))}</b> ({e(s['experiment']['versions_note'])})</p>")
    parts.append("<h2 id='training'>What it means for training</h2><ul>")
    parts += [f"<li>{e(line)}</li>" for line in training_lines(r)] or ["<li>nothing to change</li>"]
    parts.append("</ul><h2 id='counts'>Clips per check</h2><table><tr><th>check</th><th>clips</th></tr>")
    parts += [f"<tr><td>{e(c)}</td><td>{e(', '.join(f'{n} {sev}' for sev, n in by.items()))}</td></tr>" for c, by in s["counts"].items()]
    parts.append("</table>")
    for key, title, unit in HISTOGRAMS:
        data = base64.b64encode(histogram(r, key, title, unit)).decode("ascii")
        parts.append(f"<h2 id='{key}'>{e(title)}</h2><img alt='{key}' src='data:image/png;base64,{data}'>")
    parts.append("<h2 id='findings'>Findings, worst first</h2><table><tr><th>severity</th><th>clip</th><th>check</th><th>value</th><th>threshold</th><th>reason</th></tr>")
    parts += [f"<tr><td class='{f.severity}'>{f.severity}</td><td>{e(f.clip)}</td><td>{e(f.check)}</td><td>{e(_short(f.value))}</td>"
              f"<td>{e(_short(f.threshold))}</td><td>{e(f.reason)}</td></tr>" for f in r.findings]
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_page(r: CheckResult, path: str | Path) -> Path:
    from trainer.atomic import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, render_page(r).encode("utf-8"))
    return path
