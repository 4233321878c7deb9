"""Weight normalisation stored as GPT-SoVITS stores it: parameters `weight_g` and `weight_v`.

w = g * v / ||v||, the norm over every dim but 0 (per output channel of a
conv; per input channel of a transposed conv, as torch's default dim 0).
torch's current `parametrizations.weight_norm` names the same two tensors
`parametrizations.weight.original0/1`; keeping the legacy names makes our
`state_dict()` GPT-SoVITS's, key for key and in its order (bias, weight_g,
weight_v), with no mapping on load or save.

The weight is computed in a forward pre-hook from `weight_v` and `weight_g`
(pure tensor ops: traces on the meta device) and dropped again by a forward
hook, so no computed weight outlives the graph that needs it (GPT-SoVITS's
legacy hook keeps the last one as an attribute: up to ~300 MiB for s2).
`remove_weight_norm` folds g and v back into a plain `weight` parameter (what
GPT-SoVITS's inference does to its vocoders before loading or after).
"""

from __future__ import annotations

import torch
from torch import nn


def weight_norm(module: nn.Module) -> nn.Module:
    """Replace `module.weight` by `weight_g` (out, 1, ...) and `weight_v` (the weight's shape)."""
    weight = module.weight
    del module._parameters["weight"]
    dims = tuple(range(1, weight.dim()))
    module.weight_g = nn.Parameter(torch.linalg.vector_norm(weight.detach(), dim=dims, keepdim=True))
    module.weight_v = nn.Parameter(weight.detach())
    module.register_forward_pre_hook(_compute_weight)
    module.register_forward_hook(_drop_weight)
    return module


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Undo `weight_norm`: `weight` = g * v / ||v|| as a plain parameter; weight_g, weight_v and the hooks go."""
    if "weight_g" not in module._parameters:
        raise ValueError(f"{type(module).__name__} has no weight norm to remove")
    for hooks, ours in ((module._forward_pre_hooks, _compute_weight), (module._forward_hooks, _drop_weight)):
        for key in [k for k, hook in hooks.items() if hook is ours]:
            del hooks[key]
    weight = torch._weight_norm(module.weight_v.detach(), module.weight_g.detach(), 0)
    del module.weight_g, module.weight_v
    module.__dict__.pop("weight", None)
    module.weight = nn.Parameter(weight)
    return module


def _compute_weight(module: nn.Module, _inputs: tuple) -> None:
    object.__setattr__(module, "weight", torch._weight_norm(module.weight_v, module.weight_g, 0))


def _drop_weight(module: nn.Module, _inputs: tuple, _output: torch.Tensor) -> None:
    module.__dict__.pop("weight", None)
