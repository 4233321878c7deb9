"""The training loop: `train(cfg, run)` reads top to bottom; the parts live in their own modules.

    build the parts (parts.py); open the event log and its sinks (metrics.py, sinks.py)
    restore the newest verified checkpoint (resume event), or checkpoint step 0; start event
    for each epoch left:
        for each effective batch left in it:
            stop once max_steps steps are done
            LR from the schedule for this step (D stepped inside the micro-step runs at it too)
            micro-steps: forward/backward per micro-batch, gradients accumulate locally
                OOM on any rank -> every rank drops the partial step, policies.on_oom
                -> a smaller micro-batch, and the SAME samples again (in "shrink" mode a
                   smaller effective batch too: the rest of the epoch is re-planned)
            average gradients over ranks; unscale (fp16); clip (where the recipe clips)
            policies.on_step -> skip_step / scale_lr (applies to this step already) / rollback / stop
            optimiser step (unless skipped); step event; checkpoint every N steps
            (a rollback: reload, skip the bad batches, apply what came with it, checkpoint)
            a stop: after the step in flight (unless skipped), so a resume continues exactly
        epoch end: validate (every N epochs, if there is a val split) -> val event,
                   policies.on_val (stop / scale_lr); checkpoint (carrying the metric; best -> export/)
    final validation and checkpoint (unless just done); export the best weights; end event

Where each part lives (trainer/loop/): the parts and the recipe in parts.py; the
loop's side of the optimiser step (micro-steps, OOM retry) in step.py, the update
itself in trainer/optim.py; what a checkpoint holds and how it is saved and restored
in checkpointing.py (format and rotation: checkpoint.py); what export/ and GPT-SoVITS's
folders receive in export.py; the policies' decisions in decisions.py; events and
memory readings in metrics.py; the validation metric in validation.py; collectives in
trainer/distributed.py. Only rank 0 writes events and checkpoints. Nothing but the
entry points (advisor/child.py, tests, benchmarks) imports this package.
"""

from __future__ import annotations

import math
import time
from dataclasses import astuple
from typing import Callable, Iterator, Sequence

from trainer.config import TrainConfig
from trainer.data.buckets import BucketPlan
from trainer.distributed import Dist
from trainer.guard import MemoryGuard
from trainer.loop.checkpoint import Checkpointer
from trainer.loop.decisions import Applied, Watch, apply_decisions
from trainer.loop.metrics import Log, start_summary, step_fields
from trainer.loop.validation import validate
from trainer.loop.parts import Parts, Position, build
from trainer.policy import Policy, ValInfo
from trainer.rundir import RunDir
from trainer.loop.checkpointing import resume, roll_back, save
from trainer.loop.export import export_best
from trainer.loop.step import accumulate, is_torch_oom, optimizer_step, step_info, unscale_and_clip

End = tuple[str, str]  # (reason, detail) of the end event


def train(
    cfg: TrainConfig,
    run: RunDir,
    *,
    policies: Sequence[Policy] = (),
    memory_guard: MemoryGuard | None = None,
    dist: Dist | None = None,
    on_event: Callable[[dict], None] | None = None,
    is_oom: Callable[[BaseException], bool] | None = None,
    buckets: BucketPlan | None = None,
) -> str:
    """Train until done; returns the end reason: "epochs", "max_steps" or "stopped".

    `policies` are watchdog objects (trainer/policy.py), the same on every rank;
    `memory_guard` (trainer/guard.py) is entered around every micro-step (the
    probe's emulated VRAM budget); `on_event` sees every event written
    (progress displays); `is_oom` says which exceptions of a micro-step count as
    out of memory (default: torch.OutOfMemoryError; the advisor also passes the
    cuDNN/cuFFT errors that mean it); `buckets` is the run spec's length-bucket plan
    (trainer/data/buckets.py; None: every batch padded to the slice)."""
    dist = dist or Dist()
    p = build(cfg, run.root, dist, buckets)
    log = Log.open(p, run, on_event)
    watch = Watch(policies, log, dist, is_oom or is_torch_oom)
    t = Training(p, log, watch, Checkpointer(run, cfg.checkpoint.keep_last, p.workload.metric_name, enabled=dist.is_main), memory_guard)
    try:
        t.start()  # resume, or checkpoint step 0 (a rollback target); start event
        end: End | None = None  # an early end: max_steps, or a stop
        for _ in t.epochs():
            for _ in t.batches():
                end = t.max_steps_reached() or t.step()
                if end:
                    break
            if end:
                break
            end = t.end_epoch()  # validation, on_val, the epoch's checkpoint
            if end:
                break
        reason, detail = end or ("epochs", "")
        t.finish(reason, detail)  # final validation and checkpoint, export/, end event
        dist.barrier()  # leave together: a rank tearing down while another still writes can abort it
        return reason
    except BaseException as exc:
        t.fail(exc)
        raise
    finally:
        p.data.close()  # the loader threads
        log.close()


class Training:
    """The run in progress: its parts, where it is (`pos`) and the position last checkpointed."""

    def __init__(self, p: Parts, log: Log, watch: Watch, ckpt: Checkpointer, memory_guard: MemoryGuard | None) -> None:
        self.p, self.log, self.watch, self.ckpt, self.memory_guard = p, log, watch, ckpt, memory_guard
        self.pos = Position()
        self.saved: tuple = ()

    def epochs(self) -> Iterator[int]:
        """The epochs left. Read from the position each time: a rollback can move it back."""
        while self.pos.epoch < self.p.cfg.epochs:
            yield self.pos.epoch

    def batches(self) -> Iterator[int]:
        """The batches left in this epoch. Read each time: an OOM shrink re-plans the rest of
        the epoch, a rollback moves the position."""
        while self.pos.batch < self.p.data.batches_in(self.pos.epoch):
            yield self.pos.batch

    def start(self) -> None:
        self.pos, restored = resume(self.p, self.ckpt, self.watch, self.log)
        self.log("start", self.pos.step, **start_summary(self.p, restored))
        if restored:
            self.saved = astuple(self.pos)
        else:
            self.save(metric=None)  # step 0: a rollback target

    def save(self, metric: float | None) -> None:
        self.saved = save(self.p, self.ckpt, self.pos, self.watch, self.log, metric)

    def max_steps_reached(self) -> End | None:
        limit = self.p.cfg.max_steps
        return ("max_steps", "") if limit is not None and self.pos.step >= limit else None

    def step(self) -> End | None:
        """One optimiser step on batch `pos.batch` (step.py); ("stopped", why) when a policy stops."""
        p, pos = self.p, self.pos
        started = time.perf_counter()
        p.enter_step(pos)  # with length buckets: this step's bucket and its micro-batch
        p.schedule.apply(p.optimizers, pos.step)  # this step's LR, for an optimiser stepped inside it too (D first) and the policies
        out, stop = accumulate(p, pos, self.watch, self.memory_guard)  # OOM -> smaller micro-batch, same samples
        if stop:
            return "stopped", stop
        pos.batch += 1
        p.dist.average_gradients(p.models.parameters())
        norms = unscale_and_clip(p)
        info = step_info(p, pos, out, norms)
        applied = apply_decisions(p, self.watch.ask("on_step", info), self.watch, pos, finite=math.isfinite(info.loss) and math.isfinite(info.grad_norm))
        optimizer_step(p, skip=not applied.taken)
        if applied.rollback:
            applied = self.roll_back(applied)
        elif applied.taken:
            pos.step, pos.samples = pos.step + 1, pos.samples + out.samples
            if pos.step % p.cfg.log_every_steps == 0:
                self.log("step", pos.step, **step_fields(p, pos, out, norms, time.perf_counter() - started, self.memory_guard))
                if self.memory_guard is not None:
                    self.memory_guard.reset_peak()  # the next step event's peak is its own
            every = p.cfg.checkpoint.every_steps
            if every and pos.step % every == 0 and pos.batch < p.data.batches_in(pos.epoch):
                self.save(metric=None)  # the epoch's last batch is saved at its end
        return ("stopped", applied.stop) if applied.stop else None  # after the step in flight: a resume continues exactly

    def roll_back(self, applied: Applied) -> Applied:
        """Reload the newest finite checkpoint, skip the bad batches, apply the decisions that
        came after the rollback (e.g. its LR cut) and checkpoint, so a restart keeps the skip
        and the cut. Returns what those later decisions add up to."""
        self.pos = roll_back(self.p, self.ckpt, applied.rollback, self.watch, self.pos)
        after = apply_decisions(self.p, applied.after_rollback, self.watch, self.pos)
        self.save(metric=None)
        return after

    def end_epoch(self) -> End | None:
        """Validation (every N epochs, with a val split), `on_val`, and the epoch's checkpoint."""
        p, pos = self.p, self.pos
        pos.epoch, pos.batch = pos.epoch + 1, 0
        metric, stop = None, None
        if p.validating and pos.epoch % p.cfg.validation.every_epochs == 0:
            metric = validate(p, pos, self.log)
            stop = apply_decisions(p, self.watch.ask("on_val", ValInfo(pos.step, pos.epoch, p.workload.metric_name, metric)), self.watch, pos).stop
        self.save(metric)
        return ("stopped", stop) if stop else None

    def finish(self, reason: str, detail: str) -> None:
        """Validate the final weights and checkpoint them (unless just done), export the best, end event."""
        p, pos = self.p, self.pos
        metric = validate(p, pos, self.log) if p.validating and pos.validated_step != pos.step else None
        if metric is not None or self.saved != astuple(pos):
            self.save(metric)
        export_best(p, self.ckpt, self.log, pos)
        self.log("end", pos.step, reason=reason, detail=detail, epoch=pos.epoch, samples=pos.samples)

    def fail(self, exc: BaseException) -> None:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        self.log("end", self.pos.step, reason=reason, detail=f"{type(exc).__name__}: {exc}"[:500], epoch=self.pos.epoch)
