"""GPT-SoVITS's s1 (GPT) weight files: read one to start from, write one its webui loads.

Both upstream s1 files are one `torch.save`d dict (upstream code read to learn
the format: s1_train.py, TTS_infer_pack/TTS.py; none of it used):

    weight   state dict of Text2SemanticDecoder, every key prefixed "model."
             (Lightning's attribute), 295 tensors for v2+; fp32 in the pretrained
             files, fp16 in GPT_weights*/<exp>-e<E>.ckpt
    config   the whole training config as nested plain dicts; inference reads
             config["data"]["max_sec"] and config["model"] (hidden_dim,
             embedding_dim, head, n_layer, vocab_size, phoneme_vocab_size,
             dropout, EOS) and builds the model from them
    info     "GPT-e<E>" (GPT_weights files only)

`read_s1_file` loads with `torch.load(weights_only=True)`: these files hold
only dicts, lists, strings, numbers and tensors, which the restricted
unpickler accepts. A file that needs more (an arbitrary pickled object) is
refused with a one-line error instead of being executed.
"""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path

import torch
from torch import nn

from trainer.audio_constants import MAX_SLICE_SECONDS
from trainer.atomic import atomic_writer

PREFIX = "model."
V1_PHONEMES = 512  # GPT-SoVITS v1's phoneme embedding rows (v2+: 732)
TEXT_EMBEDDING = "ar_text_embedding.word_embeddings.weight"
MAX_SEC = int(MAX_SLICE_SECONDS)  # upstream's s1 data.max_sec (an int in its config): inference stops after 50 x max_sec tokens


def weights_folder(version: str) -> str:
    """GPT-SoVITS's folder for s1 weights of a model version (its config.py's names)."""
    return "GPT_weights" if version == "v1" else f"GPT_weights_{version}"


def read_s1_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The GPT state dict of a GPT-SoVITS s1 file, "model." removed, tensors as stored.

    ValueError (one line, naming the file) for a missing, damaged or foreign file."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (expected a GPT-SoVITS s1 .ckpt)") from None
    except pickle.UnpicklingError:
        raise ValueError(_not_s1(path, "it pickles objects beyond tensors and plain data")) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a readable torch file (truncated or damaged?): {first[:160]}") from None
    weight = data.get("weight") if isinstance(data, dict) else None
    if not isinstance(weight, dict):
        raise ValueError(_not_s1(path, "no 'weight' dict"))
    state = {}
    for key, value in weight.items():
        if not isinstance(key, str) or not key.startswith(PREFIX):
            raise ValueError(_not_s1(path, f"weight key {key!r} lacks the 'model.' prefix of s1 files"))
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: weight {key!r} is a {type(value).__name__}, expected a tensor")
        state[key[len(PREFIX):]] = value
    return state


def _not_s1(path: Path, why: str) -> str:
    """'X: a v2 SoVITS G file (...), not a GPT-SoVITS s1 file (why)': named by what it is."""
    from trainer.gptsovits.identify import identify

    return f"{path}: {identify(path).describe()}, not a GPT-SoVITS s1 GPT file ({why}; expected a pretrained s1*.ckpt or GPT_weights*/<name>-e<E>.ckpt)"


def check_compatible(path: str | os.PathLike, state: dict[str, torch.Tensor], model: nn.Module) -> None:
    """ValueError naming the file and the first key or shape that does not match `model`."""
    expected = model.state_dict()
    text = state.get(TEXT_EMBEDDING)
    if text is not None and text.shape[0] == V1_PHONEMES and expected[TEXT_EMBEDDING].shape[0] != V1_PHONEMES:
        raise ValueError(
            f"{path}: a GPT-SoVITS v1 s1 file ({V1_PHONEMES}-phoneme table); this trainer fine-tunes the v2+ GPT "
            f"({expected[TEXT_EMBEDDING].shape[0]} phonemes): use the v2 pretrained s1 (s1bert25hz-5kh-longer-...ckpt or s1v3.ckpt)"
        )
    for key, tensor in expected.items():
        if key not in state:
            raise ValueError(f"{path}: missing key model.{key} (expected shape {list(tensor.shape)})")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(f"{path}: model.{key} has shape {list(state[key].shape)}, this model expects {list(tensor.shape)} (another model size?)")
    extra = [k for k in state if k not in expected]
    if extra:
        raise ValueError(f"{path}: unexpected key model.{extra[0]} ({len(extra)} keys this GPT does not have)")


def load_init(model: nn.Module, path: str | os.PathLike) -> str:
    """Copy a GPT-SoVITS s1 file's weights into `model` (strict; fp16 files are upcast).
    Returns what the file is, for the start event."""
    state = read_s1_file(path)
    check_compatible(path, state, model)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            tensor.copy_(state[key].to(tensor.dtype))
    return describe(state)


def describe(state: dict[str, torch.Tensor]) -> str:
    """'GPT-SoVITS s1 weights: 277 tensors, fp16': what a read file holds, in one phrase."""
    dtypes = sorted({str(t.dtype).removeprefix("torch.").replace("float", "fp") for t in state.values()})
    return f"GPT-SoVITS s1 weights: {len(state)} tensors, {'/'.join(dtypes)}"


def upstream_config(model_cfg, max_sec: float = MAX_SEC, exp_name: str = "") -> dict:
    """The `config` of a GPT_weights file: what GPT-SoVITS's inference reads, plain dicts.

    `model_cfg` is a trainer.workloads.s1.GPTConfig. The sections follow
    upstream's s1longer-v2.yaml; only data.max_sec and model.* are read by it."""
    return {
        "train": {"exp_name": exp_name, "precision": "16-mixed"},
        "data": {"max_sec": max_sec, "pad_val": model_cfg.semantic_vocab - 1},
        "model": {
            "vocab_size": model_cfg.semantic_vocab,
            "phoneme_vocab_size": model_cfg.phoneme_vocab,
            "embedding_dim": model_cfg.width,
            "hidden_dim": model_cfg.width,
            "head": model_cfg.heads,
            "linear_units": model_cfg.ffn,
            "n_layer": model_cfg.layers,
            "dropout": 0,
            "EOS": model_cfg.semantic_vocab - 1,
            "random_bert": 0,
        },
        "inference": {"top_k": 15},
    }


def write_gpt_weights(
    folder: str | os.PathLike, name: str, epoch: int, state: dict[str, torch.Tensor], config: dict
) -> Path:
    """Write folder/<name>-e<E>.ckpt as GPT-SoVITS's s1 trainer does (atomic; E = upstream_epoch(epoch),
    from 1). Returns the path."""
    from trainer.gptsovits import upstream_epoch

    epoch = upstream_epoch(epoch)
    path = Path(folder) / f"{name}-e{epoch}.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    weight = {PREFIX + k: v.detach().to("cpu").half() for k, v in state.items()}  # upstream saves .half()
    with atomic_writer(path) as f:
        torch.save({"weight": weight, "config": config, "info": f"GPT-e{epoch}"}, f)
    return path


def copy_into(path: Path, root: str | os.PathLike, version: str) -> Path:
    """Copy an exported GPT_weights file into <root>/GPT_weights_<version>/ (atomic)."""
    target = Path(root) / weights_folder(version) / path.name
    if not Path(root).is_dir():
        raise ValueError(f"gpt_sovits_root: {root} is not a folder (expected a GPT-SoVITS checkout)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(target) as f, open(path, "rb") as src:
        shutil.copyfileobj(src, f)
    return target
