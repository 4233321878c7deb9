"""A small speech-like dataset with transcripts, made offline (`advisor demo-data`).

16 clips of 2-8 s: two speakers ("ava", higher voice; "bo", lower), each reading 4
English and 4 Chinese sentences. Voices:
  - "espeak": espeak-ng, when installed (voices en+f3/en+m3 and cmn+f3/cmn+m3);
  - "synthetic" (always available, deterministic): an additive formant synthesiser
    driven by the transcript's phoneme ids (`text.py`). Each ARPAbet phoneme has a
    class (vowel, nasal, liquid/glide, fricative, plosive, affricate) and vowel-like
    ones have textbook formants F1-F3; Chinese characters, kana and Hangul become
    consonant + vowel syllables chosen by their ids, with one of four pitch
    contours (tones) per character. Voiced sound is a sum of harmonics of the
    pitch, each weighted by the formant envelope (formants glide between
    phonemes); fricatives and bursts are shaped noise; words, commas and full
    stops get 50/200/350 ms pauses; pitch declines over the sentence. Speakers
    differ in pitch (210 Hz vs 120 Hz) and formant scale (1.15 vs 1.0).
    It sounds like a robot mumbling, not like a language: enough to exercise the
    whole pipeline, not to learn a voice from.
Writes OUT/wavs/*.wav (32 kHz mono 16-bit) and OUT/demo.list (relative paths).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.audio_constants import SAMPLE_RATE
from trainer.data import audio_backend
from trainer.data.audio import peak_normalize, resample, write_wav
from trainer.data.text import (
    ARPABET,
    BOUNDARY,
    CJK_HIGH_BASE,
    CJK_LOW_BASE,
    EN_BASE,
    FALLBACK_BASE,
    HANGUL_L,
    HANGUL_T,
    HANGUL_V,
    KANA_BASE,
    PUNCT,
    PUNCT_BASE,
    phonemize,
)

LIST_NAME = "demo.list"
VOICES = ("auto", "synthetic", "espeak")


@dataclass(frozen=True)
class Speaker:
    name: str
    pitch_hz: float
    formant_scale: float
    espeak_variant: str  # espeak-ng voice variant


SPEAKERS = (Speaker("ava", 210.0, 1.15, "f3"), Speaker("bo", 120.0, 1.0, "m3"))

SENTENCES = {
    "en": (
        "The quick brown fox jumps over the lazy dog.",
        "Please call Stella and ask her to bring these things with her from the store.",
        "A rainbow is a division of white light into many beautiful colors.",
        "We tested the voice model on a small machine, and it worked well.",
    ),
    "zh": (
        "今天天气很好，我们去公园散步吧。",
        "这是一个用来测试语音合成的小数据集。",
        "他每天早上六点起床，然后去跑步。",
        "请把窗户打开，让新鲜空气进来。",
    ),
}

# --- synthetic voice ------------------------------------------------------------------

VOWELS = {  # ARPAbet -> (F1, F2, F3) Hz, adult male averages
    "AA": (730, 1090, 2440), "AE": (660, 1720, 2410), "AH": (520, 1190, 2390), "AO": (570, 840, 2410),
    "EH": (530, 1840, 2480), "ER": (490, 1350, 1690), "IH": (390, 1990, 2550), "IY": (270, 2290, 3010),
    "UH": (440, 1020, 2240), "UW": (300, 870, 2240),
}
DIPHTHONGS = {"AW": ("AA", "UH"), "AY": ("AA", "IY"), "EY": ("EH", "IY"), "OW": ("AO", "UW"), "OY": ("AO", "IY")}
SONORANTS = {  # nasals, liquids, glides: voiced, weaker, own formants
    "M": (280, 1100, 2200), "N": (280, 1600, 2500), "NG": (280, 2000, 2600), "L": (360, 1300, 2700),
    "R": (420, 1300, 1600), "W": (300, 700, 2200), "Y": (280, 2200, 2900),
}
FRICATIVES = {"S": (5500, False), "SH": (3000, False), "F": (4500, False), "TH": (4500, False), "HH": (1500, False),
              "Z": (5500, True), "ZH": (3000, True), "V": (4500, True), "DH": (4500, True)}
PLOSIVES = {"P": (1000, False), "T": (4000, False), "K": (2000, False), "B": (1000, True), "D": (4000, True), "G": (2000, True)}
AFFRICATES = {"CH": "SH", "JH": "ZH"}
SYLLABLE_ONSETS = ("B", "P", "M", "F", "D", "T", "N", "L", "G", "K", "HH", "JH", "CH", "SH", "R", "Z", "S", "Y", "W")
SYLLABLE_VOWELS = ("AA", "IY", "UW", "EH", "AO", "AH", "ER", "AY", "OW", "AW", "EY", "IH")
TONES = ((1.15, 1.15), (0.95, 1.2), (0.9, 0.8, 1.05), (1.2, 0.8))  # pitch multipliers across a syllable
BANDWIDTHS = (90.0, 110.0, 170.0)  # Hz, of F1-F3


@dataclass
class Segment:
    kind: str  # vowel, sonorant, fricative, plosive, pause
    seconds: float
    formants: tuple[float, float, float] = (500.0, 1500.0, 2500.0)
    noise_hz: float = 0.0  # centre of the noise band (fricatives, bursts)
    voiced: bool = True
    tone: tuple[float, ...] = (1.0,)


def phone_segments(phone: str) -> list[Segment]:
    if phone in VOWELS:
        return [Segment("vowel", 0.12, VOWELS[phone])]
    if phone in DIPHTHONGS:
        a, b = DIPHTHONGS[phone]
        return [Segment("vowel", 0.09, VOWELS[a]), Segment("vowel", 0.08, VOWELS[b])]
    if phone in SONORANTS:
        return [Segment("sonorant", 0.07, SONORANTS[phone])]
    if phone in FRICATIVES:
        hz, voiced = FRICATIVES[phone]
        return [Segment("fricative", 0.09, noise_hz=hz, voiced=voiced)]
    if phone in PLOSIVES:
        hz, voiced = PLOSIVES[phone]
        return [Segment("pause", 0.04), Segment("fricative", 0.025, noise_hz=hz, voiced=voiced)]
    hz, voiced = FRICATIVES[AFFRICATES[phone]]
    return [Segment("pause", 0.04), Segment("fricative", 0.07, noise_hz=hz, voiced=voiced)]


def id_segments(pid: int) -> list[Segment]:
    """Segments for one phoneme id of any script (see the module docstring)."""
    if pid == BOUNDARY:
        return [Segment("pause", 0.05)]
    if PUNCT_BASE <= pid < EN_BASE:
        return [Segment("pause", 0.35 if pid in (PUNCT["."], PUNCT["!"], PUNCT["?"]) else 0.2)]
    if EN_BASE <= pid < EN_BASE + len(ARPABET):
        return phone_segments(ARPABET[pid - EN_BASE])
    if CJK_HIGH_BASE <= pid < CJK_LOW_BASE:
        return phone_segments(SYLLABLE_ONSETS[pid % len(SYLLABLE_ONSETS)])
    if CJK_LOW_BASE <= pid < KANA_BASE:  # the character's vowel, with a tone
        vowel = phone_segments(SYLLABLE_VOWELS[pid % len(SYLLABLE_VOWELS)])
        for seg in vowel:
            seg.seconds *= 1.5
            seg.tone = TONES[pid % 4]
        return vowel
    if KANA_BASE <= pid < HANGUL_L:  # kana: consonant by row, vowel by column
        k = pid - KANA_BASE
        return phone_segments(SYLLABLE_ONSETS[(k // 5) % len(SYLLABLE_ONSETS)]) + phone_segments(("AA", "IY", "UW", "EH", "AO")[k % 5])
    if HANGUL_L <= pid < HANGUL_V:
        return phone_segments(SYLLABLE_ONSETS[(pid - HANGUL_L) % len(SYLLABLE_ONSETS)])
    if HANGUL_V <= pid < HANGUL_T:
        return phone_segments(SYLLABLE_VOWELS[(pid - HANGUL_V) % len(SYLLABLE_VOWELS)])
    if HANGUL_T <= pid < FALLBACK_BASE:
        return phone_segments(("N", "M", "NG", "L", "K", "T", "P")[(pid - HANGUL_T) % 7])
    return phone_segments(SYLLABLE_VOWELS[pid % len(SYLLABLE_VOWELS)])


def synthesize(text: str, language: str, speaker: Speaker, rng: np.random.Generator, max_seconds: float = 7.5) -> np.ndarray:
    """Speech-like float32 audio at 32 kHz for `text` (see the module docstring)."""
    ids = phonemize(text, language).ids
    segments = [Segment("pause", 0.15)]
    for pid in ids:
        segments += id_segments(pid)
    segments.append(Segment("pause", 0.2))
    total = sum(s.seconds for s in segments)
    rate = min(1.0, max_seconds / total) * rng.uniform(0.92, 1.08)  # speaking rate; fit in max_seconds
    return render(segments, speaker, rate, rng)


def render(segments: list[Segment], speaker: Speaker, rate: float, rng: np.random.Generator) -> np.ndarray:
    lengths = [max(1, round(s.seconds * rate * SAMPLE_RATE)) for s in segments]
    n = sum(lengths)
    bounds = np.cumsum([0, *lengths])
    t = np.arange(n) / n
    # per-sample tracks: pitch, voicing and noise amplitude, noise band, formants (interpolated between segment centres)
    f0 = speaker.pitch_hz * (1.1 - 0.25 * t) * (1 + 0.03 * np.sin(2 * np.pi * 3.1 * t * n / SAMPLE_RATE))
    voice_amp, noise_amp, noise_hz = np.zeros(n), np.zeros(n), np.zeros(n)
    centres, formants = [], []
    for seg, a, b in zip(segments, bounds[:-1], bounds[1:]):
        voice_amp[a:b] = {"vowel": 1.0, "sonorant": 0.45, "fricative": 0.15 if seg.voiced else 0.0}.get(seg.kind, 0.0)
        noise_amp[a:b] = 0.25 if seg.kind == "fricative" else 0.0
        noise_hz[a:b] = seg.noise_hz
        f0[a:b] *= np.interp(np.linspace(0, 1, b - a), np.linspace(0, 1, len(seg.tone)), seg.tone)
        if seg.kind in ("vowel", "sonorant"):
            centres.append((a + b) / 2)
            formants.append(np.array(seg.formants) * speaker.formant_scale)
    voice_amp = _smooth(voice_amp, 160)
    noise_amp = _smooth(noise_amp, 64)
    tracks = np.stack([np.interp(np.arange(n), centres, [f[k] for f in formants]) for k in range(3)]) if centres else np.full((3, n), 1000.0)
    wav = _voiced(f0, tracks, n) * voice_amp + _noise(noise_hz, n, rng) * noise_amp
    wav += 3e-4 * rng.standard_normal(n)  # room noise: pauses are quiet, not digital zero
    return peak_normalize(wav.astype(np.float32), 0.8)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    kernel = np.hanning(2 * width + 1)
    return np.convolve(x, kernel / kernel.sum(), mode="same")


def _voiced(f0: np.ndarray, formants: np.ndarray, n: int) -> np.ndarray:
    """Sum of harmonics of f0 (n,), each weighted by the formant envelope at its frequency."""
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    coarse = np.arange(0, n, 32)  # the envelope changes slowly: evaluate it every 1 ms
    out = np.zeros(n)
    for h in range(1, int(5000 / f0.min()) + 1):
        freq = h * f0[coarse]
        gain = sum(1.0 / (1.0 + ((freq - formants[k, coarse]) / BANDWIDTHS[k]) ** 2) * (0.5**k) for k in range(3))
        out += np.interp(np.arange(n), coarse, gain) * np.sin(h * phase) / h**0.3
    return out / max(1e-9, np.abs(out).max())


def _noise(centre_hz: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """White noise split into a low (< 2.5 kHz) and a high band, mixed by the wanted centre."""
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    low = np.fft.irfft(spectrum * (freqs < 2500), n)
    high = np.fft.irfft(spectrum * (freqs >= 2500) * (freqs < 9000), n)
    mix = np.clip((centre_hz - 1500) / 4000, 0, 1)
    return (low * (1 - mix) + high * mix) / 3


# --- espeak-ng --------------------------------------------------------------------------


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, language: str, speaker: Speaker) -> np.ndarray:
    voice = f"{'cmn' if language == 'zh' else 'en'}+{speaker.espeak_variant}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        proc = subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 or not path.is_file():
            raise ValueError(f"espeak-ng failed for {voice!r}: {proc.stderr.strip()[:200]}")
        data, rate = audio_backend.soundfile().read(str(path), dtype="float32", always_2d=True)
    return peak_normalize(resample(data.mean(axis=1), int(rate), SAMPLE_RATE), 0.8)


# --- the dataset ------------------------------------------------------------------------


def make_demo(out: str | os.PathLike, voice: str = "auto", seed: int = 0) -> dict:
    """Write OUT/wavs/*.wav and OUT/demo.list; returns a summary dict."""
    if voice not in VOICES:
        raise ValueError(f"unknown voice {voice!r}: expected one of {', '.join(VOICES)}")
    if voice == "espeak" and not espeak_available():
        raise ValueError("--voice espeak: espeak-ng is not installed (apt-get install espeak-ng), or use --voice synthetic")
    use_espeak = voice == "espeak" or (voice == "auto" and espeak_available())
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / LIST_NAME).is_file())):
        raise ValueError(f"{out}: output holds something else (no {LIST_NAME}); choose an empty or new folder")
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines, seconds = [], []
    for speaker in SPEAKERS:
        for language, sentences in SENTENCES.items():
            for k, text in enumerate(sentences):
                wav = espeak(text, language, speaker) if use_espeak else synthesize(text, language, speaker, rng)
                name = f"wavs/{speaker.name}_{language}_{k:02d}.wav"
                write_wav(out / name, wav)
                lines.append(f"{name}|{speaker.name}|{language}|{text}\n")
                seconds.append(len(wav) / SAMPLE_RATE)
    from trainer.atomic import atomic_write_bytes

    atomic_write_bytes(out / LIST_NAME, "".join(lines).encode("utf-8"))
    return {
        "list": str(out / LIST_NAME),
        "clips": len(lines),
        "speakers": [s.name for s in SPEAKERS],
        "voice": "espeak-ng" if use_espeak else "synthetic",
        "seconds": {"total": round(sum(seconds), 3), "min": round(min(seconds), 3), "max": round(max(seconds), 3)},
    }
