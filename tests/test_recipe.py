"""The recipe as one value, the one optimiser step, and the gpt-sovits recipe's exact points.

- `recipe_for` is the only place a recipe's name is compared (checked on the source);
- the probe's traced step and the loop's step run the same `OptimizerSet` functions;
- gpt-sovits: ScaledAdam with ONE parameter group (its clipping norm is over every
  parameter, as GPT-SoVITS hands it `model.parameters()`), upstream's `batch_idx`
  stepping rule with the epoch's leftover carried over, the discriminator stepped at
  this step's LR, and the spectrogram's magnitude epsilon 1e-8.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from train_data import demo_dataset, kinds, one_thread, read_events, tiny_config  # noqa: F401 (fixture)

import trainer.loop.loop
from probe.memory import MetaEstimator
from trainer.data.batches import Batches
from trainer.data.manifest import run_slice_seconds
from trainer.distributed import Dist
from trainer.loop import train
from trainer.optim import OptimizerSet
from trainer.recipe import RECIPES, UPSTREAM_S2_LR_DECAY, recipe_for
from trainer.rundir import RunDir
from trainer.sovits.spectral import linear_spectrogram
from trainer.workloads import get_workload

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return demo_dataset(tmp_path_factory)  # 14 train clips, 2 val


# --- one value, built in one place ----------------------------------------------------------


COMPARE = re.compile(r"recipe\s*[!=]=")  # `grep -rn "recipe ==" trainer advisor probe`, and !=


def test_the_recipe_name_is_compared_only_where_the_recipe_is_built():
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for pkg in ("trainer", "advisor", "probe")
        for path in sorted((ROOT / pkg).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if COMPARE.search(line) and path.relative_to(ROOT).as_posix() != "trainer/recipe.py"
    ]
    assert found == []
    assert COMPARE.search('if cfg.recipe == "gpt-sovits":') and COMPARE.search("self.recipe != other")  # the check can fail


@pytest.mark.parametrize("workload", ["s1", "s2"])
def test_each_recipe_states_its_rules(workload):
    ours, upstream = recipe_for(workload, "advisor"), recipe_for(workload, "gpt-sovits")
    assert ours.clip and not upstream.clip  # GPT-SoVITS clips neither stage
    assert ours.schedule == "config" and upstream.schedule != "config"
    assert upstream.discriminator_first == (workload == "s2") and not ours.discriminator_first
    assert (upstream.batches_per_step, upstream.step_rule, upstream.optimizer) == (
        (4, "batch_idx", "scaled_adam") if workload == "s1" else (1, "effective", "adamw"))
    assert set(RECIPES) == {"advisor", "gpt-sovits"}
    with pytest.raises(ValueError, match="recipe: unknown recipe 'upstream'"):
        recipe_for(workload, "upstream")


# --- one optimiser step ----------------------------------------------------------------------


@pytest.fixture
def step_calls(monkeypatch):
    """Records each call of OptimizerSet's two halves of the step (the real functions run)."""
    calls: list[str] = []
    for name in ("unscale_and_clip", "finish"):
        real = getattr(OptimizerSet, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(OptimizerSet, name, spy)
    return calls


def test_the_probe_traces_the_step_the_loop_runs(dataset, tmp_path, step_calls, one_thread):  # noqa: F811
    MetaEstimator(get_workload("s1", size="tiny"), "fp32", target="cpu").peak(2, 2.0, False)
    probed = list(step_calls)
    step_calls.clear()
    assert train(tiny_config(dataset, workload="s1", max_steps=1, **{"validation.every_epochs": 0}), RunDir(tmp_path / "run")) == "max_steps"
    assert probed and probed[:2] == ["unscale_and_clip", "finish"]
    assert step_calls == ["unscale_and_clip", "finish"]  # one loop step: the same two functions


def test_a_meta_step_reports_nan_norms_and_steps():
    workload = get_workload("s2", size="tiny")
    models = workload.build("meta")
    optimizers = workload.make_optimizers(models)
    result = workload.train_step(models, optimizers, workload.synthetic_batch(1, 1.0, device="meta"), "fp32")
    assert math.isnan(result["grad_norm/generator"]) and math.isnan(result["grad_norm/discriminator"])
    assert all(q.grad is None for q in models.parameters())  # finish() dropped them, as the loop's does


# --- the gpt-sovits recipe, exact ----------------------------------------------------------------


def test_gpt_sovits_s1_hands_scaled_adam_one_group_so_clipping_takes_one_norm(one_thread):  # noqa: F811
    workload = get_workload("s1", size="tiny", recipe="gpt-sovits")
    torch.manual_seed(0)
    models = workload.build("cpu")
    opt = workload.make_optimizers(models)["gpt"]
    (group,) = opt.param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in models["gpt"].parameters()]
    for g in opt.param_groups:
        g["clipping_update_period"] = 2  # clipping active from step 2 (upstream: 1000)
    batch = workload.synthetic_batch(2, 1.0, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        opt.zero_grad()
        workload.forward_backward(models, batch, "fp32")
        # the norm ScaledAdam records: sqrt(sum over EVERY parameter of (grad * its rms)^2), scalars plain
        by_hand = math.sqrt(sum(
            float(p.grad.pow(2).sum()) if p.numel() == 1 else float((p.grad * opt.state[p]["param_rms"]).pow(2).sum())
            for p in models["gpt"].parameters()
        )) if opt.state else None
        opt.step()
    first = opt.state[group["params"][0]]
    assert first["model_norms"][2 % 2] == pytest.approx(by_hand, rel=1e-5)


def test_gpt_sovits_s1_steps_after_batch_idx_4_8_and_carries_the_epochs_leftover(dataset):
    workload = get_workload("s1", size="tiny", recipe="gpt-sovits")
    slice_seconds = run_slice_seconds(None, dataset)
    data = Batches(workload, dataset, slice_seconds, False, 4, seed=0, dist=Dist(), upstream_groups=4, upstream_batch=1)
    # 14 clips, batches of 1: batch_idx 0..13; steps after 4, 8, 12; batch 13 carries into epoch 1
    assert [data.parts(0, k) for k in range(data.batches_in(0))] == [[1] * 5, [1] * 4, [1] * 4]
    assert [data.parts(1, k) for k in range(data.batches_in(1))] == [[1] * 6, [1] * 4, [1] * 4]
    epoch0 = [i for step in data.plan(0) for i in step]
    leftover = (set(range(14)) - set(epoch0)).pop()
    assert len(epoch0) == 13 and data.plan(1)[0][0] == leftover  # epoch 1's first step starts with it
    assert data.steps_per_epoch == 3 and data.total_batches(2) == 6

    pairs = Batches(workload, dataset, slice_seconds, False, 8, seed=0, dist=Dist(), upstream_groups=4, upstream_batch=2)
    # batches of 2: batch_idx 0..6; one step after batch 4 (10 samples); batches 5 and 6 carry over
    assert [pairs.parts(0, 0)] == [[2] * 5] and pairs.batches_in(0) == 1
    assert pairs.parts(1, 0) == [2] * 7 and len(pairs.plan(1)[0]) == 14


def test_gpt_sovits_s2_steps_d_at_this_steps_lr(dataset, tmp_path, monkeypatch, one_thread):  # noqa: F811
    """Epoch e runs at 1e-4 x gamma^(e+1) (upstream steps its scheduler once before the first
    epoch); D steps inside the first step of epoch 1 at gamma^2, not the previous epoch's."""
    seen: list[float] = []
    real_build = trainer.loop.loop.build

    def build(cfg, root, dist, buckets=None):
        p = real_build(cfg, root, dist, buckets)
        p.optimizers["discriminator"].register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
        return p

    monkeypatch.setattr(trainer.loop.loop, "build", build)
    cfg = tiny_config(dataset, workload="s2", version="v2", recipe="gpt-sovits", epochs=2,
                      **{"batch.micro": 7, "validation.every_epochs": 0})
    assert train(cfg, RunDir(tmp_path / "run")) == "epochs"
    start = kinds(read_events(tmp_path / "run"), "start")[0]
    assert start["discriminator_first"] is True and start["steps_per_epoch"] == 2
    gamma = UPSTREAM_S2_LR_DECAY
    assert seen == pytest.approx([1e-4 * gamma] * 2 + [1e-4 * gamma**2] * 2, rel=1e-12)


def test_the_magnitude_epsilon_is_upstreams_1e_8():
    """sqrt(0 + eps) of a silent frame: 1e-4 with GPT-SoVITS's 1e-8 (1e-3 with the old 1e-6)."""
    spec = linear_spectrogram(torch.zeros(1, 640 * 4))
    assert spec.shape == (1, 1025, 4)
    assert torch.allclose(spec, torch.full_like(spec, 1e-4), rtol=1e-6)
