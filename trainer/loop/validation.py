"""The validation metric: the workload's `validation_step` over the val split.

    validate(p, pos, log) -> float      sample-weighted mean over every rank's batches; a `val` event

The batches are the val split in length order (`Batches.val_batches`), at most
`validation.max_batches`, at the run's micro-batch; s1 DPO runs validate without
rejected sequences (the metric is the cross-entropy). The metric is deterministic
for given weights: the workloads fix their own noise (s2: a seeded window and
prior sample).
"""

from __future__ import annotations

import math

from trainer.loop.metrics import Log
from trainer.loop.parts import Parts, Position
from trainer.workload import batch_size_of


def validate(p: Parts, pos: Position, log: Log) -> float:
    """The workload's metric over the val split (sample-weighted mean over all ranks)."""
    total = count = 0.0
    for batch in p.data.val_batches(p.micro_batch, p.device, p.cfg.validation.max_batches):
        n = batch_size_of(batch)
        total += p.workload.validation_step(p.models, batch, p.cfg.precision) * n
        count += n
    total, count = p.dist.sum([total, count])
    value = total / count if count else math.nan
    pos.validated_step = pos.step
    log("val", pos.step, epoch=pos.epoch, metric=p.workload.metric_name, value=value, samples=int(count))
    return value
