"""Measurements -> findings: each clip on its own, then each clip against the dataset.

Per clip (thresholds in config.py): duration, clipping, SNR, silence at the
edges and inside, sample rate, channels, DC offset, text (empty, very short,
script that does not fit the language).
Against the dataset:
  loudness   |LUFS - median LUFS| > loudness_lu
  rate       phonemes per second of speech (duration minus the edge silences),
             robust z = 0.6745 (x - median) / max(MAD, rate_mad_floor * median),
             within the clip's language when it has >= 5 clips, else the whole
             dataset; |z| > rate_z: text and audio do not match (mislabelled or
             mis-sliced). With GPT-SoVITS's own phonemes (experiment folders and
             datasets converted from them) upstream's s1 filter also applies:
             outside 3-25 phonemes per second the clip is dropped (error).
  duplicates exact: equal decoded samples; near: time-pattern correlation >=
             near_duplicate and spectrum correlation >= near_duplicate_envelope
             between clips whose lengths differ by <= 10 % (measure.py). The
             later clip (input order) carries the finding, naming the first.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

import numpy as np

from advisor.check.config import Thresholds
from advisor.check.findings import Finding
from advisor.check.measure import ClipAudio
from advisor.check.sources import Item

MIN_GROUP = 5  # clips of one language before it is its own rate group
UPSTREAM_RATE = (3.0, 25.0)  # GPT-SoVITS s1: phonemes per second kept
CHUNK = 512  # near-duplicate rows compared at once


@dataclass
class Measured:
    item: Item
    audio: ClipAudio

    @property
    def rate(self) -> float | None:
        """Phonemes per second of speech, or None without text."""
        if not self.item.phonemes:
            return None
        return self.item.phonemes / self.audio.speech_seconds


def clip_findings(m: Measured, t: Thresholds, normalised: bool) -> list[Finding]:
    a, clip, where = m.audio, m.item.clip, m.item.where
    out: list[Finding] = []

    def add(check, value, threshold, severity, reason):
        out.append(Finding(clip, check, value, threshold, severity, reason, where))

    if a.seconds < t.min_seconds or a.seconds > t.max_seconds:
        add("duration", round(a.seconds, 2), f"{t.min_seconds:g}-{t.max_seconds:g} s", "error", f"{a.seconds:.2f} s: GPT-SoVITS drops clips outside {t.min_seconds:g}-{t.max_seconds:g} s")
    elif a.seconds > t.long_seconds:
        add("long", round(a.seconds, 2), t.long_seconds, "info", f"{a.seconds:.1f} s: over {t.long_seconds:g} s, `advisor prepare` skips it at its default --slice-seconds; cut it with `advisor slice`")
    if a.clipped > t.clipped:
        add("clipping", round(a.clipped, 5), t.clipped, "warning", f"{a.clipped:.2%} of samples sit on flat tops at the peak: clipped recording (distortion is learned)")
    if math.isfinite(a.snr_db) and a.snr_db < t.snr_db:
        add("snr", round(a.snr_db, 1), t.snr_db, "warning", f"WADA-SNR {a.snr_db:.1f} dB: background noise the model will learn")
    if a.lead_silence > t.edge_silence:
        add("leading-silence", round(a.lead_silence, 2), t.edge_silence, "warning", f"{a.lead_silence:.2f} s of silence before the speech: trim it (GPT-SoVITS's slicer keeps <= 0.5 s)")
    if a.trail_silence > t.edge_silence:
        add("trailing-silence", round(a.trail_silence, 2), t.edge_silence, "warning", f"{a.trail_silence:.2f} s of silence after the speech: trim it")
    if a.longest_pause > t.pause:
        add("pause", round(a.longest_pause, 2), t.pause, "warning", f"a {a.longest_pause:.2f} s pause inside the clip: two utterances? slice it there")
    if a.sample_rate < t.min_rate:
        add("sample-rate", a.sample_rate, t.min_rate, "warning", f"{a.sample_rate} Hz: upsampled to 32 kHz for training, nothing above {a.sample_rate // 2} Hz to learn")
    if a.channels > 1:
        add("channels", a.channels, 1, "info", f"{a.channels} channels: averaged to mono (check the channels agree)")
    if abs(a.dc_offset) > t.dc_offset:
        add("dc-offset", round(a.dc_offset, 4), t.dc_offset, "info", f"DC offset {a.dc_offset:+.3f} of full scale: high-pass the recording")
    if not normalised and a.peak_dbfs < -30:
        add("quiet", round(a.peak_dbfs, 1), -30, "info", f"peak {a.peak_dbfs:.1f} dBFS: very quiet recording, normalising raises its noise floor too")
    out += text_findings(m, t)
    return out


def text_findings(m: Measured, t: Thresholds) -> list[Finding]:
    item = m.item
    out = []
    if item.text is None and item.phonemes is None:
        return out
    if item.phonemes is not None and item.phonemes < t.min_phonemes:
        out.append(Finding(item.clip, "text-short", item.phonemes, t.min_phonemes, "warning",
                           f"{item.phonemes} phoneme(s) for {m.audio.seconds:.1f} s of audio: a very short text ({(item.text or '')[:30]!r})", item.where))
    script = _script_mismatch(item.text or "", item.language)
    if script:
        out.append(Finding(item.clip, "script", item.language, None, "warning", script, item.where))
    return out


def _script_mismatch(text: str, language: str | None) -> str | None:
    """A text with none of the script its language code needs (zh text typed as en, ...)."""
    letters = [c for c in text if c.isalpha()]
    if not letters or language not in ("zh", "yue", "ja", "ko", "en"):
        return None
    names = [unicodedata.name(c, "") for c in letters]
    cjk = sum(n.startswith("CJK") for n in names)
    kana = sum(n.startswith(("HIRAGANA", "KATAKANA")) for n in names)
    hangul = sum(n.startswith("HANGUL") for n in names)
    latin = sum(n.startswith("LATIN") for n in names)
    need = {"zh": cjk, "yue": cjk, "ja": cjk + kana, "ko": hangul, "en": latin}[language]
    if need == 0:
        return f"language {language!r} but the text has none of its script: wrong language code? ({text[:30]!r})"
    return None


def dataset_findings(measured: list[Measured], t: Thresholds, gpt_sovits_phonemes: bool) -> tuple[list[Finding], dict]:
    """(findings, stats) of the clips against each other."""
    out: list[Finding] = []
    stats: dict = {}
    out += _loudness(measured, t, stats)
    out += _rates(measured, t, stats, gpt_sovits_phonemes)
    out += _duplicates(measured, t)
    return out, stats


def _loudness(measured: list[Measured], t: Thresholds, stats: dict) -> list[Finding]:
    levels = [(m, m.audio.loudness_lufs) for m in measured if math.isfinite(m.audio.loudness_lufs)]
    if len(levels) < 3:
        return []
    values = np.array([v for _, v in levels])
    median = float(np.median(values))
    stats["loudness"] = {"median_lufs": round(median, 2), "p10": round(float(np.percentile(values, 10)), 2), "p90": round(float(np.percentile(values, 90)), 2)}
    out = []
    for m, v in levels:
        if abs(v - median) > t.loudness_lu:
            way = "louder" if v > median else "quieter"
            out.append(Finding(m.item.clip, "loudness", round(v, 1), f"{median:.1f} +- {t.loudness_lu:g} LUFS", "warning",
                               f"{v:.1f} LUFS, {abs(v - median):.1f} LU {way} than the dataset's median {median:.1f}: loudness jumps are learned", m.item.where))
    return out


def _rates(measured: list[Measured], t: Thresholds, stats: dict, gpt_sovits_phonemes: bool) -> list[Finding]:
    with_rate = [m for m in measured if m.rate is not None]
    groups: dict[str, list[Measured]] = {}
    for m in with_rate:
        groups.setdefault(m.item.language or "", []).append(m)
    pooled = [m for g in groups.values() if len(g) < MIN_GROUP for m in g]
    out = []
    stats["phonemes_per_second"] = {}
    for name, group in [*((k, g) for k, g in groups.items() if len(g) >= MIN_GROUP), ("(other languages)" if len(pooled) < len(with_rate) else "(all)", pooled)]:
        if len(group) < 3:
            continue
        rates = np.array([m.rate for m in group])
        median = float(np.median(rates))
        mad = max(float(np.median(np.abs(rates - median))), t.rate_mad_floor * median)
        stats["phonemes_per_second"][name or "(all)"] = {"median": round(median, 2), "mad": round(mad, 2), "clips": len(group)}
        for m, rate in zip(group, rates):
            z = 0.6745 * (rate - median) / mad
            if abs(z) > t.rate_z:
                way = "too many" if z > 0 else "too few"
                out.append(Finding(m.item.clip, "text-rate", round(float(rate), 2), f"|z| <= {t.rate_z:g} (median {median:.1f}/s)", "warning",
                                   f"{rate:.1f} phonemes/s against the median {median:.1f} (robust z {z:+.1f}): {way} phonemes for the audio, mislabelled or mis-sliced?", m.item.where))
    if gpt_sovits_phonemes:
        for m in with_rate:
            lo, hi = UPSTREAM_RATE
            if not lo <= m.item.phonemes / m.audio.seconds <= hi:
                rate = m.item.phonemes / m.audio.seconds
                out.append(Finding(m.item.clip, "text-rate", round(rate, 2), f"{lo:g}-{hi:g}/s", "error",
                                   f"{rate:.1f} phonemes/s: GPT-SoVITS's s1 drops clips outside {lo:g}-{hi:g} per second", m.item.where))
    return out


def _duplicates(measured: list[Measured], t: Thresholds) -> list[Finding]:
    out = []
    first: dict[str, Measured] = {}
    exact = set()
    for i, m in enumerate(measured):
        other = first.setdefault(m.audio.audio_sha256, m)
        if other is not m:
            exact.add(i)
            out.append(Finding(m.item.clip, "duplicate", other.item.clip, None, "warning",
                               f"the same audio as {other.item.clip}: it is trained twice per epoch (and two texts for one audio if they differ)", m.item.where))
    if len(measured) < 2:
        return out
    prints = np.stack([m.audio.fingerprint for m in measured])  # (N, D) unit rows
    envelopes = np.stack([m.audio.envelope for m in measured])  # (N, bands) unit rows
    seconds = np.array([m.audio.seconds for m in measured])
    for start in range(0, len(measured), CHUNK):  # (CHUNK, N) at a time: memory stays O(N) for big datasets
        rows = slice(start, min(start + CHUNK, len(measured)))
        corr = prints[rows] @ prints.T
        similar = (corr >= t.near_duplicate) & (envelopes[rows] @ envelopes.T >= t.near_duplicate_envelope)
        similar &= np.abs(seconds[rows, None] - seconds[None, :]) <= t.near_duplicate_length * np.maximum(seconds[rows, None], seconds[None, :])
        for k, j in enumerate(range(rows.start, rows.stop)):
            hits = np.flatnonzero(similar[k, :j])  # earlier clips only: the later one carries the finding
            if j in exact or not len(hits):
                continue
            i = int(hits[np.argmax(corr[k, hits])])
            out.append(Finding(measured[j].item.clip, "near-duplicate", round(float(corr[k, i]), 3), t.near_duplicate, "warning",
                               f"sounds like {measured[i].item.clip} (fingerprint correlation {corr[k, i]:.3f}): the same recording twice?", measured[j].item.where))
    return out
