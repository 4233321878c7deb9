"""What the run measures and reports: the event writer `Log`, the start and step events'
fields, and memory readings (the validation metric: validation.py).

    Log(kind, step, **fields) -> events.jsonl (rank 0), on_event (a progress display), sinks (sinks.py)

Step events carry the losses, LR per "optimiser/group", gradient norms, throughput
and memory: `peak_memory` (CUDA allocator peak, or the process's peak RSS) and
`memory_now` (used/peak/budget: the emulated budget, the CUDA allocator, or RSS
against the host RAM).
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from trainer.events import EventLog
from trainer.loop.parts import Parts, Position
from trainer.rundir import RunDir
from trainer.guard import MemoryGuard
from trainer.loop.sinks import Sink, make_sinks


@dataclass
class StepOutput:
    """What one optimiser step's forward/backward measured (step.py makes it)."""

    losses: dict[str, float]  # sample-weighted means over the effective batch (all ranks)
    samples: int  # samples in the effective batch (all ranks)
    audio_seconds: float


class Log:
    """Writes events (rank 0) and shows each one to `on_event` (a progress display)."""

    def __init__(self, events: EventLog, on_event: Callable[[dict], None] | None) -> None:
        self.events, self.on_event = events, on_event
        self.sinks: list[Sink] = []  # TensorBoard, samples: trainer/loop/sinks.py

    def __call__(self, kind: str, step: int, **fields: Any) -> None:
        event = self.events.write(kind, step, **fields)
        if self.on_event is not None and self.events.path is not None:
            self.on_event(event)
        for sink in self.sinks:
            sink.write(event)

    @classmethod
    def open(cls, p: Parts, run: RunDir, on_event: Callable[[dict], None] | None) -> "Log":
        """The run's log: rank 0 makes RUN_DIR and writes events.jsonl, with its sinks
        (TensorBoard, samples at each validation: sinks.py); other ranks write nothing."""
        if p.dist.is_main:
            run.make()
        log = cls(EventLog(run.events if p.dist.is_main else None), on_event)
        if p.dist.is_main:
            log.sinks = make_sinks(p, run, log)
        return log

    def close(self) -> None:
        self.events.close()
        for sink in self.sinks:
            sink.close()


def start_summary(p: Parts, restored: bool) -> dict:
    c = p.cfg
    return {
        "workload": c.workload,
        "size": c.size,
        "dataset": c.dataset,
        "slice_seconds": p.data.slice_seconds,
        "dpo": c.dpo,
        "precision": c.precision,
        "device": str(p.device),
        "world_size": p.dist.world,
        "seed": c.seed,
        "epochs": c.epochs,
        "max_steps": c.max_steps,
        "steps_per_epoch": p.data.steps_per_epoch,
        "total_steps": p.schedule.total_steps,
        "train_clips": len(p.data.train),
        "val_clips": len(p.data.val),
        "micro_batch": p.micro_batch,
        "effective_batch": p.effective_batch,
        "accumulation": p.accumulation,
        "batch_source": c.batch.source,
        "batch_table": c.batch.table,
        "metric_name": p.workload.metric_name,
        "lr": p.optimizers.lrs(),
        "schedule": asdict(c.schedule) if p.schedule.epoch_decay is None else {"kind": "exponential_per_epoch", "gamma": p.schedule.epoch_decay[0]},
        "grad_clip": c.optim.grad_clip,
        "parameters": sum(q.numel() for q in p.models.parameters()),
        "resumed": restored,
        "validation": p.validating,
        **({"buckets": bucket_summary(p)} if p.data.buckets is not None else {}),
        "recipe": p.recipe.name,
        "recipe_rules": p.recipe.describe(),
        "init": {"path": c.init, "sha256": c.init_sha256, "kind": "; ".join(p.init_notes) or None} if c.init or p.init_notes else None,
        **({"version": c.version, "discriminator_first": p.discriminator_first} if c.workload == "s2" else {}),
    }


def bucket_summary(p: Parts) -> list[dict]:
    """The length buckets: bound (s), clips, micro-batch x accumulation (= the effective batch)."""
    plan = p.data.buckets
    return [{"bound_seconds": b.seconds, "clips": len(b.clips), "micro_batch": b.micro, "accumulation": plan.accumulation(i)} for i, b in enumerate(plan.buckets)]


def step_fields(p: Parts, pos: Position, out: StepOutput, norms: dict[str, float], seconds: float, memory_guard: MemoryGuard | None = None) -> dict:
    return {
        "epoch": pos.epoch,
        "batch": pos.batch,
        "losses": out.losses,
        "lr": p.optimizers.lrs(),
        "grad_norm": norms,
        "samples": out.samples,
        "step_seconds": seconds,
        "samples_per_s": out.samples / seconds,
        "audio_seconds_per_s": out.audio_seconds / seconds,
        "micro_batch": p.micro_batch,
        "accumulation": p.accumulation,
        **({"bucket": p.bucket} if p.bucket is not None else {}),
        "data_wait_s": p.data.last_wait_s,  # the training thread waiting for this step's batch (0: loading kept up)
        **peak_memory(p.device),
        "memory": memory_now(p.device, memory_guard),
    }


def peak_memory(device: torch.device) -> dict:
    """Peak memory since the last call: CUDA allocator peak, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return {"peak_memory_bytes": int(peak), "memory_kind": "cuda_allocated"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "memory_kind": "cpu_max_rss"}


def memory_now(device: torch.device, guard: MemoryGuard | None = None) -> dict:
    """Used and peak memory against the budget, for the dashboard (bytes; peak since the guard's
    last reset, which the loop does after each step event).

    The emulated budget when one is entered around the micro-steps, else the CUDA
    allocator against the card, else this process's RSS against the host RAM."""
    if guard is not None:
        return {"used_bytes": guard.live_bytes, "peak_bytes": guard.peak_bytes, "budget_bytes": guard.budget_bytes, "source": "emulated"}
    if device.type == "cuda":
        return {
            "used_bytes": torch.cuda.memory_reserved(device),
            "peak_bytes": torch.cuda.max_memory_reserved(device),
            "budget_bytes": torch.cuda.get_device_properties(device).total_memory,
            "source": "cuda_allocator",
        }
    import psutil

    rss = psutil.Process().memory_info().rss
    return {"used_bytes": rss, "peak_bytes": rss, "budget_bytes": psutil.virtual_memory().total, "source": "cpu_rss"}
