"""The recipe: what a training step computes, as one value built once from the config.

`recipe_for(workload, name)` is the only place that compares a recipe's name;
everything else (the workloads, the loop, the sizing, the run spec) reads the
fields of the `Recipe` it is handed. Two recipes per workload
(docs/ARCHITECTURE.md, "Recipes"):

- "advisor" (the default): the corrected step (right-padding masks, mean
  losses, AdamW with warm-up + cosine, gradient clipping).
- "gpt-sovits": what GPT-SoVITS's own trainers compute, so a run from the same
  weights on the same batches follows upstream's updates.

torch-free: `advisor train`'s plan path and `advisor/launch.py` use it before
torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

RECIPES = ("advisor", "gpt-sovits")
WORKLOADS = ("s1", "s2", "s2-cfm")  # s2-cfm: the v3/v4 s2 (LoRA on the DiT, flow matching: no discriminator)

UPSTREAM_BATCHES_PER_STEP = 4  # GPT-SoVITS's s1 steps every 4 batches (t2s_lightning_module: batch_idx % 4)
UPSTREAM_S1_FIRST_STEP_FACTOR = 5.0  # its s1 first step runs at 0.01 = 5 x 0.002
UPSTREAM_S2_LR_DECAY = 0.999875  # its s2 ExponentialLR gamma per epoch (configs/s2*.json lr_decay)

# Optimiser step rules (`Recipe.step_rule`):
STEP_EVERY_EFFECTIVE = "effective"  # one step per effective batch (batch.effective samples)
STEP_UPSTREAM_BATCH_IDX = "batch_idx"  # GPT-SoVITS s1: step after batch_idx 4, 8, ...; an epoch's leftover carries over

# LR schedules (`Recipe.schedule`):
SCHEDULE_CONFIG = "config"  # the config's schedule: warm-up, then cosine (optionally restarts)
SCHEDULE_CONSTANT_FIRST_X5 = "constant_first_x5"  # GPT-SoVITS s1: constant, x5 on the very first step
SCHEDULE_EXPONENTIAL_PER_EPOCH = "exponential_per_epoch"  # GPT-SoVITS s2: gamma^(epoch+1)


@dataclass(frozen=True)
class Recipe:
    """Everything a recipe decides; build it with `recipe_for`."""

    name: str  # one of RECIPES
    workload: str  # s1 or s2
    upstream: bool  # the model's forward and losses as GPT-SoVITS computes them (masks, sums, frozen quantiser)
    clip: bool  # the loop clips gradients at optim.grad_clip (GPT-SoVITS clips neither stage)
    batches_per_step: int  # batches per optimiser step when batch.effective is not set
    step_rule: str  # STEP_EVERY_EFFECTIVE or STEP_UPSTREAM_BATCH_IDX
    schedule: str  # SCHEDULE_*
    discriminator_first: bool  # s2: D steps inside the micro-step, before the G pass (when one micro-step per step)
    sums_losses: bool  # micro-batch losses count whole (summed), not weighted by their share of the batch
    optimizer: str  # "adamw" or "scaled_adam"
    single_param_group: bool  # one parameter group (ScaledAdam clips per group: GPT-SoVITS has one)
    gpu_precision: str | None  # the precision on a GPU when none is asked for (None: the card's best)

    def __post_init__(self) -> None:
        if self.name not in RECIPES:
            raise ValueError(f"recipe: unknown recipe {self.name!r}: expected one of {', '.join(RECIPES)}")
        if self.workload not in WORKLOADS:
            raise ValueError(f"recipe: unknown workload {self.workload!r}: expected one of {', '.join(WORKLOADS)}")

    def describe(self) -> dict:
        """The start event's `recipe` field."""
        return {"name": self.name, "clip": self.clip, "step_rule": self.step_rule, "schedule": self.schedule, "optimizer": self.optimizer}


def recipe_for(workload: str, name: str = "advisor") -> Recipe:
    """The recipe `name` of `workload` (ValueError naming the field for an unknown one)."""
    if name not in RECIPES:
        raise ValueError(f"recipe: unknown recipe {name!r}: expected one of {', '.join(RECIPES)}")
    upstream = name == "gpt-sovits"
    s1, s2 = workload == "s1", workload == "s2"  # s2: the GAN (v2 family); "s2-cfm" has no D to step first
    return Recipe(
        name=name,
        workload=workload,
        upstream=upstream,
        clip=not upstream,
        batches_per_step=UPSTREAM_BATCHES_PER_STEP if upstream and s1 else 1,
        step_rule=STEP_UPSTREAM_BATCH_IDX if upstream and s1 else STEP_EVERY_EFFECTIVE,
        schedule=(SCHEDULE_CONSTANT_FIRST_X5 if s1 else SCHEDULE_EXPONENTIAL_PER_EPOCH) if upstream else SCHEDULE_CONFIG,
        discriminator_first=upstream and s2,
        sums_losses=upstream and s1,
        optimizer="scaled_adam" if upstream and s1 else "adamw",
        single_param_group=upstream and s1,
        gpu_precision="fp16" if upstream and (s1 or workload == "s2-cfm") else None,  # s1 "16-mixed"; v3/v4 fp16_run
    )


def recipe_kind(workload: str, version: str | None) -> str:
    """The recipe table a run uses: s1, s2 (the v2-family GAN) or s2-cfm (s2 of v3 / v4)."""
    from trainer.versions import V3_FAMILY

    return "s2-cfm" if workload == "s2" and version in V3_FAMILY else workload


def as_recipe(workload: str, recipe: "Recipe | str") -> Recipe:
    """A Recipe as given, or the one named (workloads accept either: the probe names one)."""
    return recipe if isinstance(recipe, Recipe) else recipe_for(workload, recipe)
