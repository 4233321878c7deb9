"""Blind SNR of a speech clip: WADA-SNR (Kim & Stern, "Robust signal-to-noise ratio
estimation based on waveform amplitude distribution analysis", Interspeech 2008).

The model: clean speech samples have Gamma-distributed amplitudes (shape 0.4),
the noise is Gaussian and independent. Their sum's statistic
    G = log(mean |x|) - mean(log |x|)
grows with the SNR (0.41 for pure Gaussian noise, towards ~1.63 for pure
speech), so a table of G against SNR, made once by simulating that model,
turns a clip's G into dB. The table below was made by `simulate_table()`
(4 M samples per point, seed 2008; tests/test_check_metrics.py re-derives it
with fewer samples); it is this project's own simulation, not a copy of the
paper's table.

Range and limits (say them where the number is shown):
  - it reads -20 to 100 dB; below about -10 dB G is flat (every such clip is
    "noise"), above about 50 dB G changes so little that the figure only says
    "clean"; digital silence (exact zeros) reads as very clean;
  - it assumes stationary Gaussian noise: hum, music, reverberation or a
    second voice are not "noise" to it and can read as clean;
  - synthetic or heavily processed speech departs from the Gamma model, so
    compare clips of one dataset with each other rather than with other data.
"""

from __future__ import annotations

import math

import numpy as np

LOW_DB, HIGH_DB = -20, 100  # the table's grid: 1 dB steps
GAMMA_SHAPE = 0.4
_EPS = 1e-10  # |x| floor after normalising the peak to 1 (log of an exact zero)
# G at -20, -19, ..., 100 dB (simulate_table(), made non-decreasing)
TABLE = np.array((0.4095, 0.4096, 0.4096, 0.4097, 0.4097, 0.4097, 0.4099, 0.4101, 0.4105, 0.4111, 0.4121, 0.4134, 0.4152, 0.4173, 0.4201, 0.4238, 0.4286, 0.4348, 0.4421, 0.4510, 0.4619, 0.4741, 0.4886, 0.5049, 0.5231, 0.5434, 0.5650, 0.5886, 0.6138, 0.6399, 0.6672, 0.6953, 0.7240, 0.7531, 0.7826, 0.8121, 0.8416, 0.8710, 0.8998, 0.9281, 0.9561, 0.9831, 1.0096, 1.0356, 1.0605, 1.0847, 1.1084, 1.1310, 1.1529, 1.1740, 1.1942, 1.2138, 1.2327, 1.2506, 1.2681, 1.2847, 1.3006, 1.3159, 1.3305, 1.3444, 1.3578, 1.3705, 1.3828, 1.3946, 1.4057, 1.4165, 1.4268, 1.4367, 1.4461, 1.4552, 1.4638, 1.4720, 1.4798, 1.4873, 1.4943, 1.5013, 1.5078, 1.5140, 1.5199, 1.5255, 1.5310, 1.5362, 1.5411, 1.5458, 1.5503, 1.5545, 1.5586, 1.5626, 1.5664, 1.5700, 1.5735, 1.5767, 1.5798, 1.5828, 1.5856, 1.5884, 1.5910, 1.5935, 1.5959, 1.5982, 1.6004, 1.6025, 1.6044, 1.6063, 1.6082, 1.6099, 1.6116, 1.6132, 1.6147, 1.6161, 1.6175, 1.6188, 1.6200, 1.6212, 1.6223, 1.6234, 1.6245, 1.6255, 1.6264, 1.6273, 1.6281))


def wada_snr(samples: np.ndarray) -> float:
    """dB in [-20, 100] of a mono clip (see the module docstring); nan for an all-zero clip."""
    x = np.abs(np.asarray(samples, dtype=np.float32))  # float32 logs: 2x faster, sums in float64
    peak = float(x.max()) if len(x) else 0.0
    if peak == 0.0:
        return math.nan
    a = np.maximum(x * np.float32(1 / peak), np.float32(_EPS))
    g = math.log(max(float(a.mean(dtype=np.float64)), _EPS)) - float(np.log(a).mean(dtype=np.float64))
    return float(np.interp(g, TABLE, np.arange(LOW_DB, HIGH_DB + 1), left=LOW_DB, right=HIGH_DB))


def simulate_table(samples: int = 4_000_000, seed: int = 2008) -> np.ndarray:
    """G at every dB from LOW_DB to HIGH_DB for Gamma(0.4)-amplitude speech plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    speech = rng.gamma(GAMMA_SHAPE, 1.0, samples) * rng.choice([-1.0, 1.0], samples)
    noise = rng.standard_normal(samples)
    power = float(np.mean(speech * speech))
    out = []
    for snr in range(LOW_DB, HIGH_DB + 1):
        a = np.maximum(np.abs(speech + noise * math.sqrt(power / 10 ** (snr / 10))), 1e-20)
        out.append(math.log(a.mean()) - float(np.log(a).mean()))
    return np.maximum.accumulate(np.array(out))
