"""The run's length-bucket plan, made once by `advisor train` and kept in the run spec.

    cfg, plan_json = bucket_plan(cfg, chosen, gpu, emulate_bytes)

Each clip of the training split belongs to a length bucket; a step holds clips of
one bucket, padded to its own longest (trainer/data/buckets.py, padding.py). Each
bucket's micro-batch:
- from the VRAM tables, by `advisor plan`'s accounting for the bucket's bound
  (probe/buckets.py `plan_buckets`: measured > estimated, estimated on the fly
  where no row covers the bound), when the micro-batch was not given;
- the given micro-batch in every bucket when it was (`--micro-batch`, the config,
  or `--size tiny`'s rehearsal size): the user's number is a cap, not a table's.
The effective batch is the same in every bucket (accumulation per bucket):
`batch.effective` if set, else the micro-batch of the median clip's bucket
(tables) or the micro-batch (given), at most the number of training clips,
times the processes under torchrun (trainer/loop/parts.py `bucket_plan_for`,
as micro x processes without buckets). The config then says the largest
bucket's micro-batch (what an OOM restart halves); `batch.effective` stays the user's.

Buckets apply to the `advisor` recipe of s1 and the v2-family s2. The
gpt-sovits recipe keeps GPT-SoVITS's own batching (its s1 trims each batch to its
longest; its step rule groups fixed-size batches), and s2 v3/v4 pads as
GPT-SoVITS's v3/v4 collate does: `batch.buckets` is ignored there (said once
when the user set it).
"""

from __future__ import annotations

import sys

from advisor.errors import UserError

GIVEN = ("flag", "config", "fallback", "default")  # micro-batch sources that are the user's (or the rehearsal's)


def applies(cfg) -> str | None:
    """None when this run can use buckets, else why not (printed once)."""
    from trainer.recipe import recipe_for, recipe_kind

    kind = recipe_kind(cfg.workload, cfg.version)
    if cfg.batch.buckets == 0:
        return "batch.buckets is 0"
    if kind == "s2-cfm":
        return "s2 v3/v4 pads as GPT-SoVITS's v3/v4 collate does"
    if recipe_for(kind, cfg.recipe).upstream:
        return "recipe gpt-sovits keeps GPT-SoVITS's own batching"
    return None


def bucket_plan(cfg, chosen: dict, gpu: dict | None, emulate_bytes: int | None, asked: bool = False):
    """(config with batch.micro set to the largest bucket's, the plan as JSON) or (cfg, None);
    `describe(plan)` is the line `advisor train` prints with its batch line.
    `asked`: the user set batch.buckets (--max-buckets, --set, the config): a run that cannot use
    buckets then says why, once."""
    from trainer.config import apply_overrides
    from trainer.data.buckets import choose_bounds, make_plan

    why_not = applies(cfg)
    if why_not is not None:
        if cfg.batch.buckets and asked:
            print(f"advisor train: note: --max-buckets is not used here: {why_not}", file=sys.stderr)
        return cfg, None
    from probe.longest import train_frames

    _, frames = train_frames(cfg.dataset)
    if chosen.get("source") in GIVEN:
        effective = cfg.batch.effective or min(cfg.batch.micro, len(frames))  # by default a step never repeats the whole dataset
        bounds = choose_bounds(frames, cfg.batch.buckets, min_clips=effective)
        plan = make_plan(frames, bounds, [cfg.batch.micro] * len(bounds), effective)
    else:
        plan = _from_tables(cfg, frames, gpu, emulate_bytes)
    largest = max(b.micro for b in plan.buckets)
    # batch.effective stays the user's (or null): the plan's effective batch is one process's, and
    # torchrun's N processes take N times it (trainer/loop/parts.py `bucket_plan_for`), as without buckets
    cfg = apply_overrides(cfg, {"batch.micro": largest})
    return cfg, plan.to_json()


def _from_tables(cfg, frames: list[int], gpu: dict | None, emulate_bytes: int | None):
    from advisor.launch import ask_budget
    from probe.buckets import plan_buckets
    from trainer.workloads import table_name

    vram, name, _ = ask_budget(gpu, emulate_bytes)

    def progress(line: str) -> None:
        print(f"advisor train: {line}", file=sys.stderr, flush=True)

    workload = table_name(cfg.workload, cfg.version)
    report = plan_buckets(vram, workload, cfg.dataset, cfg.dpo, cfg.precision, cfg.batch.effective,
                          max_buckets=cfg.batch.buckets, progress=progress, device_name=name)
    if cfg.batch.effective is None and report.plan.effective > len(frames):  # a small dataset: by default a step never repeats it
        report = plan_buckets(vram, workload, cfg.dataset, cfg.dpo, cfg.precision, len(frames),
                              max_buckets=cfg.batch.buckets, progress=progress, device_name=name)
    from probe.longest import plan_for_dataset

    outliers = plan_for_dataset(vram, table_name(cfg.workload, cfg.version), cfg.dataset, cfg.dpo, cfg.precision, buckets=report, device_name=name)
    if outliers.warning:  # what the few long clips cost under this plan
        print(f"advisor train: warning: {outliers.warning}", file=sys.stderr)
    if not report.fits:
        too_long = next(r for r in report.rows if not r.result.fits)
        raise UserError(f"the {too_long.seconds:g} s length bucket does not fit even at micro-batch 1 on this budget: "
                        f"cut the longest clips with `advisor slice` and prepare again, or pass --micro-batch N")
    return report.plan


def describe(plan) -> str:
    """One line: each bucket's bound, clips and micro-batch x accumulation."""
    parts = [f"<= {b.seconds:.1f} s: {len(b.clips)} clips, {b.micro} x {plan.accumulation(i)}" for i, b in enumerate(plan.buckets)]
    return f"length buckets ({plan.effective} samples a step in each): " + "; ".join(parts)
