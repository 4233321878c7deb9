"""LoRA on v3 / v4's DiT through peft, as GPT-SoVITS's `s2_train_v3_lora.py` applies it.

`cfm` becomes `get_peft_model(cfm, LoraConfig(target_modules=["to_k", "to_q",
"to_v", "to_out.0"], r=R, lora_alpha=R, init_lora_weights=True))`
(INTEROP-v3v4.md section 2): peft freezes every base parameter of `cfm` and
adds lora_A (R x 1024, Kaiming-uniform) and lora_B (1024 x R, zeros) to the
88 attention Linears (4 per block x 22); scale alpha / r = 1, no dropout, no
bias. Keys move under peft's names:
`cfm.base_model.model.estimator.transformer_blocks.<i>.attn.<to_q|...>.{base_layer.weight, lora_A.default.weight, ...}`.

peft (with transformers) takes seconds to import: it is imported here, on use
only, never on the start-up path of `advisor`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from trainer.versions import DEFAULT_LORA_RANK

TARGETS = ("to_k", "to_q", "to_v", "to_out.0")  # GPT-SoVITS's order of target_modules
DEFAULT_RANK = DEFAULT_LORA_RANK  # the webui's default (trainer/versions.py); its choices are 16, 32, 64, 128
RANKS = (16, 32, 64, 128)
WRAPPED_PREFIX = "cfm.base_model.model."  # where peft puts cfm's own keys
LORA_KEY = re.compile(r"\.lora_[AB]\.default\.weight$")


def check_rank(rank: int) -> int:
    """Any positive int works; the webui offers 16, 32, 64, 128."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank {rank!r} is invalid: expected an integer >= 1 (GPT-SoVITS offers {', '.join(map(str, RANKS))})")
    return rank


def lora_config(rank: int = DEFAULT_RANK):
    """peft's LoraConfig with upstream's targets, r = lora_alpha = rank, default init."""
    from peft import LoraConfig

    return LoraConfig(target_modules=list(TARGETS), r=check_rank(rank), lora_alpha=rank, init_lora_weights=True)


def add_lora(model: nn.Module, rank: int = DEFAULT_RANK) -> nn.Module:
    """Wrap `model.cfm` in place (peft); returns the model. Every base parameter of cfm is frozen."""
    from peft import get_peft_model

    model.cfm = get_peft_model(model.cfm, lora_config(rank))
    return model


def base_cfm(model: nn.Module) -> nn.Module:
    """The CFM under peft's wrapper of `model.cfm` (the same module, its parameters shared),
    or `model.cfm` itself when it is not wrapped (merged, or built without LoRA)."""
    cfm = model.cfm
    return cfm.get_base_model() if hasattr(cfm, "get_base_model") else cfm


def merge_lora(model: nn.Module) -> nn.Module:
    """W <- W + B A (alpha / r) in every adapted Linear, and cfm unwrapped: the 685 plain keys again."""
    model.cfm = model.cfm.merge_and_unload()
    return model


def lora_rank(model: nn.Module) -> int:
    """The rank of a wrapped model (its lora_A rows)."""
    for name, p in model.named_parameters():
        if name.endswith("lora_A.default.weight"):
            return int(p.shape[0])
    raise ValueError("the model has no LoRA adapter")


def unwrapped_key(key: str) -> str:
    """A wrapped model's key under the plain model's name (base_layer folded back), or the key as is."""
    return key.replace(WRAPPED_PREFIX, "cfm.").replace(".base_layer.", ".")


def frozen_parameter_names(model: nn.Module) -> set[str]:
    """Names of parameters that do not require grad (upstream's export leaves exactly these out)."""
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def lora_count(rank: int, blocks: int = 22, dim: int = 1024) -> int:
    """LoRA parameters: 4 Linears per block, each A (r x dim) + B (dim x r): 180,224 r at full size."""
    return blocks * len(TARGETS) * 2 * rank * dim


def merged_delta(state: dict[str, torch.Tensor], key: str, scale: float = 1.0) -> torch.Tensor:
    """scale * B @ A of the adapted Linear `key` (a plain `...attn.to_q.weight` name) from a wrapped state."""
    base = key.removeprefix("cfm.").removesuffix(".weight")
    a = state[f"{WRAPPED_PREFIX}{base}.lora_A.default.weight"]
    b = state[f"{WRAPPED_PREFIX}{base}.lora_B.default.weight"]
    return scale * (b.float() @ a.float())
