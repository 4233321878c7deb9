"""Device inventory: what this machine has (Python, torch, CUDA, GPUs, CPU, RAM).

The data layer of `advisor doctor` and of the probe's table keys. Only this
module (and the CUDA backend in `probe.memory`) talks to NVML or the CUDA
memory APIs. Every NVML call goes through `nvml()`, which never raises: a
missing driver or library yields None and is remembered once in
`nvml_error()`, so inventory works on any machine.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

_NVML_STATE: dict[str, Any] = {"initialised": False, "error": None}


def nvml(call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)` from pynvml, or None when NVML (or that query) is unavailable.

    The first failure's message is kept for `nvml_error()`; no exception escapes."""
    if not _nvml_init():
        return None
    try:
        return call(*args)
    except Exception as exc:  # pynvml raises NVMLError subclasses, or AttributeError on old drivers
        _NVML_STATE["error"] = _NVML_STATE["error"] or f"{getattr(call, '__name__', call)}: {exc}"
        return None


def nvml_error() -> str | None:
    """Why NVML answered nothing (None when it works or was never asked)."""
    return _NVML_STATE["error"]


def _nvml_init() -> bool:
    if _NVML_STATE["initialised"]:
        return True
    if _NVML_STATE["error"]:
        return False
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver, no GPU
        _NVML_STATE["error"] = f"NVML unavailable: {exc}"
        return False
    _NVML_STATE["initialised"] = True
    return True


@dataclass(frozen=True)
class GPUInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int | None  # None when neither NVML nor CUDA could say
    compute_capability: str | None  # "8.6"
    driver: str | None  # NVIDIA driver version, e.g. "550.54.15"


@dataclass(frozen=True)
class Inventory:
    """A snapshot of this machine, plain data for `advisor doctor` and table keys."""

    python: str  # "3.11.7"
    platform: str  # "Linux-6.8-x86_64"
    torch: str | None  # torch.__version__, None if torch does not import
    cuda: str | None  # CUDA version torch was built with (torch.version.cuda)
    cuda_available: bool  # torch can use a GPU now
    cpu_cores_physical: int | None
    cpu_cores_logical: int
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[GPUInfo] = field(default_factory=list)
    nvml_error: str | None = None  # why GPU facts may be missing

    def best_precision(self) -> str:
        """bf16 on Ampere or newer, fp16 on older GPUs, fp32 without a usable GPU."""
        if not (self.cuda_available and self.gpus):
            return "fp32"
        return precision_for_capability(self.gpus[0].compute_capability)


def precision_for_capability(capability: str | None) -> str:
    """bf16 from compute capability 8.0 (Ampere) on, fp16 below, fp16 when unknown."""
    if not capability:
        return "fp16"
    major = int(capability.split(".")[0])
    return "bf16" if major >= 8 else "fp16"


def inventory() -> Inventory:
    """Collect the snapshot (imports torch; never the audio libraries)."""
    torch_version, cuda_version, cuda_available = _torch_facts()
    vm = psutil.virtual_memory()
    return Inventory(
        python=platform.python_version(),
        platform=platform.platform(terse=True),
        torch=torch_version,
        cuda=cuda_version,
        cuda_available=cuda_available,
        cpu_cores_physical=psutil.cpu_count(logical=False),
        cpu_cores_logical=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_total_bytes=int(vm.total),
        ram_available_bytes=int(vm.available),
        gpus=gpus(cuda_available),
        nvml_error=nvml_error(),
    )


def gpus(cuda_available: bool | None = None) -> list[GPUInfo]:
    """GPUs from NVML; from torch.cuda where NVML cannot answer."""
    found = _nvml_gpus()
    if found:
        return found
    if cuda_available is None:
        cuda_available = _torch_facts()[2]
    return _torch_gpus() if cuda_available else []


def _nvml_gpus() -> list[GPUInfo]:
    import pynvml

    count = nvml(pynvml.nvmlDeviceGetCount) or 0
    driver = _text(nvml(pynvml.nvmlSystemGetDriverVersion))
    found = []
    for index in range(count):
        handle = nvml(pynvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            continue
        memory = nvml(pynvml.nvmlDeviceGetMemoryInfo, handle)
        capability = nvml(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
        found.append(
            GPUInfo(
                index=index,
                name=_text(nvml(pynvml.nvmlDeviceGetName, handle)) or f"GPU {index}",
                total_bytes=int(memory.total) if memory is not None else 0,
                free_bytes=int(memory.free) if memory is not None else None,
                compute_capability=f"{capability[0]}.{capability[1]}" if capability else None,
                driver=driver,
            )
        )
    return found


def _torch_gpus() -> list[GPUInfo]:
    import torch

    found = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        try:
            free, _ = torch.cuda.mem_get_info(index)
        except RuntimeError:
            free = None
        found.append(GPUInfo(index, props.name, int(props.total_memory), free, f"{props.major}.{props.minor}", None))
    return found


@functools.lru_cache(maxsize=1)
def _torch_facts() -> tuple[str | None, str | None, bool]:
    try:
        import torch
    except ImportError:
        return None, None, False
    return torch.__version__, torch.version.cuda, bool(torch.cuda.is_available())


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


# --- CUDA context ------------------------------------------------------------------------

_CONTEXT_BYTES: dict[int, int] = {}


def cuda_context_bytes(index: int = 0) -> int:
    """Bytes this process holds on GPU `index` that the caching allocator does not see
    (CUDA context, kernels, cuBLAS handles), measured once per process.

    NVML's per-process usage minus `memory_reserved`; where NVML cannot see
    processes (containers), the card's used memory minus `memory_reserved`
    (exact when this process is alone on the card)."""
    if index in _CONTEXT_BYTES:
        return _CONTEXT_BYTES[index]
    import torch

    torch.cuda.init()
    torch.zeros(1, device=f"cuda:{index}")  # make sure the context exists
    torch.cuda.synchronize(index)
    reserved = torch.cuda.memory_reserved(index)
    used = _nvml_process_bytes(index)
    if used is None:
        free, total = torch.cuda.mem_get_info(index)
        used = total - free
    _CONTEXT_BYTES[index] = max(0, int(used) - int(reserved))
    return _CONTEXT_BYTES[index]


def _nvml_process_bytes(index: int) -> int | None:
    """Memory NVML says this process holds on CUDA device `index` (None if NVML cannot tell)."""
    import pynvml

    handle = nvml_handle_for_cuda(index)
    if handle is None:
        return None
    processes = nvml(pynvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
    for proc in processes:
        if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
            return int(proc.usedGpuMemory)
    return None


# --- CUDA's device index vs NVML's ---------------------------------------------------------
# CUDA numbers the devices this process may see (CUDA_VISIBLE_DEVICES reorders and hides
# them; CUDA_DEVICE_ORDER=FASTEST_FIRST, the default, sorts by speed); NVML numbers every GPU
# of the machine by PCI bus. The two agree only by accident, so every NVML fact about "cuda:N"
# goes through this one mapping, matched by GPU UUID, then by PCI bus id.


def _normal_uuid(uuid: Any) -> str:
    text = (_text(uuid) or "").strip().lower()
    return text.removeprefix("gpu-")


def _normal_bus(bus: Any) -> str:
    """'00000000:3B:00.0' and '0000:3b:00.0' -> '3b:00.0' (domain dropped: both report 0 almost always)."""
    text = (_text(bus) or "").strip().lower()
    return ":".join(text.split(":")[-2:]) if text else ""


def match_cuda_to_nvml(cuda: list[tuple[str, str]], nvml_ids: list[tuple[str, str]]) -> dict[int, int]:
    """CUDA index -> NVML index, from (uuid, pci bus id) pairs listed in each one's own order."""
    by_uuid = {_normal_uuid(u): i for i, (u, _) in enumerate(nvml_ids) if _normal_uuid(u)}
    by_bus = {_normal_bus(b): i for i, (_, b) in enumerate(nvml_ids) if _normal_bus(b)}
    out = {}
    for index, (uuid, bus) in enumerate(cuda):
        found = by_uuid.get(_normal_uuid(uuid))
        if found is None:
            found = by_bus.get(_normal_bus(bus))
        if found is not None:
            out[index] = found
    return out


@functools.lru_cache(maxsize=1)
def cuda_to_nvml() -> dict[int, int]:
    """The mapping for this process's CUDA devices (empty without CUDA or NVML)."""
    if not _nvml_init():
        return {}
    import pynvml
    import torch

    cuda = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        bus = f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        cuda.append((str(getattr(props, "uuid", "")), bus))
    listed = []
    for index in range(nvml(pynvml.nvmlDeviceGetCount) or 0):
        handle = nvml(pynvml.nvmlDeviceGetHandleByIndex, index)
        pci = nvml(pynvml.nvmlDeviceGetPciInfo, handle) if handle is not None else None
        listed.append((nvml(pynvml.nvmlDeviceGetUUID, handle) if handle is not None else "", getattr(pci, "busId", "")))
    return match_cuda_to_nvml(cuda, listed)


def nvml_handle_for_cuda(index: int) -> Any:
    """NVML's handle of CUDA device `index`, or None when it cannot be matched."""
    nvml_index = cuda_to_nvml().get(index)
    if nvml_index is None:
        return None
    import pynvml

    return nvml(pynvml.nvmlDeviceGetHandleByIndex, nvml_index)


def cuda_gpu(index: int) -> GPUInfo | None:
    """Facts about CUDA device `index` (the one `cuda:index` trains on): NVML's, matched by
    UUID / PCI bus, else torch's own; None if this process has no such device."""
    import torch

    if not torch.cuda.is_available() or not 0 <= index < torch.cuda.device_count():
        return None
    nvml_index = cuda_to_nvml().get(index)
    by_nvml = {g.index: g for g in _nvml_gpus()}
    if nvml_index in by_nvml:
        return dataclasses.replace(by_nvml[nvml_index], index=index)
    return _torch_gpus()[index]