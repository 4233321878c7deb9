"""GPT-SoVITS's s2 (SoVITS) weight files: read them safely, tell their version, write its inference file.

Files read (all `torch.save` zip archives):
  pretrained  s2G*.pth / s2D*.pth       {"weight": state_dict, ...}; G has enc_q
  resume      logs_s2_<ver>/G_*.pth, D_*.pth  {"model": state_dict, "iteration", "optimizer", "learning_rate"}
  exported    SoVITS_weights*/<name>.pth     {"weight": fp16 state_dict without enc_q, "config", "info"}
v2Pro / v2ProPlus (and v3 / v4) files have their first two bytes `PK`
replaced by the ASCII version header "05" / "06" ("03" / "04"); the reader
restores `PK` in memory. The generator's version comes from its keys and
shapes (sv_emb: v2Pro+; a first upsampling kernel of 20: v2ProPlus; 322
phoneme rows: v1) and must agree with the header.

Safety: files are loaded with `torch.load(weights_only=True)`. GPT-SoVITS
pickles its private `HParams` class as "config"; such a file is loaded again
with `_RestrictedUnpickler`, which resolves only torch's tensor-rebuild
functions, storage types and OrderedDict, and turns every other class into an
inert `_Foreign` record (its pickled state kept as data, none of its code run,
since the class is never imported). Foreign records become plain dicts.

Written: `write_inference_file` makes what GPT-SoVITS's inference loads:
{"weight": fp16, no key containing "enc_q"; "config": nested plain dicts
(train / data / model, the keys inference reads); "info": "<E>epoch_<S>iteration"},
with the version header for v2Pro / v2ProPlus; atomic.
"""

from __future__ import annotations

import io
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.atomic import atomic_write_bytes

HEADERS = {b"05": "v2Pro", b"06": "v2ProPlus", b"03": "v3", b"04": "v4", b"00": "v1", b"01": "v2", b"02": "v3"}
VERSION_HEADER = {"v2Pro": b"05", "v2ProPlus": b"06"}  # what we write; v2 files stay plain zip ("PK")
SUPPORTED = ("v2", "v2Pro", "v2ProPlus")


@dataclass
class S2File:
    """One GPT-SoVITS s2 file as read: its weights (fp32 as stored or fp16), what kind, which model."""

    path: Path
    kind: str  # pretrained | resume | exported
    model: str  # generator | discriminator
    weights: dict[str, torch.Tensor]
    version: str | None  # generator: v1 / v2 / v2Pro / v2ProPlus; discriminator: v2 or "v2Pro/v2ProPlus"
    header: str | None = None  # the version the 2-byte header names, if any
    info: Any = None
    config: dict | None = None
    notes: list[str] = field(default_factory=list)


def read_s2_file(path: str | Path, what: str = "s2 weights") -> S2File:
    """Read any GPT-SoVITS s2 file; ValueError (one line naming the file) on anything else."""
    path = Path(path)
    data = _read_bytes(path, what)
    header = None
    if data[:2] != b"PK":
        if data[:2] not in HEADERS:
            raise ValueError(f"{what} {path}: not a torch zip file (starts with {data[:4]!r}; expected PK or a GPT-SoVITS version header 05/06)")
        header = HEADERS[data[:2]]
        if header not in SUPPORTED:
            raise ValueError(f"{what} {path}: a GPT-SoVITS {header} file (header {data[:2].decode()}); this trainer supports {', '.join(SUPPORTED)}")
        data = b"PK" + data[2:]
    obj = _load(data, path, what)
    return _classify(obj, path, header, what)


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise ValueError(f"{what} {path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) < 4:
        raise ValueError(f"{what} {path}: {len(data)} bytes, too short for a torch file")
    return data


def _load(data: bytes, path: Path, what: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return _load_restricted(data, path, what)  # a pickled class (GPT-SoVITS's HParams): without importing it
    except Exception as exc:
        raise ValueError(f"{what} {path}: not a loadable torch file ({_short(exc)})") from None


def _load_restricted(data: bytes, path: Path, what: str) -> Any:
    """torch.load through `_RestrictedPickle`: foreign classes become inert data, nothing is imported."""
    try:
        return load_restricted(data)
    except Exception as exc:
        raise ValueError(f"{what} {path}: not a loadable torch file ({_short(exc)})") from None


def load_restricted(data: bytes) -> Any:
    """A torch file's bytes loaded through `_RestrictedPickle` (foreign classes -> plain dicts);
    raises what torch.load raises."""
    return _plain(torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle))


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class _Foreign:
    """Stand-in for a class this reader will not import: keeps the pickled state as data."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


_TORCH_REBUILD = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves torch's tensor pieces and OrderedDict; any other class becomes `_Foreign`."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in _TORCH_REBUILD:
            return getattr(torch._utils, name)
        if module == "torch" and (name.endswith("Storage") or name in ("device", "Size")):
            return getattr(torch, name)
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(name, (_Foreign,), {"__module__": "foreign." + module})


class _RestrictedPickle:
    """A `pickle_module` for torch.load: the restricted Unpickler, pickle's everything else."""

    Unpickler = _RestrictedUnpickler
    load = staticmethod(lambda f, **kw: _RestrictedUnpickler(f, **kw).load())
    __name__ = "restricted_pickle"


def _plain(obj: Any) -> Any:
    """Foreign records -> dicts of their state (HParams keeps its items as attributes)."""
    if isinstance(obj, _Foreign):
        state = obj.state
        if isinstance(state, dict) and "__dict__" not in state:
            return {k: _plain(v) for k, v in state.items()}
        return {"args": [_plain(a) for a in obj.args], "state": _plain(state)}
    if isinstance(obj, dict):
        return type(obj)((k, _plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _classify(obj: Any, path: Path, header: str | None, what: str) -> S2File:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} {path}: holds a {type(obj).__name__}, expected GPT-SoVITS's dict with 'weight' or 'model'")
    if isinstance(obj.get("model"), dict):
        kind, weights = "resume", obj["model"]
    elif isinstance(obj.get("weight"), dict):
        kind, weights = "pretrained", obj["weight"]
    else:
        raise ValueError(f"{what} {path}: no 'weight' or 'model' state dict (keys: {', '.join(map(str, list(obj)[:6]))})")
    bad = [k for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad or not weights:
        raise ValueError(f"{what} {path}: the state dict is empty or holds non-tensors (first: {bad[:1]})")
    if any(k.startswith(("cfm.", "wns1.")) for k in weights):
        raise ValueError(f"{what} {path}: a GPT-SoVITS v3 / v4 file (SynthesizerTrnV3: cfm / wns1 keys); train it with version v3 or v4")
    model = "discriminator" if all(k.startswith("discriminators.") for k in weights) else "generator"
    if model == "generator" and kind == "pretrained" and not any("enc_q" in k for k in weights):
        kind = "exported"
    version = generator_version(weights) if model == "generator" else discriminator_version(weights)
    if header is not None and model == "generator" and version != header:
        raise ValueError(f"{what} {path}: the header says {header} but the weights are a {version} generator")
    config = obj.get("config") if isinstance(obj.get("config"), dict) else None
    return S2File(path, kind, model, weights, version, header, obj.get("info", obj.get("iteration")), config)


def generator_version(weights: dict[str, torch.Tensor]) -> str:
    """v1 / v2 / v2Pro / v2ProPlus from a generator state dict's keys and shapes (any size)."""
    emb = weights.get("enc_p.text_embedding.weight")
    if emb is not None and emb.shape[0] == 322:
        return "v1"
    if "sv_emb.weight" not in weights:
        return "v2"
    up = weights.get("dec.ups.0.weight_v")
    return "v2ProPlus" if up is not None and up.shape[-1] == 20 else "v2Pro"


def discriminator_version(weights: dict[str, torch.Tensor]) -> str:
    """v2 (scale + 5 periods) or v2Pro/v2ProPlus (scale + 7 periods)."""
    subs = {int(m.group(1)) for k in weights if (m := re.match(r"discriminators\.(\d+)\.", k))}
    return "v2" if len(subs) <= 6 else "v2Pro/v2ProPlus"


def check_version(file: S2File, version: str, what: str) -> None:
    """One-line error naming both versions when a file does not fit the run's `version`."""
    ok = file.version == version if file.model == "generator" else (file.version == "v2") == (version == "v2")
    if not ok:
        raise ValueError(f"{what} {file.path}: a GPT-SoVITS {file.version} {file.model}, but this run trains {version} (pass --version {file.version.split('/')[0]}, or a {version} file)")


def discriminator_beside(path: str | Path) -> Path | None:
    """GPT-SoVITS's D file next to a G file: s2G…→s2D…, G_…→D_…; None if absent or not such a name."""
    path = Path(path)
    name = path.name
    if name.startswith("s2G"):
        other = "s2D" + name[3:]
    elif name.startswith("G_"):
        other = "D_" + name[2:]
    else:
        return None
    candidate = path.with_name(other)
    return candidate if candidate.is_file() else None


def load_weights(module: torch.nn.Module, file: S2File, what: str, allow_missing: str | None = None) -> list[str]:
    """Copy `file`'s tensors into `module` (cast to its dtypes). Keys missing from the file are an
    error unless they contain `allow_missing` (exported files carry no enc_q); returns those keys."""
    own = module.state_dict()
    unexpected = sorted(set(file.weights) - set(own))
    missing = sorted(set(own) - set(file.weights))
    tolerated = [k for k in missing if allow_missing and allow_missing in k]
    missing = [k for k in missing if k not in tolerated]
    if unexpected or missing:
        keys = (unexpected or missing)[:3]
        raise ValueError(f"{what} {file.path}: {'unexpected' if unexpected else 'missing'} keys {', '.join(keys)} (the file is not this {file.model}'s size; same version and size expected)")
    for key, target in own.items():
        if key in file.weights and file.weights[key].shape != target.shape:
            raise ValueError(f"{what} {file.path}: {key} has shape {tuple(file.weights[key].shape)}, the model's is {tuple(target.shape)} (a different size: full vs tiny?)")
    with torch.no_grad():
        for key, target in own.items():
            if key in file.weights:
                target.copy_(file.weights[key].to(target.dtype))
    return tolerated


# --- writing -----------------------------------------------------------------------------
def inference_config(version: str, cfg: Any, name: str) -> dict:
    """GPT-SoVITS's s2 hyper-parameters as nested plain dicts: what its inference indexes
    (data.*, train.segment_size, model.* as SynthesizerTrn's keyword arguments)."""
    return {
        "train": {"segment_size": 20480, "learning_rate": 1e-4, "betas": [0.8, 0.99], "eps": 1e-9, "fp16_run": True,
                  "lr_decay": 0.999875, "c_mel": 45, "c_kl": 1.0, "text_low_lr_rate": 0.4},
        "data": {"max_wav_value": 32768.0, "sampling_rate": 32000, "filter_length": 2048, "hop_length": 640,
                 "win_length": 2048, "n_mel_channels": 128, "mel_fmin": 0.0, "mel_fmax": None, "add_blank": True,
                 "n_speakers": 300, "cleaned_text": True},
        "model": {
            "inter_channels": cfg.hidden, "hidden_channels": cfg.hidden, "filter_channels": cfg.filter_channels,
            "n_heads": cfg.heads, "n_layers": cfg.layers, "kernel_size": cfg.attn_kernel, "p_dropout": cfg.dropout,
            "resblock": "1", "resblock_kernel_sizes": list(cfg.resblock_kernels),
            "resblock_dilation_sizes": [list(cfg.resblock_dilations)] * len(cfg.resblock_kernels),
            "upsample_rates": list(cfg.upsample_rates), "upsample_initial_channel": cfg.upsample_channels,
            "upsample_kernel_sizes": list(cfg.upsample_kernels), "n_layers_q": 3, "use_spectral_norm": False,
            "gin_channels": cfg.gin, "semantic_frame_rate": "25hz", "freeze_quantizer": True, "version": version,
        },
        "name": name,
        "content_module": "cnhubert",
    }


def inference_bytes(generator_state: dict[str, torch.Tensor], version: str, config: dict, epoch: int, step: int) -> bytes:
    """The bytes of a SoVITS_weights file: fp16 weights without enc_q, config, info, version header."""
    weight = {k: v.detach().to("cpu").half() for k, v in generator_state.items() if "enc_q" not in k}
    buffer = io.BytesIO()
    torch.save({"weight": weight, "config": config, "info": f"{epoch}epoch_{step}iteration"}, buffer)
    data = buffer.getvalue()
    header = VERSION_HEADER.get(version)
    return header + data[2:] if header else data


def write_inference_file(path: str | Path, generator_state: dict, version: str, config: dict, epoch: int, step: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, inference_bytes(generator_state, version, config, epoch, step))
    return path


def restore_header(data: bytes) -> bytes:
    """A headed file's bytes with `PK` back in place (for torch.load)."""
    return data if data[:2] == b"PK" else b"PK" + data[2:]
