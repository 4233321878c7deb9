"""`run_check(DATA)`: read, measure every clip, apply the rules, say what it means for training.

    DATA --sources--> Items --measure--> ClipAudio --rules--> Findings --training--> plans, advice

Read only: nothing under DATA is written or changed (tests hash the tree).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advisor.check.config import Thresholds
from advisor.check.findings import SEVERITIES, Finding, counts, worst_first
from advisor.check.measure import measure
from advisor.check.rules import Measured, clip_findings, dataset_findings
from advisor.check.sources import Source, open_source
from advisor.check.training import WATCHDOG, Advice, advice, batch_plans

Progress = Callable[[int, int, str], None]  # (done, total, clip)


@dataclass
class CheckResult:
    source: Source
    thresholds: Thresholds
    measured: list[Measured]
    findings: list[Finding]  # worst first
    stats: dict
    advice: list[Advice]
    plans: list[dict] = field(default_factory=list)

    @property
    def clips(self) -> int:
        return len(self.source.items)

    def clean(self) -> int:
        """Clips measured with no finding at all."""
        touched = {f.clip for f in self.findings}
        return sum(m.item.clip not in touched for m in self.measured)

    def summary(self) -> dict:
        """Everything but the per-clip figures (what `advisor prepare` puts in report.json)."""
        touched = {s: len({f.clip for f in self.findings if f.severity == s}) for s in SEVERITIES}
        return {
            "data": str(self.source.path), "kind": self.source.kind, "clips": self.clips, "measured": len(self.measured),
            "seconds": round(sum(m.audio.seconds for m in self.measured), 2), "clean_clips": self.clean(),
            "clips_with": touched, "counts": counts(self.findings),
            "note": "levels measured after prepare's peak normalisation" if self.source.normalised else None,
            "stats": self.stats,
            "experiment": self.source.experiment.to_json() if self.source.experiment is not None else None,
            "training": {"batch_plans": self.plans, "watchdog": WATCHDOG if self.plans else None, "advice": [a.to_json() for a in self.advice]},
            "findings": [f.to_json() for f in self.findings],
            "thresholds": self.thresholds.to_json(),
        }

    def to_json(self) -> dict:
        clips = [{"clip": m.item.clip, "where": m.item.where, **m.audio.to_json(),
                  "phonemes": m.item.phonemes, "phonemes_per_second": None if m.rate is None else round(m.rate, 2)} for m in self.measured]
        return {**self.summary(), "per_clip": clips}


def run_check(data: str | Path, thresholds: Thresholds | None = None, progress: Progress | None = None, vram_bytes: int | None = None) -> CheckResult:
    """Check DATA (see advisor/check/__init__.py). ValueError (one line) when DATA cannot be read.

    `vram_bytes`: also plan batches for a card of that size (None: no plan)."""
    t = thresholds or Thresholds()
    source = open_source(data)
    if source.kind != "dataset":
        from trainer.data import audio_backend

        audio_backend.require()  # a broken decoder is one error (exit 2), not every clip's finding
    findings = list(source.findings)
    measured: list[Measured] = []
    for i, item in enumerate(source.items):
        try:
            samples, rate, channels = item.load()
        except ValueError as exc:  # AudioError and damaged clip files: this clip's finding
            findings.append(_unreadable(item, str(exc)))
        else:
            m = Measured(item, measure(samples, rate, channels, t.silence_db))
            measured.append(m)
            findings += clip_findings(m, t, source.normalised)
        if progress:
            progress(i + 1, len(source.items), item.clip)
    more, stats = dataset_findings(measured, t, source.gpt_sovits_phonemes)
    findings += more
    if source.experiment is not None:
        from advisor.check.experiment import hubert_findings

        findings += hubert_findings(source, {m.item.clip: m.audio.seconds for m in measured})
    stats.update(_distribution(measured))
    plans = []
    if vram_bytes:
        kept = [(m.item.clip, m.audio.seconds) for m in measured if t.min_seconds <= m.audio.seconds <= t.max_seconds]
        plans = batch_plans(kept, vram_bytes)
    return CheckResult(source, t, measured, worst_first(findings), stats, advice(findings), plans)


def _unreadable(item, reason: str) -> Finding:
    check = "missing-file" if reason.startswith("missing") else "duration" if reason.startswith(("too short", "too long")) else "unreadable"
    return Finding(item.clip, check, None, None, "error", f"{reason}: GPT-SoVITS and `advisor prepare` drop it", item.where)


def _distribution(measured: list[Measured]) -> dict:
    def five(values: list[float], digits: int = 2) -> dict | None:
        v = np.array([x for x in values if math.isfinite(x)])
        if len(v) == 0:
            return None
        q = np.percentile(v, [0, 10, 50, 90, 100])
        return dict(zip(("min", "p10", "median", "p90", "max"), (round(float(x), digits) for x in q)))

    return {"seconds": five([m.audio.seconds for m in measured]), "snr_db": five([m.audio.snr_db for m in measured], 1),
            "loudness_lufs": five([m.audio.loudness_lufs for m in measured]), "sample_rates": sorted({m.audio.sample_rate for m in measured})}

