"""The compiled audio libraries behind decoding and resampling, loaded on first use.

Two packages, each with a compiled core that can fail to load on a machine
where everything else works (a wheel for another libc, a missing system
library, an ABI drift between two packages built for each other):
  - soundfile: cffi over libsndfile (bundled in its wheels); decodes WAV, FLAC,
    OGG and MP3 (libsndfile >= 1.1) and writes 16-bit WAV;
  - soxr: libsoxr, band-limited resampling (the "HQ" quality GPT-SoVITS's
    librosa path also defaults to).
Neither is imported by `probe/` or `advisor/` at start-up. torchaudio is not
used: its extension loads only against the exact torch build it was compiled
for, which broke fresh installs (2.11.1 against torch 2.11.0, and any CUDA
torchaudio against a CPU torch).

`soundfile()` / `soxr()` return the module or raise `AudioBackendError`, a
ValueError whose one-line message names the package, what failed and the fix,
so the CLI turns it into exit 2. It is deliberately not an `AudioError`: a
broken library is not a bad clip, and `prepare`/`slice` must stop rather than
skip every file. `status()` is what `advisor doctor` prints.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

# Package name -> the pip requirement that repairs it (kept in step with pyproject.toml).
REPAIR = {
    "soundfile": "soundfile>=0.12.1,<0.15",
    "soxr": "soxr>=0.5,<2",
}
# Tests (and users chasing a problem) can make a backend fail to load on purpose.
BREAK_ENV = "SOVITS_ADVISOR_BREAK_AUDIO"  # comma-separated package names


class AudioBackendError(ValueError):
    """A compiled audio library cannot be loaded; the message says which and how to fix it."""


@dataclass(frozen=True)
class BackendStatus:
    package: str
    version: str | None  # None when it did not load
    detail: str  # library version when loaded, else the reason it failed

    @property
    def ok(self) -> bool:
        return self.version is not None


_loaded: dict[str, ModuleType] = {}


def soundfile() -> ModuleType:
    return _load("soundfile")


def soxr() -> ModuleType:
    return _load("soxr")


def require() -> None:
    """Load both now: commands call this before they write anything."""
    soundfile()
    soxr()


def status() -> list[BackendStatus]:
    """Whether each backend loads, without raising (for `advisor doctor`)."""
    out = []
    for package in REPAIR:
        try:
            module = _load(package)
        except AudioBackendError as exc:
            out.append(BackendStatus(package, None, str(exc)))
            continue
        version = getattr(module, "__version__", "?")
        library = getattr(module, "__libsndfile_version__", None)
        out.append(BackendStatus(package, version, f"libsndfile {library}" if library else "libsoxr"))
    return out


def _load(package: str) -> ModuleType:
    if package in _loaded:
        return _loaded[package]
    try:
        if package in os.environ.get(BREAK_ENV, "").split(","):
            raise ImportError(f"disabled by {BREAK_ENV}")
        module = importlib.import_module(package)
    except (ImportError, OSError) as exc:  # OSError: the shared library itself did not load
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise AudioBackendError(
            f"audio backend {package!r} cannot be loaded ({type(exc).__name__}: {reason}); "
            f"fix: pip install --force-reinstall '{REPAIR[package]}'"
        ) from None
    _loaded[package] = module
    return module
