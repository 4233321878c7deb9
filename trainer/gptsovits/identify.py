"""What a weights file is: the one reader every `--init` error names a file with.

    found = identify("GPT-SoVITS/GPT_SoVITS/pretrained_models/s1v3.ckpt")
    found.kind, found.version   # "s1", None
    found.describe()            # "an s1 GPT file (GPT-SoVITS pretrained .ckpt)"

Kinds (what GPT-SoVITS and this tool write; formats in INTEROP.md / INTEROP-v3v4.md):

    s1          {"weight": {"model.<key>": tensor}, "config", ["info": "GPT-e<E>"]}:
                pretrained .ckpt or GPT_weights*/<exp>-e<E>.ckpt
    s2G         a SoVITS generator: pretrained s2G*.pth, resume G_*.pth ({"model": ...}),
                SoVITS_weights*/*.pth (no enc_q); version v1/v2/v2Pro/v2ProPlus from the
                keys and shapes, v3/v4 (SynthesizerTrnV3: `cfm.` and `wns1.` keys) from
                the 2-byte header (03/04) when there is one
    s2D         a SoVITS discriminator (s2D*.pth, D_*.pth): every key "discriminators."
    lora        a v3/v4 LoRA export (`lora_A`/`lora_B` keys, "lora_rank")
    checkpoint  one of our training checkpoints (RUN_DIR/checkpoints/step_*.pt)
    export      one of our plain exports (RUN_DIR/export/<model>.pt)
    other       anything else: not a torch file, or a torch file of something else

Nothing is unpickled beyond plain data: `torch.load(weights_only=True)`, and for
GPT-SoVITS's files that pickle its HParams class, s2_files' restricted unpickler
(foreign classes become inert records; none is imported).
"""

from __future__ import annotations

import functools
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.gptsovits.s2_files import HEADERS, discriminator_version, generator_version, load_restricted

KINDS = ("s1", "s2G", "s2D", "lora", "checkpoint", "export", "other")
V3_KEYS = ("cfm.", "wns1.", "bridge.")  # SynthesizerTrnV3 (v3 / v4): INTEROP-v3v4.md section 1
WANTED = {  # what each --init asks for, as the errors say it
    "s1": "a GPT-SoVITS s1 GPT file (pretrained s1*.ckpt or GPT_weights*/<name>-e<E>.ckpt)",
    "s2G": "a SoVITS G file (s2G*.pth, G_*.pth or SoVITS_weights*/*.pth)",
    "s2D": "a SoVITS D file (s2D*.pth or D_*.pth)",
}


@dataclass(frozen=True)
class Found:
    """What `identify` found in a file."""

    path: Path
    kind: str  # one of KINDS
    version: str | None = None  # s2G: v1/v2/v2Pro/v2ProPlus/v3/v4; s2D: v2 or v2Pro/v2ProPlus
    detail: str = ""  # where it comes from (pretrained, resume, exported, workload ...) or why "other"

    def describe(self) -> str:
        """'an s1 GPT file (GPT-SoVITS pretrained .ckpt)', 'a v2Pro SoVITS G file (s2G, pretrained)' ..."""
        extra = f" ({self.detail})" if self.detail else ""
        if self.kind == "s1":
            return f"an s1 GPT file{extra}"
        if self.kind == "s2G":
            return f"a {self.version} SoVITS G file{extra}"
        if self.kind == "s2D":
            return f"a {self.version} SoVITS D file{extra}"
        if self.kind == "lora":
            return f"a {self.version or 'v3/v4'} SoVITS LoRA export{extra}"
        if self.kind == "checkpoint":
            return f"a sovits-advisor training checkpoint{extra}"
        if self.kind == "export":
            return f"a sovits-advisor export{extra}"
        return f"not a weights file this trainer reads{extra}"


def identify(path: str | os.PathLike) -> Found:
    """Read `path` safely and say what it is (never raises for a readable file; ValueError
    naming the file when it is missing or unreadable). Cached per (path, size, mtime): a
    preflight asks about the same pretrained file several times."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    st = path.stat()
    return _identify(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _identify(path: Path, size: int, mtime_ns: int) -> Found:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    header = None
    if data[:2] != b"PK":
        if data[:2] not in HEADERS or data[2:4] != b"\x03\x04":
            return Found(path, "other", detail=f"not a torch file: starts with {data[:4]!r}")
        header = HEADERS[data[:2]]
        data = b"PK" + data[2:]
    try:
        obj = _load(data)
    except Exception as exc:  # truncated, not a torch archive: all the same to the caller
        first = " ".join(str(exc).split())[:120] or type(exc).__name__
        return Found(path, "other", detail=f"not a loadable torch file: {first}")
    return classify(path, obj, header)


def _load(data: bytes) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return load_restricted(data)  # GPT-SoVITS pickles its HParams class: read it as inert data


def classify(path: Path, obj: Any, header: str | None = None) -> Found:
    """The kind of an already loaded file's contents (see the module docstring)."""
    if not isinstance(obj, dict):
        return Found(path, "other", detail=f"a torch file holding a {type(obj).__name__}")
    if {"models", "optimizers", "position"} <= set(obj):
        return Found(path, "checkpoint", detail=f"workload {obj.get('workload')}, size {obj.get('size')}")
    weights, where = _weights(obj)
    if weights is None:
        keys = ", ".join(map(str, list(obj)[:4])) or "nothing"
        return Found(path, "other", detail=f"a dict of {keys}, no GPT-SoVITS state dict")
    keys = [k for k in weights if isinstance(k, str)]
    if not keys or len(keys) != len(weights):
        return Found(path, "other", detail="an empty or non-string-keyed state dict")
    if where == "weight" and all(k.startswith("model.") for k in keys):
        info = str(obj.get("info", ""))
        return Found(path, "s1", detail="GPT_weights, " + info if info.startswith("GPT-e") else "GPT-SoVITS pretrained .ckpt")
    if any(".lora_A." in k or ".lora_B." in k for k in keys) or "lora_rank" in obj:
        return Found(path, "lora", header if header in ("v3", "v4") else None, f"rank {obj.get('lora_rank')}")
    if all(k.startswith("discriminators.") for k in keys):
        return Found(path, "s2D", discriminator_version(weights), _origin(where, keys))
    if any(k.startswith(V3_KEYS) for k in keys):
        return Found(path, "s2G", header if header in ("v3", "v4") else "v3/v4", _origin(where, keys))
    if any(k.startswith(("enc_p.", "dec.", "flow.")) for k in keys):
        return Found(path, "s2G", generator_version(weights), _origin(where, keys))
    if where == "plain" and any(k.startswith(("ar_text_embedding.", "ar_audio_embedding.", "h.layers.")) for k in keys):
        return Found(path, "export", detail="an s1 GPT state dict (export/gpt.pt): GPT-SoVITS's s1 files prefix every key 'model.'")
    if where == "plain" and any(k.startswith(("discriminators.", "msd.", "mpd.")) for k in keys):
        return Found(path, "export", detail="a discriminator state dict")
    return Found(path, "other", detail=f"a state dict of {keys[0].split('.')[0]}.* keys")


def _weights(obj: dict) -> tuple[dict | None, str]:
    """(the state dict, where it was: weight / model / plain) or (None, '')."""
    for where in ("weight", "model"):
        if isinstance(obj.get(where), dict):
            return obj[where], where
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, "plain"
    return None, ""


def _origin(where: str, keys: list[str]) -> str:
    if where == "model":
        return "GPT-SoVITS resume file"
    if where == "plain":
        return "a plain state dict"
    if any("enc_q" in k for k in keys):
        return "GPT-SoVITS pretrained"
    return "SoVITS_weights export"


def expect(path: str | os.PathLike, want: str, workload: str) -> Found:
    """`path` identified, or ValueError saying what it is and what `--workload` needs:
    "X is an s1 GPT file; --workload s2 needs a SoVITS G file (s2G*.pth, ...)"."""
    found = identify(path)
    if found.kind != want:
        flag = "--init-d" if want == "s2D" else "--init"
        raise ValueError(f"{flag} {found.path}: {found.describe()}; --workload {workload} needs {WANTED[want]}")
    return found
