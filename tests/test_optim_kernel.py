"""AdamW's kernel (trainer/optim.adamw_kernel): fused on CUDA, foreach elsewhere, the same numbers."""

import pytest
import torch

from trainer.optim import adamw_kernel
from trainer.workloads import get_workload


def trained(kernel: dict, device: str, steps: int = 3) -> list[torch.Tensor]:
    """A tiny s2's generator after `steps` AdamW updates on fixed gradients, with `kernel`."""
    torch.manual_seed(0)
    workload = get_workload("s2", size="tiny")
    models = workload.build(device)
    groups = workload.param_groups(models)["generator"]
    opt = torch.optim.AdamW(groups, lr=1e-3, **kernel, **workload.adamw_options())
    params = [p for g in groups for p in g["params"]]
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=g).to(device) for p in params]
    for _ in range(steps):
        for p, grad in zip(params, grads):
            p.grad = grad.clone()
        opt.step()
    return [p.detach().cpu() for p in params]


def test_the_workloads_use_foreach_off_cuda():
    workload = get_workload("s1", size="tiny")
    opt = workload.make_optimizers(workload.build("cpu"))["gpt"]
    assert opt.defaults["foreach"] is True and not opt.defaults.get("fused")
    assert adamw_kernel([{"params": [torch.zeros(2, device="meta")]}]) == {"foreach": True}


def test_foreach_keeps_the_per_tensor_loops_numbers():
    loop, grouped = trained({"foreach": False}, "cpu"), trained({"foreach": True}, "cpu")
    for a, b in zip(loop, grouped):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_on_cuda_keeps_the_numbers():
    workload = get_workload("s2", size="tiny")
    opt = workload.make_optimizers(workload.build("cuda"))["generator"]
    assert opt.defaults["fused"] is True
    loop, fused = trained({"foreach": False}, "cuda"), trained({"fused": True}, "cuda")
    for a, b in zip(loop, fused):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
