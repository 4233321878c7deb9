"""OOM policy and is_oom_error: real exceptions, real (tiny) s1 batches."""

from __future__ import annotations

import math

import pytest
import torch

from advisor.watchdog.oom import GENERIC_ADVICE, OOMConfig, OOMPolicy, is_oom_error, lr_factor
from trainer.policy import OOMInfo
from trainer.workload import split_batch
from trainer.workloads import get_workload


def oom(micro: int, accumulation: int, effective: int | None = None, step: int = 7) -> OOMInfo:
    effective = micro * accumulation if effective is None else effective
    return OOMInfo(step=step, micro_batch=micro, accumulation=accumulation, effective_batch=effective, error="CUDA out of memory")


# --- is_oom_error -----------------------------------------------------------------------


def test_real_host_allocation_failure_is_oom():
    with pytest.raises(RuntimeError) as info:
        torch.empty(1 << 60, dtype=torch.uint8)  # 1 EiB: the CPU allocator refuses
    assert is_oom_error(info.value)


def test_torch_out_of_memory_error_and_memory_error_are_oom():
    assert is_oom_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom_error(MemoryError())


@pytest.mark.parametrize(
    "message",
    [
        "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input.",
        "cuFFT error: CUFFT_INTERNAL_ERROR",
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
    ],
)
def test_library_errors_that_mean_oom(message):
    assert is_oom_error(RuntimeError(message))


def test_oom_wrapped_by_raise_from_is_found():
    try:
        try:
            torch.empty(1 << 60, dtype=torch.uint8)
        except RuntimeError as inner:
            raise ValueError("step failed") from inner
    except ValueError as outer:
        assert is_oom_error(outer)


def test_other_errors_are_not_oom():
    with pytest.raises(RuntimeError) as info:
        torch.zeros(2, 3) @ torch.zeros(4, 5)  # a real shape error
    assert not is_oom_error(info.value)
    assert not is_oom_error(ValueError("out of memory"))  # only RuntimeError messages count
    assert not is_oom_error(RuntimeError("cuDNN error: CUDNN_STATUS_BAD_PARAM"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_oom_is_oom():
    total = torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(torch.OutOfMemoryError) as info:
        torch.empty(2 * total, dtype=torch.uint8, device="cuda")
    assert is_oom_error(info.value)


# --- accumulate mode (default) --------------------------------------------------------


def test_halving_doubles_accumulation_and_keeps_effective_batch():
    policy = OOMPolicy()
    [d] = policy.on_oom(oom(8, 2))
    assert (d.action, d.micro_batch) == ("set_micro_batch", 4)
    assert d.details == {"accumulation": 4, "effective_batch": 16, "mode": "accumulate"}
    assert "effective batch 16 and LR unchanged" in d.reason
    [d] = policy.on_oom(oom(4, 4))
    assert (d.micro_batch, d.details["accumulation"], d.details["effective_batch"]) == (2, 8, 16)
    assert policy.state_dict() == {}  # the batch plan is the loop's (checkpointed there), not the policy's


def test_odd_micro_batch_still_covers_the_real_effective_batch():
    """5 x 3 = 15 -> micro 2: 8 micro-batches (the last has 1 sample) of a real s1 batch."""
    [d] = OOMPolicy().on_oom(oom(5, 3))
    assert (d.micro_batch, d.details["accumulation"], d.details["effective_batch"]) == (2, 8, 15)
    w = get_workload("s1", size="tiny")
    batch = w.synthetic_batch(15, 1.0, generator=torch.Generator().manual_seed(0))
    parts = split_batch(batch, d.micro_batch)
    assert len(parts) == d.details["accumulation"]
    assert sum(p["semantic_ids"].shape[0] for p in parts) == 15
    assert torch.equal(torch.cat([p["semantic_ids"] for p in parts]), batch["semantic_ids"])


# --- shrink mode -----------------------------------------------------------------------


def test_shrink_linear_rule_exact():
    [resize, rescale] = OOMPolicy(OOMConfig(mode="shrink", lr_rule="linear")).on_oom(oom(8, 2))
    assert (resize.micro_batch, resize.details["accumulation"], resize.details["effective_batch"]) == (4, 2, 8)
    assert resize.effective_batch == 8  # the loop adopts it (accumulate mode leaves it None: unchanged)
    assert (rescale.action, rescale.factor) == ("scale_lr", 0.5)
    [_, rescale] = OOMPolicy(OOMConfig(mode="shrink", lr_rule="linear")).on_oom(oom(5, 1))
    assert rescale.factor == 2 / 5


def test_shrink_under_ddp_halves_the_effective_batch_of_all_ranks():
    """2 ranks, effective 16: each rank 8 samples as 4 x 2. Halving the micro-batch halves every share."""
    [resize, rescale] = OOMPolicy(OOMConfig(mode="shrink", lr_rule="linear")).on_oom(oom(4, 2, effective=16))
    assert (resize.micro_batch, resize.effective_batch, resize.details["accumulation"]) == (2, 8, 2)
    assert rescale.factor == 0.5
    [accumulate] = OOMPolicy().on_oom(oom(4, 2, effective=16))
    assert accumulate.effective_batch is None and accumulate.details["effective_batch"] == 16


def test_shrink_sqrt_rule_exact():
    [_, rescale] = OOMPolicy(OOMConfig(mode="shrink", lr_rule="sqrt")).on_oom(oom(8, 2))
    assert rescale.factor == math.sqrt(0.5)
    assert "sqrt rule" in rescale.reason
    [_, rescale] = OOMPolicy(OOMConfig(mode="shrink", lr_rule="sqrt")).on_oom(oom(9, 2))
    assert rescale.factor == math.sqrt(8 / 18)
    assert lr_factor(16, 4, "sqrt") == 0.5 and lr_factor(16, 4, "linear") == 0.25


# --- micro-batch 1 -----------------------------------------------------------------------


def test_micro_batch_one_stops_with_injected_advice():
    advice = lambda: "the 8 GiB row of the measured table fits s1 at 5 s slices with DPO off (batch 3)"  # noqa: E731
    [d] = OOMPolicy(advice=advice).on_oom(oom(1, 16))
    assert d.action == "stop"
    assert "out of memory at micro-batch 1 x 16 (step 7): nothing smaller to try" in d.reason
    assert d.reason.endswith("the 8 GiB row of the measured table fits s1 at 5 s slices with DPO off (batch 3)")


def test_micro_batch_one_without_advice_names_the_options():
    [d] = OOMPolicy().on_oom(oom(1, 4))
    assert d.action == "stop" and d.reason.endswith(GENERIC_ADVICE)
    for option in ("shorter slices", "DPO off", "lower precision"):
        assert option in d.reason


def test_failing_advice_does_not_hide_the_stop():
    def advice() -> str:
        raise FileNotFoundError("no table for this card")

    [d] = OOMPolicy(advice=advice).on_oom(oom(1, 1))
    assert d.action == "stop"
    assert "FileNotFoundError: no table for this card" in d.reason


# --- state and config ------------------------------------------------------------------


def test_the_policy_is_stateless_so_the_same_oom_gets_the_same_answer():
    a = OOMPolicy()
    first = a.on_oom(oom(16, 1))
    assert a.state_dict() == {} and a.on_oom(oom(16, 1)) == first
    a.load_state_dict({"micro_batch": 8, "accumulation": 2, "effective_batch": 16, "ooms": 1})  # a pre-0.2 checkpoint's
    assert a.on_oom(oom(16, 1)) == first


@pytest.mark.parametrize(
    "kwargs, field",
    [({"mode": "halve"}, "watchdog.oom.mode"), ({"lr_rule": "cubic"}, "watchdog.oom.lr_rule")],
)
def test_config_rejects_unknown_choices(kwargs, field):
    with pytest.raises(ValueError, match=field):
        OOMConfig(**kwargs)
