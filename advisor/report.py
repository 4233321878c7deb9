"""`advisor report RUN_DIR`: one self-contained HTML page of a run, from its events.jsonl.

    events.jsonl --read_run--> Record (per-kind lists) --plot_*--> PNG bytes --page--> RUN_DIR/report.html

Five plots (advisor/plots.py), each a PNG embedded as base64: loss
components; the validation metric with the best check and the early stop
marked; the LR of every group with each watchdog cut; memory against the
budget with the OOMs; throughput. Where the weights came from (the start
event's init: path, sha256, kind) and went (the export event's files and the
copy under --gpt-sovits-root). Then the samples (RUN_DIR/samples/,
export/samples/), embedded as base64 WAV data: URIs up to EMBED_LIMIT bytes,
so the page opens and plays anywhere, mailed or copied; past the limit the
rest are linked relative to the page, and the page says so.

matplotlib with the Agg backend (no display needed), imported on first use.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from advisor.dashboard.plain import batch_text, init_text
from trainer.events import DECISIONS, number, read_events

PLOTS = ("losses", "validation", "lr", "memory", "throughput")  # advisor/plots.py's FIGURES, in page order


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
    export: dict = field(default_factory=dict)  # the last export event: files, copied_to

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
        elif kind == "export":
            r.export = e
        elif kind in DECISIONS:
            r.decisions.append(e)
        elif kind in lists:
            lists[kind].append(e)
    return r


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


# --- the page ----------------------------------------------------------------------------------
EMBED_LIMIT = 48 * 1024**2  # bytes of WAV embedded in one page; past it the rest are linked (the note says so)


@dataclass
class Sample:
    name: str
    src: str  # a data: URI (embedded) or a path relative to the page (linked)
    embedded: bool


def sample_sources(run_root: Path, page_dir: Path, limit: int = EMBED_LIMIT) -> list[tuple[str, list[Sample]]]:
    """(heading, samples) per samples folder: each validation's, then the export's. The WAVs
    are embedded (base64 data: URIs: the page plays them anywhere) until `limit` bytes; later
    ones are linked relative to the page (they play beside the run folder only)."""
    out = []
    folders = sorted((run_root / "samples").glob("step_*")) if (run_root / "samples").is_dir() else []
    kept = run_root / "export" / "samples"
    budget = limit
    for folder in folders + ([kept] if kept.is_dir() else []):
        wavs = sorted(folder.glob("*.wav"))
        if not wavs:
            continue
        if folder == kept:
            marker = kept / "step.txt"
            heading = "best checkpoint (export/samples)" + (f", step {marker.read_text().strip()}" if marker.is_file() else "")
        else:
            heading = f"step {int(folder.name.split('_')[1])}"
        samples = []
        for wav in wavs:
            size = wav.stat().st_size
            if size <= budget:
                budget -= size
                samples.append(Sample(wav.name, "data:audio/wav;base64," + base64.b64encode(wav.read_bytes()).decode("ascii"), True))
            else:
                samples.append(Sample(wav.name, os.path.relpath(wav, page_dir), False))
        out.append((heading, samples))
    return out


def provenance(r: Record) -> list[tuple[str, str]]:
    """Where the weights came from (the start event's init) and went (the export event)."""
    out = []
    init = init_text(r.start.get("init"))
    if init:
        out.append(("started from", init.removeprefix("init: ").removeprefix("init ")))
    copies = r.export.get("copied_to") or []
    files = [str(f) for f in r.export.get("files") or [] if not str(f).endswith(".json") and f not in copies]
    if files:
        out.append(("exported to", ", ".join(files)))
    if r.export.get("copied_to"):
        out.append(("copied to", ", ".join(str(c) for c in r.export["copied_to"])))
    return out


def bucket_table(r: Record) -> list[str]:
    """The length buckets: bound, clips, planned micro-batch, and what the steps ran (micro-batches seen, steps)."""
    buckets = r.start.get("buckets") if isinstance(r.start.get("buckets"), list) else []
    if not buckets:
        return []
    e = html.escape
    rows = ["<h2 id='buckets'>Length buckets</h2><table><tr><td><b>bucket</b></td><td><b>clips up to</b></td>"
            "<td><b>clips</b></td><td><b>planned micro-batch</b></td><td><b>micro-batches run</b></td><td><b>steps</b></td></tr>"]
    for i, b in enumerate(buckets):
        ran = [s for s in r.steps if s.get("bucket") == i]
        micros = sorted({s.get("micro_batch") for s in ran if s.get("micro_batch") is not None}, reverse=True)
        rows.append(f"<tr><td>{i}</td><td>{e(str(b.get('bound_seconds')))} s</td><td>{e(str(b.get('clips')))}</td>"
                    f"<td>{e(str(b.get('micro_batch')))} x {e(str(b.get('accumulation')))}</td><td>{e(', '.join(map(str, micros)) or '-')}</td><td>{len(ran)}</td></tr>")
    return rows + ["</table>"]


def render_page(r: Record, plots: dict[str, bytes], samples: list[tuple[str, list[Sample]]], title: str) -> str:
    e = html.escape
    start, end = r.start, r.end
    facts = [
        ("workload", f"{start.get('workload', '?')} ({start.get('size', '?')}), {start.get('precision', '?')}"),
        ("batch", batch_text(start).removeprefix("batch ")),
        ("steps", f"{r.steps[-1]['step'] if r.steps else 0} of {start.get('total_steps', '?')} planned"),
        ("end", ": ".join(str(x) for x in (end.get("reason"), end.get("detail")) if x) or "still running (no end event)"),
    ]
    best = r.best_val()
    if best is not None:
        facts.append(("best", f"{r.metric} {number(best['value']):.4g} at step {best['step']}"))
    facts.append(("watchdog", ", ".join(f"{sum(1 for d in r.decisions if d.get('kind') == k)} {k}" for k in DECISIONS if any(d.get("kind") == k for d in r.decisions)) or "no decisions"))
    facts.append(("OOMs / restarts", f"{len(r.ooms)} / {len(r.restarts)}"))
    facts += provenance(r)
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
    parts += bucket_table(r)
    decisions = r.decisions + r.ooms + r.restarts
    if decisions:
        parts.append("<h2 id='decisions'>Watchdog decisions</h2><table>")
        for d in sorted(decisions, key=lambda d: (d.get("step", 0), number(d.get("time")) or 0)):
            what = d.get("reason") or d.get("error") or ""
            parts.append(f"<tr><td>step {e(str(d.get('step')))}</td><td>{e(str(d.get('kind')))}</td><td>{e(str(d.get('policy') or ''))}</td><td>{e(str(what))}</td></tr>")
        parts.append("</table>")
    parts.append("<h2 id='samples'>Samples</h2>")
    notes = [s.get("note") for s in r.samples if s.get("note")]
    linked = sum(1 for _, group in samples for x in group if not x.embedded)
    if linked:
        parts.append(f"<p>{linked} WAVs past the page's {EMBED_LIMIT // 1024**2} MiB of embedded audio are linked, not embedded: "
                     "they play only while the page sits where it was written, beside the run folder.</p>")
    if samples:
        for heading, group in samples:
            parts.append(f"<h3>{e(heading)}</h3><ul>")
            parts += [f"<li><audio controls preload='none' src='{e(x.src)}'></audio> "
                      + (e(x.name) if x.embedded else f"<a href='{e(x.src)}'>{e(x.name)}</a>") + "</li>" for x in group]
            parts.append("</ul>")
        if notes:
            parts.append(f"<p>{e(notes[-1])}</p>")
    else:
        parts.append(f"<p>{e(notes[-1] if notes else 'No samples in this run (validation.samples: 0, or no validation yet).')}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_root: str | os.PathLike, out: str | os.PathLike | None = None, embed_limit: int = EMBED_LIMIT) -> Path:
    """Write the page (default RUN_DIR/report.html, atomically); returns its path."""
    from trainer.atomic import atomic_write_bytes

    root = Path(run_root).resolve()
    events = root / "events.jsonl"
    if not events.is_file():
        raise ValueError(f"{root}: no events.jsonl (expected a run directory written by `advisor train`)")
    page = Path(out) if out is not None else root / "report.html"
    r = read_run(events)
    from advisor.plots import FIGURES, png

    plots = {name: png(FIGURES[name](r)) for name in PLOTS}
    page.parent.mkdir(parents=True, exist_ok=True)
    text = render_page(r, plots, sample_sources(root, page.parent.resolve(), embed_limit), f"Run report: {root.name}")
    atomic_write_bytes(page, text.encode("utf-8"))
    return page
