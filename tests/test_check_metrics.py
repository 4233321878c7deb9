"""The measurements behind `advisor check`: BS.1770 loudness against its reference points,
WADA-SNR's table and its reading of known SNRs, clipping, silences, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from advisor.check.loudness import impulse_response, integrated_loudness, k_weighted, k_weighting
from advisor.check.measure import clipped_fraction, measure, silences
from advisor.check.snr import TABLE, simulate_table, wada_snr
from check_corpus import RATE, add_noise, speech_like


def _sine(freq: float, dbfs: float, rate: int, seconds: float = 5.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_k_weighting_at_48k_is_bs1770s_table():
    (b1, a1), (b2, a2) = k_weighting(48000)
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-8)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-8)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-8)


@pytest.mark.parametrize("rate, tolerance", [(48000, 0.01), (44100, 0.02), (32000, 0.03)])
def test_reference_tones(rate, tolerance):
    # BS.1770: a 0 dBFS 997 Hz sine reads -3.01 LKFS (one channel); -20 dBFS reads -23.01
    assert integrated_loudness(_sine(997, 0.0, rate), rate) == pytest.approx(-3.01, abs=tolerance)
    assert integrated_loudness(_sine(997, -20.0, rate), rate) == pytest.approx(-23.01, abs=tolerance)
    assert integrated_loudness(_sine(1000, 0.0, rate), rate) == pytest.approx(-3.01, abs=tolerance)


def test_gates_and_filtering():
    rate = 48000
    tone = _sine(997, -20.0, rate, 4.0)
    # Ungated, half the time at -83 LUFS would read ~-26.0. Gated, only the 3 blocks that
    # straddle the step (part tone, part quiet) pull the tone's -23.01 down a little.
    quiet = _sine(997, -80.0, rate, 4.0)  # -83 LUFS blocks: under the absolute gate
    assert -23.25 < integrated_loudness(np.concatenate([tone, quiet]), rate) < -23.0
    soft = _sine(997, -35.0, rate, 4.0)  # -38 LUFS: over -70, but 15 LU under the mean: relative gate
    assert -23.25 < integrated_loudness(np.concatenate([tone, soft]), rate) < -23.0
    assert integrated_loudness(np.zeros(rate, np.float32), rate) == -np.inf
    x = np.random.default_rng(0).standard_normal(3000)
    np.testing.assert_allclose(k_weighted(x, rate), np.convolve(x, impulse_response(rate))[:3000], atol=1e-12)


def test_wada_table_is_reproducible_and_reads_known_snrs():
    fresh = simulate_table(samples=200_000, seed=1)
    assert np.abs(fresh - TABLE)[:80].max() < 0.02  # up to 60 dB; above, G barely moves
    speech = speech_like(3.0, seed=3)
    readings = [wada_snr(add_noise(speech, snr, seed=1)) for snr in (0, 10, 20)]
    assert readings[0] < 5 < readings[1] < readings[2]
    assert wada_snr(speech) > 30 and np.isnan(wada_snr(np.zeros(10)))


def test_clipping_and_silences():
    x = speech_like(2.0, seed=4)
    assert clipped_fraction(x) == 0.0
    assert clipped_fraction(0.3 * x) == 0.0  # scale-free
    clipped = np.clip(3 * x, -0.5, 0.5)
    assert clipped_fraction(clipped) > 0.05
    assert clipped_fraction(0.5 * clipped) == pytest.approx(clipped_fraction(clipped), rel=0.01)  # plateaus survive scaling
    gap = np.zeros(RATE * 3, np.float32)
    lead, trail, pause = silences(np.concatenate([gap[: RATE // 2], x, gap, x, gap[:RATE]]), RATE, 40.0)
    assert lead >= 0.5 and trail >= 1.0 and 3.0 <= pause < 3.6


def test_measure_hash_and_fingerprint():
    x = speech_like(2.5, seed=5)
    a, b = measure(x, RATE, 1, 40.0), measure(x * 0.5, RATE, 2, 40.0)
    assert a.audio_sha256 != b.audio_sha256 and b.channels == 2
    assert float(a.fingerprint @ b.fingerprint) > 0.999 and float(a.envelope @ b.envelope) > 0.999  # gain only
    other = measure(speech_like(2.5, seed=6), RATE, 1, 40.0)
    assert float(a.fingerprint @ other.fingerprint) < 0.9
    assert a.peak_dbfs == pytest.approx(20 * np.log10(np.abs(x).max()))


def test_duplicates_exact_and_near_attributed_to_the_later_clip():
    from advisor.check.config import Thresholds
    from advisor.check.rules import Measured, dataset_findings
    from advisor.check.sources import Item

    x = speech_like(2.0, seed=1)
    clips = {"a": speech_like(2.0, seed=2), "b": x, "c": speech_like(2.1, seed=3), "d": 0.5 * x, "e": x[100:-100], "f": x.copy()}
    measured = [Measured(Item(name, name, None), measure(v, RATE, 1, 40.0)) for name, v in clips.items()]
    found, _ = dataset_findings(measured, Thresholds(), gpt_sovits_phonemes=False)
    dups = {(f.clip, f.check, f.value if f.check == "duplicate" else None) for f in found if "duplicate" in f.check}
    assert dups == {("d", "near-duplicate", None), ("e", "near-duplicate", None), ("f", "duplicate", "b")}
