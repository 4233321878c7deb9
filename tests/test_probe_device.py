import pytest
import torch

from probe.device import Inventory, inventory, nvml, precision_for_capability


def test_inventory_is_a_plain_snapshot_of_this_machine():
    inv = inventory()
    assert isinstance(inv, Inventory)
    assert inv.python.count(".") == 2
    assert inv.torch == torch.__version__
    assert inv.cpu_cores_logical >= 1
    assert inv.ram_total_bytes >= inv.ram_available_bytes > 0
    assert inv.cuda_available == torch.cuda.is_available()
    assert inv.best_precision() in ("fp32", "fp16", "bf16")
    if not inv.cuda_available:
        assert inv.best_precision() == "fp32"


def test_an_nvml_query_that_fails_returns_none_instead_of_raising():
    def broken(*_):
        raise RuntimeError("driver went away")

    assert nvml(broken, 0) is None


@pytest.mark.parametrize(("capability", "precision"), [("8.0", "bf16"), ("9.0", "bf16"), ("7.5", "fp16"), ("6.1", "fp16"), (None, "fp16")])
def test_precision_by_compute_capability(capability, precision):
    assert precision_for_capability(capability) == precision


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_context_is_measured_once_and_is_plausible():
    from probe.device import cuda_context_bytes

    first = cuda_context_bytes(0)
    assert 50 * 1024**2 < first < 2 * 1024**3
    assert cuda_context_bytes(0) == first


def test_cuda_indices_are_matched_to_nvml_by_uuid_then_pci_bus():
    """CUDA_VISIBLE_DEVICES=2,0 on a 3-GPU machine: cuda:0 is NVML's GPU 2, cuda:1 is NVML's 0."""
    from probe.device import match_cuda_to_nvml

    nvml_ids = [("GPU-aaaa-0000", "00000000:1A:00.0"), ("GPU-bbbb-1111", "00000000:3B:00.0"), ("GPU-cccc-2222", "00000000:5E:00.0")]
    assert match_cuda_to_nvml([("cccc-2222", "0000:5e:00.0"), ("aaaa-0000", "0000:1a:00.0")], nvml_ids) == {0: 2, 1: 0}
    # MIG slices or an older driver without a matching UUID: the PCI bus decides
    assert match_cuda_to_nvml([("MIG-zzzz", "0000:3b:00.0")], nvml_ids) == {0: 1}
    # a device NVML does not list is left out, never guessed as "the same index"
    assert match_cuda_to_nvml([("dddd", "0000:99:00.0")], nvml_ids) == {}
