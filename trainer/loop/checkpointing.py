"""The training state: what a checkpoint carries, and how the loop saves and restores it
(what a save also exports: export.py).

`snapshot` gathers everything a resumed run needs to continue exactly (models,
optimisers, LR scale, GradScaler, every rank's RNG states, the data position,
the micro-batch, the batch plan's changes of effective batch, the policies'
states). Two ways back:

- `resume` (a new process) picks the newest checkpoint that verifies and
  restores all of it: the weights (`load_state`) and the run's settings
  (`restore_settings`: LR scale, micro-batch, batch plan, policies).
- `roll_back` (the spike policy, mid-run) reloads the newest finite one with
  `load_state` only: weights, optimisers, GradScaler, RNG and position go
  back, but the watchdog's settings stay as the run has them now, so an LR cut
  or a smaller batch decided since that checkpoint survives the rollback.

Only rank 0 writes (checkpoint.py); every rank takes part in the collectives.
"""

from __future__ import annotations

import random
from dataclasses import asdict, astuple

import torch
from torch import nn

from trainer.loop.checkpoint import Checkpointer
from trainer.loop.decisions import Watch
from trainer.loop.export import gpt_sovits_export, write_exports
from trainer.loop.metrics import Log
from trainer.loop.parts import Parts, Position
from trainer.policy import Decision


IDENTITY = ("workload", "size", "version", "recipe")  # what a checkpoint must share with the config that loads it


def rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def snapshot(p: Parts, pos: Position, watch: Watch) -> dict:
    """Everything a resumed run needs to continue exactly (called on every rank: gathers RNG states)."""
    return {
        "workload": p.cfg.workload,
        "size": p.cfg.size,
        "identity": {key: getattr(p.cfg, key) for key in IDENTITY},  # "version" at the top level is the file format's
        "models": {name: m.state_dict() for name, m in p.models.items()},
        "optimizers": p.optimizers.state_dict(),
        "schedule": p.schedule.state_dict(),
        "scaler": p.scaler.state_dict() if p.scaler is not None else None,
        "rng": p.dist.gather_objects(rng_state(p.device)),
        "position": asdict(pos),
        "micro_batch": p.data.largest_micro() or p.micro_batch,  # buckets: the largest (what an OOM-restart cap halves)
        "batches": {**p.data.state_dict(), "configured": p.cfg.batch.effective},
        "policies": watch.checkpoint_state(),
    }


def load_state(p: Parts, state: dict) -> Position:
    """Put a checkpoint's weights, optimiser and GradScaler states and RNG states into
    the parts; returns its position. The run's settings are `restore_settings`' business.

    The config stays the authority on LRs: each group's peak LR is kept from
    the config, not taken from the optimiser state."""
    saved = {"workload": state["workload"], "size": state["size"], **state.get("identity", {})}  # older checkpoints: no identity
    for key, value in saved.items():  # advisor train refuses these at preflight; a config.yaml edited by hand meets this
        if value != getattr(p.cfg, key):
            raise ValueError(f"the checkpoint's {key} is {value}, the config says {getattr(p.cfg, key)}: "
                             f"set {key}: {value} in config.yaml (advisor train --resume --{key} {value})")
    for name, model in p.models.items():
        model.load_state_dict(state["models"][name])
    peaks = [[g["initial_lr"] for g in opt.param_groups] for _, opt in p.optimizers.items()]
    p.optimizers.load_state_dict(state["optimizers"])
    for (_, opt), opt_peaks in zip(p.optimizers.items(), peaks):
        for g, peak in zip(opt.param_groups, opt_peaks):
            g["initial_lr"] = peak
    if p.scaler is not None and state["scaler"]:
        p.scaler.load_state_dict(state["scaler"])
    if p.dist.rank < len(state["rng"]):
        set_rng_state(state["rng"][p.dist.rank], p.device)
    return Position(**state["position"])


def restore_settings(p: Parts, state: dict, pos: Position, watch: Watch) -> dict | None:
    """The run's settings from a checkpoint, for a resumed process: LR scale, micro-batch
    and batch plan (`Parts.restore`), and the policies' states. Returns the LR re-plan, if any."""
    replanned = p.restore(state, pos)
    watch.load_state_dict(state["policies"])
    return replanned


def all_finite(models: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in models.parameters())


def replicas_in_sync(p: Parts) -> bool:
    """True if every rank holds bit-identical weights (one checksum per rank; always True alone)."""
    if not p.dist.enabled:
        return True
    checksum = sum(float(t.detach().double().sum()) for t in (*p.models.parameters(), *p.models.buffers()) if t.is_floating_point())
    return len(set(p.dist.gather_objects(checksum.hex()))) == 1  # hex: exact, and NaN equals NaN


def save(p: Parts, ckpt: Checkpointer, pos: Position, watch: Watch, log: Log, metric: float | None) -> tuple:
    """Checkpoint (rank 0 writes; every rank takes part in gathering RNG states); a new best
    goes to export/. Returns the position saved, as a tuple."""
    state = snapshot(p, pos, watch)
    finite = all_finite(p.models)
    in_sync = replicas_in_sync(p)
    entry = ckpt.save(state, pos.step, pos.epoch, metric, finite)
    if entry is not None:
        best = ckpt.is_best(entry)
        log("checkpoint", pos.step, file=entry.file, epoch=pos.epoch, metric=metric, finite=finite, best=best, bytes=entry.bytes, replicas_in_sync=in_sync)
        if best:
            write_exports(p, ckpt, state["models"], entry)
        elif p.cfg.checkpoint.export_every_epoch and pos.batch == 0 and pos.epoch > 0:
            gpt_sovits_export(p, ckpt, state["models"], entry.epoch)  # s1: one GPT_weights file per epoch
    return astuple(pos)


def resume(p: Parts, ckpt: Checkpointer, watch: Watch, log: Log) -> tuple[Position, bool]:
    """Continue from the newest finite checkpoint that verifies (damaged and diverged ones
    are skipped; a diverged one only if nothing finite is left), or start at zero.

    Rank 0 picks the checkpoint; every rank loads that one; a `resume` event names it
    (the supervisor's restarts are `restart` events). Returns (position, restored)."""
    if ckpt.recovered and p.dist.is_main:  # an unreadable manifest was rebuilt from the checkpoint files
        log("recovered", 0, **ckpt.recovered)
    removed = ckpt.clean()
    entry, skipped = None, []
    if p.dist.is_main:
        entry, skipped = ckpt.newest_verified(finite_only=True)
        if entry is None:
            entry, skipped = ckpt.newest_verified()
    entry, skipped = p.dist.broadcast_object((entry, skipped))
    if entry is None:
        if skipped:
            log("resume", 0, from_step=None, checkpoint=None, skipped=skipped, removed=removed)
        return Position(), False
    state = ckpt.load(entry, p.device)
    pos = load_state(p, state)
    replanned = restore_settings(p, state, pos, watch)
    log(
        "resume", pos.step, from_step=entry.step, checkpoint=entry.file, epoch=pos.epoch, batch=pos.batch, skipped=skipped,
        removed=removed, micro_batch=p.micro_batch, effective_batch=p.effective_batch, lr_scale=p.schedule.scale,
        **({"replan": replanned} if replanned else {}),
    )
    return pos, True


def roll_back(p: Parts, ckpt: Checkpointer, d: Decision, watch: Watch, pos: Position) -> Position:
    """Reload the newest finite checkpoint's weights, optimiser, GradScaler, RNG and position
    (not the run's settings: module docstring), then skip `d.skip_batches` batches.

    The batch plan stays the run's: changes made since that checkpoint were made at
    positions after it, so its position and the batches counted since name the same
    samples in the current plan."""
    p.optimizers.zero_grad()
    entry = p.dist.broadcast_object(ckpt.newest_verified(finite_only=True)[0] if p.dist.is_main else None)
    if entry is None:
        raise RuntimeError(f"rollback requested by {d.policy or 'a policy'} ({d.reason}) but no finite checkpoint verifies")
    restored = load_state(p, ckpt.load(entry, p.device))
    restored.batch += d.skip_batches
    fields = {
        **d.details, "reason": d.reason, "policy": d.policy, "to_step": entry.step, "checkpoint": entry.file,
        "skip_batches": d.skip_batches, "epoch": restored.epoch, "batch": restored.batch, "lr_scale": p.schedule.scale,
    }
    watch.log_event("rollback", pos.step, **fields)
    return restored
