"""The thresholds of `advisor check`, one typed value validated on construction.

Defaults and where they come from:
  min/max_seconds 0.6 / 54   GPT-SoVITS drops shorter/longer clips (s2 filter, s1 max_sec)
  long_seconds 10            `advisor prepare`'s default --slice-seconds: longer clips are skipped there
  clipped 0.001              0.1 % of samples on flat tops is audible as distortion in speech
  loudness_lu 4              a clip this far from the dataset's median loudness stands out
                             (EBU R128 allows +-1 LU around a target for programmes; 4 LU
                             leaves room for natural variation between read sentences)
  snr_db 15                  WADA-SNR under 15 dB: audible background noise
  edge_silence 1.0 s         GPT-SoVITS's slicer keeps at most 0.5 s of silence at a cut
  pause 2.0 s                a pause that long inside a clip is usually two utterances
  silence_db 40              a 10 ms frame this far below the clip's loudest frame is silent
  dc_offset 0.01             a mean of 1 % of full scale (-40 dBFS)
  min_rate 32000             GPT-SoVITS trains at 32 kHz: lower rates are upsampled (no top band)
  rate_z 3.5                 robust z-score of phonemes per second (Iglewicz & Hoaglin's cut-off)
  rate_mad_floor 0.1         the MAD is taken as at least 10 % of the median (one reader
                             reading evenly would otherwise make every small change an outlier)
  min_phonemes 3             fewer phonemes than this: a very short text
  near_duplicate 0.95        time-pattern correlation of two clips within 10 % of each
  near_duplicate_envelope    other's length, and 0.99 between their mean spectra, that
    0.99                     make them near duplicates (the same take re-encoded, gain-
                             changed or trimmed reads >= 0.99 on both; one sentence read
                             twice, or by two voices, shares the pattern, not the spectrum)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Thresholds:
    min_seconds: float = 0.6
    max_seconds: float = 54.0
    long_seconds: float = 10.0
    clipped: float = 0.001  # fraction of samples
    loudness_lu: float = 4.0
    snr_db: float = 15.0
    edge_silence: float = 1.0  # s
    pause: float = 2.0  # s
    silence_db: float = 40.0  # dB below the loudest 10 ms frame
    dc_offset: float = 0.01  # full scale 1.0
    min_rate: int = 32_000  # Hz
    rate_z: float = 3.5
    rate_mad_floor: float = 0.1  # fraction of the median
    min_phonemes: int = 3
    near_duplicate: float = 0.95  # correlation
    near_duplicate_length: float = 0.1  # relative length difference allowed
    near_duplicate_envelope: float = 0.99  # correlation of the mean spectra (same voice and recording chain)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"check threshold {f.name}: expected a finite number, got {value!r}")
            if f.name == "snr_db":
                if not -20 <= value <= 100:  # what WADA-SNR can read (snr.py)
                    raise ValueError(f"check threshold snr_db: expected -20..100 dB (WADA-SNR's range), got {value!r}")
            elif value <= 0:
                raise ValueError(f"check threshold {f.name}: expected a number > 0, got {value!r}")
        if self.min_seconds >= self.max_seconds:
            raise ValueError(f"check thresholds: min_seconds {self.min_seconds:g} must be below max_seconds {self.max_seconds:g}")
        for name in ("clipped", "near_duplicate", "near_duplicate_length", "near_duplicate_envelope", "rate_mad_floor"):
            if getattr(self, name) >= 1:
                raise ValueError(f"check threshold {name}: expected a fraction below 1, got {getattr(self, name)!r}")

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
