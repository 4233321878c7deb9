"""What the findings mean for training: counts, the batch plan's view of long clips,
the watchdog's, and the advice the seed guides give for such data.

Advice is quoted from the seed guide "GPT-SoVITS微调训练" (the project's seed
article, /work/shared/seeds/000_20343faa2b1c5bde.txt; the line is given):
  - noise, reverberation or label errors: DPO is not advised (lines 64, 70-72);
  - noise, uneven loudness, poor audio: do not raise the SoVITS epochs (line 97).
The batch plan is probe/longest.py's `plan_for_clips` (the same as `advisor plan
--data`): `advisor train` pads every batch to the slice, which is at least the
longest clip, so the longest clip sets the memory of every batch; it names the
few clips (the longest 5 %) that hold the batch down. Tables only (the shipped
and probed ones, the nearest row at or above the clip's length, never more than
fits): the estimator would trace the models for minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from advisor.check.findings import Finding

SEED = "seed guide \"GPT-SoVITS微调训练\""  # the project's seed article (seeds/000_20343faa2b1c5bde.txt)
NOISY = {"snr", "clipping", "loudness", "quiet"}
MISLABELLED = {"text-rate", "text-short", "text-empty", "script", "language"}
WATCHDOG = ("if the batch holding the longest clip runs out of memory mid-epoch, the watchdog's OOM policy halves "
            "the micro-batch and keeps it halved for the rest of the run (advisor/watchdog/oom.py): one long outlier "
            "slows every later step")


@dataclass(frozen=True)
class Advice:
    text: str
    because: tuple[str, ...]  # the checks that triggered it
    source: str
    quote: str

    def to_json(self) -> dict:
        return {"advice": self.text, "because": list(self.because), "source": self.source, "quote": self.quote}


def advice(findings: list[Finding]) -> list[Advice]:
    checks = {f.check for f in findings if f.severity != "info"}
    out = []
    bad = sorted(checks & (NOISY | MISLABELLED))
    if bad:
        out.append(Advice("do not train with DPO (--dpo): it needs clean, correctly labelled data", tuple(bad), f"{SEED}, section 2 (是否使用 DPO 训练)",
                          "DPO对数据集的质量要求较高,数据集中的杂音、混响或标注错误会导致模型效果下降,甚至可能产生负面影响。"))
    noisy = sorted(checks & NOISY)
    if noisy:
        out.append(Advice("keep the SoVITS (s2) epochs low (do not raise them above the default 8): noise and uneven loudness get learned",
                          tuple(noisy), f"{SEED}, section 3 (设置轮数)",
                          "当底噪、混响、喷麦、响度不统一、电流声、口水音、口齿不清、音质差等情况那么请不要调高SoVITS模型轮数,否则会有负面效果。"))
    return out


def batch_plans(clips: list[tuple[str, float]], vram_bytes: int, workloads: tuple[str, ...] = ("s1", "s2")) -> list[dict]:
    """For each workload: the plan at the longest clip and the warning when a few long clips hold the batch down.

    `clips`: (name, seconds) of the clips training keeps. A plan that cannot be made
    (nothing fits, no table) is reported with its reason instead."""
    from probe.longest import Clip, plan_for_clips
    from probe.table import load_tables

    ordered = sorted((Clip(name, s, name) for name, s in clips), key=lambda c: -c.seconds)
    if not ordered:
        return []
    out = []
    tables = load_tables()[0]  # read once; the shipped and probed tables only (the estimator traces models: minutes)
    for workload in workloads:
        try:
            p = plan_for_clips(vram_bytes, workload, ordered[0].seconds, ordered, "check", trainer="advisor",
                               tables=tables, allow_estimate=False)
        except (LookupError, ValueError) as exc:
            out.append({"workload": workload, "error": str(exc)})
            continue
        out.append({"workload": workload, "vram_bytes": vram_bytes, "longest_clip": ordered[0].id, "longest_seconds": round(ordered[0].seconds, 2),
                    "max_batch_size": p.result.max_batch_size, "warning": p.warning})
    return out
