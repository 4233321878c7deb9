"""Memory backends on real models (tiny sizes): the estimate, the emulated budget, CUDA."""

import pytest
import torch
import torch.nn.functional as F

from probe.memory import CardOverhead, MetaEstimator, emulated_peak, probe_batch, run_step
from probe.meta import CudaOnMeta, autocast_regions
from probe.tracker import EmulatedBudget, StorageTracker
from trainer.workloads import get_workload


def real_steady_peak(workload, batch_size, slice_seconds, dpo):
    """Emulated backend (no limit) on real CPU tensors, after a warm-up step."""
    torch.manual_seed(0)
    models = workload.build("cpu")
    optimizers = workload.make_optimizers(models)
    batch = probe_batch(workload, batch_size, slice_seconds, dpo, "cpu")
    run_step(workload, models, optimizers, batch, "fp32")  # optimiser state exists from here on
    return emulated_peak(workload, models, optimizers, batch, "fp32", steps=1)


@pytest.mark.parametrize(
    ("name", "options", "batch_size", "slice_seconds", "dpo"),
    [
        ("s1", {}, 3, 5.0, False),
        ("s1", {}, 2, 4.0, True),
        ("s1", {"attention": "gpt_sovits"}, 4, 3.0, False),
        ("s2", {}, 2, 1.0, False),
    ],
)
def test_the_meta_estimate_equals_what_the_emulated_backend_sees(name, options, batch_size, slice_seconds, dpo):
    workload = get_workload(name, "tiny", **options)
    real = real_steady_peak(workload, batch_size, slice_seconds, dpo)
    estimate = MetaEstimator(workload, "fp32", target="cpu").trace(batch_size, slice_seconds, dpo)
    assert real.backend == "emulated"
    assert estimate.raw_bytes == pytest.approx(real.raw_bytes, rel=0.05)


def test_the_optimiser_step_replayed_on_later_traces_gives_the_traced_peak():
    workload = get_workload("s1", "tiny")
    first = MetaEstimator(workload, "fp32", target="cpu")
    replayed = first.trace(2, 5.0) and first.trace(6, 5.0)  # 6 replays the step recorded at 2
    fresh = MetaEstimator(workload, "fp32", target="cpu").trace(6, 5.0)  # 6 runs the step for real
    assert replayed.raw_bytes == fresh.raw_bytes
    assert replayed.allocator_bytes == fresh.allocator_bytes


def test_a_card_peak_adds_context_and_workspace_to_the_allocator_model():
    workload = get_workload("s1", "tiny")
    est = MetaEstimator(workload, "fp16", overhead=CardOverhead(100, 20))
    peak = est.peak(2, 5.0)
    assert peak.backend == "estimated"
    assert peak.peak_bytes == peak.reserved_bytes + 120
    assert peak.reserved_bytes >= peak.raw_bytes  # 512-byte blocks and segments only round up


def test_peak_grows_with_batch_slice_and_dpo():
    est = MetaEstimator(get_workload("s1", "tiny"), "fp16")
    base = est.trace(2, 5.0).raw_bytes
    assert est.trace(3, 5.0).raw_bytes > base
    assert est.trace(2, 10.0).raw_bytes > base
    assert est.trace(2, 5.0, dpo=True).raw_bytes > base


def test_emulated_budget_raises_out_of_memory_in_the_middle_of_backward():
    workload = get_workload("s1", "tiny")
    models = workload.build("cpu")
    batch = probe_batch(workload, 4, 5.0, False, "cpu")
    from trainer.workloads.s1 import s1_losses

    probe = StorageTracker()
    probe.count(models, batch)
    with probe:
        loss = s1_losses(models["gpt"], batch)["total"]
    forward_peak = probe.peak_bytes
    del loss
    budget = EmulatedBudget(forward_peak + 1024)  # the forward fits; backward needs more
    budget.count(models, batch)
    with budget:
        loss = s1_losses(models["gpt"], batch)["total"]
        with pytest.raises(torch.OutOfMemoryError, match="emulated out of memory"):
            loss.backward()
    assert budget.ooms == 1
    assert budget.peak_bytes <= budget.budget_bytes


def test_emulated_budget_is_a_reusable_context_manager_with_peak_and_live_bytes():
    budget = EmulatedBudget(10_000)
    with budget:
        a = torch.ones(1000)  # 4000 bytes
        view = a.view(10, 100)  # shares the storage: free
    assert budget.live_bytes == 4000 and budget.peak_bytes == 4000
    with budget:
        b = torch.ones(500)
    assert budget.live_bytes == 6000
    del a, view
    assert budget.live_bytes == 2000  # frees are seen even outside the context
    budget.reset_peak()
    assert budget.peak_bytes == 2000
    with budget, pytest.raises(torch.OutOfMemoryError):
        torch.ones(3000)  # 12000 bytes: over the 10000 budget
    assert budget.live_bytes == 2000  # the failed allocation was dropped
    del b


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1GiB", True])
def test_emulated_budget_rejects_a_bad_budget(bad):
    with pytest.raises(ValueError, match="budget_bytes"):
        EmulatedBudget(bad)


def test_cuda_on_meta_casts_matmuls_down_softmax_up_and_caches_weight_casts():
    linear = torch.nn.Linear(8, 8, device="meta")
    x = torch.empty(2, 8, device="meta")
    mode = CudaOnMeta(torch.float16)
    tracker = StorageTracker()
    tracker.count(linear, x)
    with mode, tracker:
        mode.enter_region()
        y = linear(x)
        after_first = tracker.live_bytes
        y2 = linear(x)
        after_second = tracker.live_bytes
        probs = torch.softmax(y, dim=-1)
        mode.exit_region()
        outside = linear(x)
    assert y.dtype == torch.float16 and y2.dtype == torch.float16
    assert probs.dtype == torch.float32  # autocast runs softmax in fp32
    assert outside.dtype == torch.float32  # no region, no casting
    fp16_weight_and_bias = (8 * 8 + 8) * 2
    fp16_x, fp16_y = 2 * 8 * 2, 2 * 8 * 2
    assert after_first - (8 * 8 + 8 + 2 * 8) * 4 == fp16_weight_and_bias + fp16_x + fp16_y
    assert after_second - after_first == fp16_x + fp16_y  # the weight cast is cached for the region


def test_cuda_attention_model_never_materialises_per_head_scores():
    B, H, S, D = 2, 16, 256, 32
    mask = torch.ones(B, 1, S, S, dtype=torch.bool, device="meta")
    q, k, v = (torch.empty(B, H, S, D, device="meta", dtype=torch.float16, requires_grad=True) for _ in range(3))
    math_path, cuda_path = StorageTracker(), StorageTracker()
    with math_path:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
    with CudaOnMeta(torch.float16), cuda_path:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
    per_head_scores = B * H * S * S * 2
    assert math_path.peak_bytes > per_head_scores
    assert cuda_path.peak_bytes < per_head_scores  # only the (B, 1, S, S) additive mask


def test_workload_autocast_regions_on_meta_are_routed_to_the_model_and_restored():
    import trainer.workloads.s1 as s1

    original = s1.autocast
    mode = CudaOnMeta(torch.bfloat16)
    with autocast_regions(mode):
        with s1.autocast("bf16", "meta"):
            assert mode.casting
        assert not mode.casting
        with s1.autocast("bf16", "cpu"):  # other devices get torch's own autocast
            assert torch.is_autocast_enabled("cpu")
    assert s1.autocast is original
    with s1.autocast("bf16", "meta"):  # restored: the workload's own helper, which opens no region here
        assert not mode.casting


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_measured_peak_on_cuda_is_close_to_the_estimate():
    from probe.memory import measured_peak

    workload = get_workload("s1", "tiny")
    models = workload.build("cuda")
    optimizers = workload.make_optimizers(models)
    batch = probe_batch(workload, 8, 10.0, False, "cuda")
    measured = measured_peak(workload, models, optimizers, batch, "fp16", None)
    estimate = MetaEstimator(workload, "fp16").peak(8, 10.0)
    assert measured.backend == "measured" and measured.step_seconds > 0
    assert measured.raw_bytes == pytest.approx(estimate.raw_bytes, rel=0.25)
