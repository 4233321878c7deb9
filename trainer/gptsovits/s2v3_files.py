"""GPT-SoVITS v3 / v4 s2 weight files: read pretrained, LoRA-export and resume files; write the LoRA export.

Files (INTEROP-v3v4.md sections 6, 7, 9), all `torch.save` zip archives:
  pretrained  s2Gv3.pth, gsv-v4-pretrained/s2Gv4.pth   {"weight": 685 plain keys, "config"} (or a bare state dict); "PK"
  lora        SoVITS_weights_v3|v4/<exp>_e<E>_s<S>_l<R>.pth   {"weight": 258 fp16 tensors under peft's
              names, "config", "info", "lora_rank"}; first two bytes "03" / "04" instead of "PK"
  resume      logs_s2_<v>_lora_<R>/G_*.pth            {"model": the whole wrapped state (861 keys), ...}

Which version a file is: v3 and v4 have the same keys and shapes, so the
weights cannot tell. In this order, the first that answers:
  1. the header "03" / "04" (LoRA exports: what upstream's inference reads);
  2. the md5 of the first 8 KiB against upstream's two pretrained files (what
     upstream's `get_sovits_version_from_path_fast` checks);
  3. config["model"]["version"] (upstream's trainer writes it; plain data or its HParams);
  4. the file name: s2Gv3 / s2Gv4 / s2v4, or a SoVITS_weights_v3|v4 / logs_s2_v3|v4_lora folder.
A LoRA export's base (`find_base`): given, else its config train.pretrained_s2G,
else upstream's fixed path in the GPT-SoVITS folder that holds the export.
A file none of these names is loaded as the run's version, and the note says so.
Files are read with `weights_only=True`, falling back to s2_files' restricted
unpickler for upstream's pickled HParams (no foreign code is imported).

Written: the LoRA export, byte-compatible with upstream's `process_ckpt.py`
writer except that `config` is plain nested dicts (upstream pickles its
HParams class; its loaders index both the same way) so the file also loads
with `weights_only=True`; atomic (trainer/atomic.py).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.atomic import atomic_write_bytes
from trainer.gptsovits import s2_files
from trainer.sovits import lora

HEADER = {"v3": b"03", "v4": b"04"}
PRETRAINED_MD5 = {"43797be674a37c1c83ee81081941ed0f": "v3", "4f26b9476d0c5033e04162c486074374": "v4"}  # first 8192 bytes
PRETRAINED_PATH = {"v3": "GPT_SoVITS/pretrained_models/s2Gv3.pth", "v4": "GPT_SoVITS/pretrained_models/gsv-v4-pretrained/s2Gv4.pth"}
NAME_PATTERNS = (
    (re.compile(r"s2G?v([34])(?![0-9])"), "file name"),
    (re.compile(r"^SoVITS_weights_v([34])$"), "folder name"),
    (re.compile(r"^logs_s2_v([34])_lora"), "folder name"),
)
EXPORTED_PARTS = ("ref_enc.", "quantizer.", "bridge.", "wns1.", "linear_mel.")  # upstream exports these whole
INV_FREQ = "rotary_embed.inv_freq"  # a buffer: exported too; optional on load (rebuilt identically)


@dataclass
class V3File:
    """One GPT-SoVITS v3 / v4 s2 file as read."""

    path: Path
    kind: str  # pretrained | lora | resume
    weights: dict[str, torch.Tensor]
    version: str | None
    version_source: str  # what told the version (module doc), or "nothing"
    lora_rank: int | None = None
    config: dict | None = None
    info: Any = None
    notes: list[str] = field(default_factory=list)


def read_v3_file(path: str | Path, what: str = "init") -> V3File:
    """Read any v3 / v4 s2 file; a one-line ValueError naming the file on anything else."""
    path = Path(path)
    data = s2_files._read_bytes(path, what)
    header = next((v for v, h in HEADER.items() if data[:2] == h), None)
    if header is None and data[:2] != b"PK":
        other = s2_files.HEADERS.get(data[:2])
        expected = "expected PK or the v3 / v4 header 03 / 04"
        raise ValueError(f"{what} {path}: " + (f"a GPT-SoVITS {other} file (header {data[:2].decode()}), {expected}" if other else f"not a torch zip file (starts with {data[:4]!r}; {expected})"))
    obj = s2_files._load(b"PK" + data[2:], path, what)
    kind, weights, meta = _classify(obj, path, header, what)
    version, source = _version(path, data, header, meta)
    rank = meta.get("lora_rank") if isinstance(meta, dict) else None
    if kind != "pretrained" and rank is None:
        rank = _rank_of(weights)
    config = meta.get("config") if isinstance(meta, dict) and isinstance(meta.get("config"), dict) else None
    return V3File(path, kind, weights, version, source, rank, config, meta.get("info") if isinstance(meta, dict) else None)


def _classify(obj: Any, path: Path, header: str | None, what: str) -> tuple[str, dict, dict]:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} {path}: holds a {type(obj).__name__}, expected GPT-SoVITS's dict with 'weight' or 'model'")
    if isinstance(obj.get("model"), dict):
        kind, weights = "resume", obj["model"]
    elif isinstance(obj.get("weight"), dict):
        wrapped = header is not None or "lora_rank" in obj or any(k.startswith(lora.WRAPPED_PREFIX) for k in obj["weight"])
        kind, weights = ("lora" if wrapped else "pretrained"), obj["weight"]
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind, weights, obj = "pretrained", obj, {}  # a bare state dict
    else:
        raise ValueError(f"{what} {path}: no 'weight' or 'model' state dict (keys: {', '.join(map(str, list(obj)[:6]))})")
    bad = [k for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad or not weights:
        raise ValueError(f"{what} {path}: the state dict is empty or holds non-tensors (first: {bad[:1]})")
    if not any(k.startswith("cfm.") for k in weights) and not any(k.startswith(("wns1.", "bridge.")) for k in weights):
        found = "a v2-family generator (enc_q / dec keys)" if any(k.startswith(("enc_q.", "dec.")) for k in weights) else "no cfm / wns1 / bridge keys"
        raise ValueError(f"{what} {path}: not a GPT-SoVITS v3 / v4 SynthesizerTrnV3 file ({found})")
    if kind == "pretrained" and any(lora.LORA_KEY.search(k) for k in weights):
        kind = "lora"
    return kind, weights, obj


def _version(path: Path, data: bytes, header: str | None, meta: Any) -> tuple[str | None, str]:
    if header is not None:
        return header, f"header {HEADER[header].decode()}"
    md5 = PRETRAINED_MD5.get(hashlib.md5(data[:8192]).hexdigest())
    if md5 is not None:
        return md5, "md5 of the first 8 KiB (upstream's pretrained file)"
    model = (meta.get("config") or {}).get("model") if isinstance(meta, dict) and isinstance(meta.get("config"), dict) else None
    if isinstance(model, dict) and model.get("version") in HEADER:
        return model["version"], "config model.version"
    for name, (pattern, source) in ((path.name, NAME_PATTERNS[0]), (path.parent.name, NAME_PATTERNS[1]), (path.parent.name, NAME_PATTERNS[2])):
        match = pattern.search(name)
        if match:
            return "v" + next(g for g in match.groups() if g), f"{source} {name}"
    return None, "nothing"


def _rank_of(weights: dict[str, torch.Tensor]) -> int | None:
    for key, value in weights.items():
        if key.endswith("lora_A.default.weight"):
            return int(value.shape[0])
    return None


# --- loading into a model -----------------------------------------------------------------
def load_init(model: nn.Module, init: str | Path, version: str, base: str | Path | None = None) -> tuple[list[str], Path | None]:
    """Load `init` into a LoRA-wrapped SynthesizerTrnV3 of `version`; a LoRA export goes over
    its base (`find_base`). Returns one note per decision and the pretrained file the
    weights stand on (`init` itself, or the export's base; None for a resume file: unknown)."""
    file = read_v3_file(init, "init")
    notes = [_check_version(file, version, "init")]
    rank = lora.lora_rank(model)
    if file.kind == "pretrained":
        load_plain(model, file, "init")
        return [f"generator from {file.path} (pretrained {version}); LoRA rank {rank} starts fresh", *notes], file.path
    if file.lora_rank != rank:
        raise ValueError(f"init {file.path}: LoRA rank {file.lora_rank}, but this run trains rank {rank} (set lora_rank: {file.lora_rank})")
    if file.kind == "resume":
        load_wrapped(model, file, "init", complete=True)
        return [f"generator from {file.path} (GPT-SoVITS resume file, rank {rank})", *notes], None
    base_file = read_v3_file(find_base(file, version, base), "base")
    if base_file.kind != "pretrained":
        raise ValueError(f"base {base_file.path}: a {base_file.kind} file, expected the pretrained s2G{version}.pth")
    notes.append(_check_version(base_file, version, "base"))
    load_plain(model, base_file, "base")
    kept = load_wrapped(model, file, "init", complete=False)
    if kept:
        notes.append(f"init {file.path.name} leaves out {len(kept)} trained tensors (first {kept[0]}): they keep the base's values")
    return [f"generator from {base_file.path} (pretrained) + {file.path} (LoRA rank {rank}, {file.info or 'no info'})", *notes], base_file.path


def find_base(export: V3File, version: str, base: str | Path | None = None) -> Path:
    """The pretrained file a LoRA export was trained on: `base` if given; else the export's
    config train.pretrained_s2G (upstream's trainer and ours write it; absolute, or relative
    to the GPT-SoVITS folder holding SoVITS_weights_<v>/); else upstream's fixed path there."""
    if base is not None:
        return Path(base)
    root = export.path.resolve().parent.parent
    train = (export.config or {}).get("train")
    named = train.get("pretrained_s2G") if isinstance(train, dict) else None
    candidates = ([Path(named), root / named] if isinstance(named, str) and named else []) + [root / PRETRAINED_PATH[version]]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        looked = ", ".join(str(c) for c in candidates)
        raise ValueError(f"init {export.path}: a LoRA export holds no base weights and its base is not where it says (looked at {looked}); pass the pretrained s2G{version}.pth as the base")
    return found


def _check_version(file: V3File, version: str, what: str) -> str:
    if file.version is None:
        return f"{what} {file.path.name}: the file does not say v3 or v4 (same shapes); loaded as this run's {version}"
    if file.version != version:
        raise ValueError(f"{what} {file.path}: a GPT-SoVITS {file.version} file ({file.version_source}), but this run trains {version} (set version: {file.version} or pass a {version} file)")
    return f"{what} {file.path.name}: {file.version}, from its {file.version_source}"


def load_plain(model: nn.Module, file: V3File, what: str) -> None:
    """Copy a plain (685-key) state into the wrapped model; LoRA adapters and inv_freq may be absent."""
    own = {lora.unwrapped_key(k): k for k in model.state_dict() if not lora.LORA_KEY.search(k)}
    unexpected = [k for k in file.weights if k not in own]
    missing = [k for k in own if k not in file.weights and not k.endswith(INV_FREQ)]
    _check_keys(file, what, unexpected, missing)
    _copy(model, {own[k]: v for k, v in file.weights.items()}, file, what)


def load_wrapped(model: nn.Module, file: V3File, what: str, complete: bool) -> list[str]:
    """Copy peft-named tensors. `complete` (resume files): every key of the model must be there.
    Otherwise (a LoRA export) every LoRA tensor must be; an exported part the file leaves out
    keeps the base's values, as upstream's strict=False load does: those keys are returned."""
    own = model.state_dict()
    unexpected = [k for k in file.weights if k not in own]
    absent = [k for k in own if k not in file.weights and not k.endswith(INV_FREQ)]
    required = absent if complete else [k for k in absent if lora.LORA_KEY.search(k)]
    _check_keys(file, what, unexpected, required)
    _copy(model, file.weights, file, what)
    return [] if complete else [k for k in absent if exported(k)]


def _check_keys(file: V3File, what: str, unexpected: list[str], missing: list[str]) -> None:
    if unexpected or missing:
        keys = (unexpected or missing)[:3]
        raise ValueError(f"{what} {file.path}: {'unexpected' if unexpected else 'missing'} keys {', '.join(keys)} (not this model's {file.kind} layout: same size expected)")


def _copy(model: nn.Module, weights: dict[str, torch.Tensor], file: V3File, what: str) -> None:
    own = model.state_dict()
    for key, value in weights.items():
        if value.shape != own[key].shape:
            raise ValueError(f"{what} {file.path}: {key} has shape {tuple(value.shape)}, the model's is {tuple(own[key].shape)} (a different size: full vs tiny?)")
    with torch.no_grad():
        for key, value in weights.items():
            own[key].copy_(value.to(own[key].dtype))


# --- writing ------------------------------------------------------------------------------
def exported(key: str) -> bool:
    """Upstream's export rule: every state key that is not a frozen parameter (INTEROP-v3v4.md section 6)."""
    return key.startswith(EXPORTED_PARTS) or bool(lora.LORA_KEY.search(key)) or key.endswith(INV_FREQ)


def export_name(run: str, epoch: int, step: int, rank: int) -> str:
    return f"{run}_e{epoch}_s{step}_l{rank}.pth"


def inference_config(version: str, cfg: Any, name: str, rank: int, base: str | Path | None = None, grad_ckpt: bool = False) -> dict:
    """What upstream's loaders index, as plain dicts: data.*, train.segment_size, model.* (SynthesizerTrnV3's
    arguments); train.pretrained_s2G names the base the adapter was trained on, when known; train.grad_ckpt
    is how the run trained (as upstream's webui records it; inference ignores it)."""
    config = s2_files.inference_config(version, cfg.text, name)
    config["train"].update(lora_rank=rank, grad_ckpt=bool(grad_ckpt))
    if base is not None:
        config["train"]["pretrained_s2G"] = str(Path(base).resolve())
    config["model"]["version"] = version
    return config


def export_bytes(state: dict[str, torch.Tensor], version: str, config: dict, epoch: int, step: int, rank: int) -> bytes:
    weight = OrderedDict((k, v.detach().to("cpu").half()) for k, v in state.items() if exported(k))
    if not any(lora.LORA_KEY.search(k) for k in weight):
        raise ValueError("the state to export has no LoRA adapter (expected peft's lora_A / lora_B keys)")
    obj = OrderedDict(weight=weight, config=config, info=f"{epoch}epoch_{step}iteration", lora_rank=int(rank))
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return HEADER[version] + buffer.getvalue()[2:]


def write_lora_export(export_dir: str | Path, run: str, epoch: int, step: int, state: dict, version: str, cfg: Any, rank: int,
                      base: str | Path | None = None, grad_ckpt: bool = False) -> Path:
    """export_dir/SoVITS_weights_<v>/<run>_e<E>_s<S>_l<R>.pth, written atomically."""
    path = Path(export_dir) / f"SoVITS_weights_{version}" / export_name(run, epoch, step, rank)
    data = export_bytes(state, version, inference_config(version, cfg, run, rank, base, grad_ckpt), epoch, step, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path
