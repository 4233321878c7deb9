"""What `prepare --from-gpt-sovits` adds for GPT-SoVITS v3 / v4 s2: the mel target, upstream's
length limits, and the record of what upstream would have done differently.

Facts: INTEROP-v3v4.md section 4 (upstream's TextAudioSpeakerLoaderV3/V4 and the
bucket sampler of s2_train_v3_lora.py). A v3/v4 experiment folder holds the same
files as a v2 one (2-name2text.txt, 4-cnhubert/, 5-wav32k/, 6-name2semantic.tsv made
with the v3/v4 pretrained s2G); the s2 trainer reads the first three and computes
its mel target from 5-wav32k (trainer/gptsovits/mel_v3.py).

Decisions (docs/ARCHITECTURE.md, "GPT-SoVITS v3/v4 data"):
  - Upstream's sampler drops items of <= 32 or > 1000 frames of 20 ms, counted as
    upstream counts them (5-wav32k file bytes // 1280, header included): clips over
    20 s and under 0.66 s. This converter drops them too, for both recipes, and
    reports each (report.json and the summary): a 20 s clip already costs about
    5 GiB per sample in fp32 (INTEROP-v3v4 section 11), and the pretrained model
    never saw longer ones. s1 on the same dataset loses those clips too.
  - Upstream repeats a list of n < 100 items max(2, int(100 / n)) times per epoch.
    This converter does not (an epoch is one pass over the real clips); the factor
    is recorded (manifest "mel".upstream_epoch_repeats, report.json "upstream") so
    a recipe or a user can scale the epochs to match.
  - Version: v3 and v4 folders hold identical files, so the version comes from
    --version, else from the run folders upstream's trainers leave in the
    experiment (logs_s2_v3_lora_<R>/, logs_s2_v4_lora_<R>/, logs_s1_v3/, logs_s1_v4/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trainer.gptsovits.mel_v3 import MEL_SPECS, MelSpec
from trainer.versions import ALL, V2_FAMILY, V3_FAMILY

UPSTREAM_FRAME_BYTES = 1280  # 640 int16 samples: upstream's length key is file bytes // 1280
MIN_FRAMES, MAX_FRAMES = 32, 1000  # the sampler keeps 32 < frames <= 1000 (0.64 s .. 20 s)
MIN_ITEMS = 100  # below this upstream repeats the list
SAMPLER_REASON = "GPT-SoVITS's v3/v4 s2 sampler drops it: "  # how a sampler drop's reason starts (counted in the report)
_RUN_FOLDER = re.compile(r"^logs_s(?:1_(v3|v4)|2_(v3|v4)_lora_\d+)$")


@dataclass(frozen=True)
class Version:
    """The experiment's GPT-SoVITS version for this conversion and where it came from."""

    name: str | None  # None: not given and nothing says (a v2-family conversion, no mel)
    source: str  # "--version", or the folders that told

    @property
    def mel(self) -> MelSpec | None:
        return MEL_SPECS.get(self.name) if self.name else None


def resolve_version(exp: Path, given: str | None) -> Version:
    """--version if given (checked), else what the experiment's run folders say; ValueError if they disagree."""
    if given is not None:
        if given not in ALL:
            raise ValueError(f"--version {given!r}: expected one of {', '.join(ALL)}")
        return Version(given, "--version")
    found: dict[str, list[str]] = {}
    for path in sorted(exp.iterdir()) if exp.is_dir() else []:
        match = _RUN_FOLDER.match(path.name)
        if match and path.is_dir():
            found.setdefault(match.group(1) or match.group(2), []).append(path.name)
    if len(found) > 1:
        seen = "; ".join(f"{v}: {', '.join(names)}" for v, names in sorted(found.items()))
        raise ValueError(f"{exp}: holds runs of several versions ({seen}): say which with --version")
    if found:
        (name, folders), = found.items()
        return Version(name, f"{exp.name}/{folders[0]}/")
    return Version(None, "not given; no v3/v4 run folders in the experiment")


def sampler_drop(wav_file: Path) -> str | None:
    """Why upstream's v3/v4 s2 sampler would drop this 5-wav32k file, or None if it keeps it."""
    frames = wav_file.stat().st_size // UPSTREAM_FRAME_BYTES
    seconds = frames / 50
    if frames > MAX_FRAMES:
        return f"{SAMPLER_REASON}{frames} frames of 20 ms ({seconds:.1f} s), over 20 s ({MAX_FRAMES} frames)"
    if frames <= MIN_FRAMES:
        return f"{SAMPLER_REASON}{frames} frames of 20 ms ({seconds:.2f} s), {MIN_FRAMES} or fewer (0.64 s)"
    return None


def upstream_repeats(items: int) -> int:
    """How many times upstream's v3/v4 s2 loader repeats its list of `items` names per epoch."""
    return max(2, MIN_ITEMS // items) if 0 < items < MIN_ITEMS else 1


def common_items(exp: Path, names: set[str]) -> int:
    """Names upstream's loader would use: in 2-name2text.txt, 4-cnhubert/<name>.pt and 5-wav32k/<name>."""
    def listed(sub: str, suffix: str = "") -> set[str]:
        folder = exp / sub
        return {p.name[: len(p.name) - len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix)} if folder.is_dir() else set()

    return len(names & listed("4-cnhubert", ".pt") & listed("5-wav32k"))


def upstream_record(version: Version, exp: Path, names: set[str], skipped: list) -> dict:
    """report.json's "upstream": what GPT-SoVITS's v3/v4 s2 trainer would do with this folder
    (`names`: those of 2-name2text.txt; `skipped`: the converter's Skipped items)."""
    items = common_items(exp, names)
    dropped = [s for s in skipped if s.reason.startswith(SAMPLER_REASON)]
    repeats = upstream_repeats(items)
    return {"version": version.name, "version_source": version.source, "items": items, "epoch_repeats": repeats,
            "dropped_by_sampler": len(dropped),
            "note": (f"GPT-SoVITS repeats these {items} items {repeats} times per epoch; here an epoch is one pass, "
                     f"so {repeats}x the epochs gives its number of steps" if repeats > 1 else f"no repetition upstream ({MIN_ITEMS} items or more)")}


def manifest_mel(version: Version, items: int) -> dict:
    """The manifest's "mel" section: the mel target's recipe and upstream's repetition factor."""
    return {**version.mel.describe(), "key": "mel", "dtype": "float16", "upstream_epoch_repeats": upstream_repeats(items),
            "upstream_sampler_frames": [MIN_FRAMES, MAX_FRAMES]}


def feeds(counts: dict[str, int], clips: int, mel_version: str | None) -> list[str]:
    """Which workloads the clips can feed: s1, s2-<version> (v2Pro+ need sv_emb on every clip, v3/v4 their mel)."""
    out = ["s1"]
    for v in V2_FAMILY:
        if v == "v2" or counts.get("sv_emb", 0) == clips:
            out.append(f"s2-{v}")
    if mel_version in V3_FAMILY:
        out.append(f"s2-{mel_version}")
    return out

