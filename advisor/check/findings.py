"""One problem of one clip (or of the whole folder): `Finding`, and the severities.

Severities, worst first:
  error    GPT-SoVITS or `advisor prepare` drops the clip, or its files disagree
  warning  the clip is used, and the problem is likely to be heard in the result
  info     worth knowing; rarely harmful on its own
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEVERITIES = ("error", "warning", "info")
DATASET = "(dataset)"  # the `clip` of a finding about the whole input


@dataclass(frozen=True)
class Finding:
    clip: str  # the clip's name as the input gives it (list path, wav name, manifest audio)
    check: str  # stable id, e.g. "snr", "loudness", "missing-file"
    value: Any  # what was measured (number, text or None)
    threshold: Any  # what it was held against (number, text or None)
    severity: str  # one of SEVERITIES
    reason: str  # one line for people
    where: str | None = None  # file:line when the input names one

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"finding severity {self.severity!r}: expected one of {', '.join(SEVERITIES)}")

    @property
    def rank(self) -> int:
        return SEVERITIES.index(self.severity)

    def to_json(self) -> dict:
        return {"clip": self.clip, "check": self.check, "value": self.value, "threshold": self.threshold,
                "severity": self.severity, "reason": self.reason, "where": self.where}


def worst_first(findings: list[Finding]) -> list[Finding]:
    """By severity, then clips with more findings first, then clip name and check."""
    per_clip: dict[str, list[int]] = {}
    for f in findings:
        per_clip.setdefault(f.clip, []).append(f.rank)
    badness = {clip: (min(ranks), -len(ranks)) for clip, ranks in per_clip.items()}
    return sorted(findings, key=lambda f: (f.rank, badness[f.clip], f.clip, f.check))


def counts(findings: list[Finding]) -> dict[str, dict[str, int]]:
    """check -> {severity: distinct clips}, checks in order of their worst severity."""
    seen: dict[str, dict[str, set[str]]] = {}
    for f in findings:
        seen.setdefault(f.check, {}).setdefault(f.severity, set()).add(f.clip)
    ordered = sorted(seen.items(), key=lambda kv: (min(SEVERITIES.index(s) for s in kv[1]), kv[0]))
    return {check: {s: len(clips) for s, clips in by.items()} for check, by in ordered}
