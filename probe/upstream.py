"""Memory of GPT-SoVITS's own trainers (`s1_train.py`, `s2_train.py`), on top of our meta trace.

`advisor plan --for gpt-sovits` answers for people who train with GPT-SoVITS
itself. Its training steps compute what ours compute (same layers, same shapes;
INTEROP.md, upstream commit 48b1a01) but keep more alive. `UpstreamEstimator`
traces our workload's step on meta, like `MetaEstimator`, and adds what
upstream keeps, each where upstream's loop has it:

s1 (Lightning, fp16-mixed, ScaledAdam, an optimiser step every 4 batches)
  - attention: the workload's `gpt_sovits` mode, upstream's additive float mask
    (B*16, S, S) fed to scaled_dot_product_attention; `probe.meta` counts the
    padded copy PyTorch makes of it in every layer (~0.2 GiB per 10 s sample);
  - gradients alive during the forward: with 4-batch accumulation, three
    forwards in four start with last batch's gradients in place, so the
    trace starts with them (no zero_grad) and backward accumulates into them;
  - ScaledAdam: its state is AdamW's size (2 x parameters, traced), and its
    step stacks parameters and gradients by shape: +3.3 x the fp32 parameter
    bytes while it runs (INTEROP.md measured +976 MiB on s1 v2's 296 MiB);
s2 (fp16 autocast, AdamW for G and D, D stepped before the G pass)
  - the previous step's gradients: G's stay until `optim_g.zero_grad()` just
    before the G backward, D's until just before the D backward (and D's new
    ones live on through the G pass): the trace starts with both, and frees
    each just before the backward that recreates it;
  - D in the G pass with its parameters requiring grad: every conv keeps its
    input for the weight gradient (ours freezes D there: `frozen` is lifted
    for the trace), and the real branch keeps its activations (ours runs it
    under no_grad): traced once more with grad, alive from the D backward to
    the end of the G backward;
  - the D pass's fake feature maps: the loop unpacks `net_d(y, y_hat.detach())`
    into `y_d_hat_r, y_d_hat_g, _, _`, so the local `_` holds them (one tensor
    per D layer; the graph that saved them is freed by the D backward) until
    the next step's D pass returns: at that step's peak, the end of its D
    forward, both steps' copies are alive (+32.7 MiB per 10 s sample, fp32);
  - old-style weight_norm: every weight-normed layer keeps its last computed
    weight as a plain tensor between forwards (fp32, one per layer).
Dropout keeps CUDA's bool mask (`probe.meta`). The check: the per-sample and
peak figures agree with INTEROP.md's live-byte measurements of upstream's own
classes within 5 % (tests/test_probe_upstream.py, benchmarks/bench_crosscheck.py).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from probe.memory import CardOverhead, MetaEstimator
from probe.trainers import S1_ACCUMULATION, TRAINERS, check_trainer  # noqa: F401 (re-exported)
from trainer.workload import Batch, Workload

SCALED_ADAM_TRANSIENT = 3.3  # ScaledAdam's step, in fp32 parameter bytes (INTEROP.md: 976 / 296 MiB)


def upstream_workload(name: str, size: str = "full", version: str | None = None, grad_ckpt: bool = False) -> Workload:
    """Our workload as GPT-SoVITS trains it: s1 with upstream's float-mask attention;
    s2 of `version` with the gpt-sovits recipe where this tree's s2 has them (v3 / v4 with
    its webui's gradient checkpointing when `grad_ckpt`)."""
    from trainer.workloads import get_workload

    if name == "s1":
        return get_workload("s1", size, attention="gpt_sovits")
    if name.startswith("s2-"):  # a versioned name, e.g. "s2-v2ProPlus"
        name, version = "s2", name.split("-", 1)[1]
    from trainer.workloads.s2 import S2Workload

    accepted = inspect.signature(S2Workload.__init__).parameters
    options = {}
    if "recipe" in accepted:
        options["recipe"] = "gpt-sovits"
    if version is not None and "version" in accepted:
        options["version"] = version
    if grad_ckpt:
        options["grad_ckpt"] = True
    return get_workload("s2", size, **options)


def workload_for(trainer: str, name: str, size: str = "full", attention: str | None = None, version: str | None = None,
                 grad_ckpt: bool = False) -> Workload:
    """The workload an estimate for `trainer` traces (`grad_ckpt`: s2-v3 / s2-v4 only)."""
    from trainer.checks import check_grad_ckpt
    from trainer.workloads import get_workload

    check_grad_ckpt(name, grad_ckpt)
    if check_trainer(trainer) == "gpt-sovits":
        return upstream_workload(name, size, version, grad_ckpt)
    options = {"attention": attention or "sdpa"} if name == "s1" else {"grad_ckpt": True} if grad_ckpt else {}
    return get_workload(name, size, **options)


def estimator_for(trainer: str, workload: Workload, precision: str, overhead: CardOverhead | None = None) -> MetaEstimator:
    if check_trainer(trainer) == "gpt-sovits":
        return UpstreamEstimator(workload, precision, overhead=overhead)
    return MetaEstimator(workload, precision, overhead=overhead)


def weight_norm_cache_shapes(module: nn.Module) -> list[torch.Size]:
    """Shapes of the weights that old-style weight_norm keeps computed between forwards:
    one per weight-normed layer (ours: parametrizations; upstream's: weight_g/weight_v)."""
    shapes = []
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            shapes.append(m.parametrizations.weight.original1.shape)
        elif isinstance(getattr(m, "weight_v", None), torch.Tensor):
            shapes.append(m.weight_v.shape)
    return shapes


class UpstreamEstimator(MetaEstimator):
    """`MetaEstimator` of GPT-SoVITS's own training loop (see the module docstring)."""

    drop_grads = False  # the step's gradients stay alive into the next trace (module docstring)

    def __init__(self, workload: Workload, precision: str, target: str = "cuda", overhead: CardOverhead | None = None, cuda_dropout: bool = True) -> None:
        self._g_caches: list[torch.Tensor] | None = None
        super().__init__(workload, precision, target, overhead, cuda_dropout)
        self._g_shapes = weight_norm_cache_shapes(self.models["generator"]) if workload.name.startswith("s2") else []
        self.trainer = "gpt-sovits"

    def zero_grad(self, warmup: bool) -> None:
        if warmup:
            self.optimizers.zero_grad()
        # otherwise: last batch's (s1) or last step's (s2) gradients are alive at the start

    def forward_backward(self, batch: Batch, warmup: bool) -> None:
        if warmup or self.workload.name == "s1":
            super().forward_backward(batch, warmup)
            return
        if self.workload.name in V3_NAMES:
            _v3_upstream_pass(self, batch)
            return
        _S2UpstreamPass(self).run(batch)

    def optimizer_step(self) -> None:
        if self.workload.name != "s1":
            super().optimizer_step()
            self._g_caches = None  # the next step's trace starts with its own
            return
        params = [p for _, opt in self.optimizers.items() for g in opt.param_groups for p in g["params"]]
        transient = int(SCALED_ADAM_TRANSIENT * sum(p.numel() for p in params))  # fp32 elements
        stacked = torch.empty(transient, device="meta")  # ScaledAdam's stacked copies while it steps
        self.optimizers.step(drop_grads=False)  # alive until upstream's next zero_grad (s1: the next batch accumulates into them)
        del stacked

    def g_caches(self, alive: bool) -> None:
        """G's weight-norm caches as upstream holds them outside the G graph (fp32)."""
        self._g_caches = [torch.empty(s, device="meta") for s in self._g_shapes] if alive else None


V3_NAMES = ("s2-v3", "s2-v4")


def _v3_upstream_pass(est: UpstreamEstimator, batch: Batch) -> None:
    """s2 v3 / v4 as `s2_train_v3_lora.py` orders it: forward with last step's gradients
    alive, zero_grad, backward; wns1's weight-norm weights held by the module outside
    its forward-to-backward span (inside it, the graph holds the same tensors)."""
    est.g_caches(True)
    hook = est.models["generator"].wns1.register_forward_pre_hook(lambda *_: est.g_caches(False))
    try:
        loss = est.workload.loss(est.models, batch, est.precision)
        est.optimizers.zero_grad()
        loss.backward()
    finally:
        hook.remove()
    est.g_caches(True)


@contextlib.contextmanager
def _not_frozen(module: nn.Module) -> Iterator[None]:
    yield


class _S2UpstreamPass:
    """One s2 step with upstream's gradient and tensor lifetimes.

    The workload calls backward twice: first the D loss, then the G loss.
    Upstream frees D's old gradients just before the first and G's just before
    the second. Its loop's locals hold the last G pass's D outputs into the
    next step: the real branch with its graph (D ran with gradients; the
    feature maps are detached only inside the loss) and the fake branch's
    feature maps; the G pass replaces them. The local `_` holds the last D
    pass's fake feature maps; this step's D pass replaces them when it returns
    (measured on upstream's classes, v2, 10 s, fp32 CPU: 32.7 MiB per sample,
    the leaky-ReLU output of every conv of the 6 sub-discriminators on the
    (B, 1, 20480) window; the step's peak is the last conv of that D pass,
    with both copies alive; no part of the peak, so not modelled: every
    attention layer's `self.attn`, 13.0 MiB per sample held between steps,
    and the full utterance's mel, 0.24 MiB). Old-style weight_norm keeps every
    layer's last weight: D's are held by the real-branch graph throughout, G's
    by G's graph from its forward to its backward and by the module outside."""

    def __init__(self, est: UpstreamEstimator) -> None:
        self.est = est
        self.calls = 0
        self.inside = False
        self.real: torch.Tensor | None = None
        self.kept: object = None
        self.d_pass_maps: object = None  # the loop's `_`: the last D pass's fake feature maps
        self.d_calls = 0  # D forwards before the first backward (the D pass: real, then fake)

    def run(self, batch: Batch) -> None:
        import trainer.workloads.s2 as s2

        models = self.est.models
        discriminator, generator = models["discriminator"], models["generator"]
        self.est.g_caches(True)
        segment = torch.empty(batch["wav"].shape[0], 1, s2.SEGMENT_SAMPLES, device="meta")
        with parametrize.cached():  # one weight per D layer, as old-style weight_norm computes
            with torch.no_grad():
                fake_maps = discriminator(segment)  # last G pass's fake feature maps (graph freed by its backward)
            self.kept = (discriminator(segment), fake_maps)  # last G pass's real branch, with its graph
            with torch.no_grad():
                self.d_pass_maps = discriminator(segment)[1]  # last D pass's fake feature maps (`_`)
        del segment, fake_maps
        hooks = [
            discriminator.register_forward_pre_hook(self._capture),
            discriminator.register_forward_hook(self._d_pass_returned),
            generator.register_forward_pre_hook(self._g_forward),
        ]
        original = torch.Tensor.backward
        pass_ = self

        def backward(tensor, *args, **kwargs):
            if pass_.inside:  # re-entered through a TorchFunctionMode: the same backward
                return original(tensor, *args, **kwargs)
            pass_.inside = True
            try:
                pass_._before_backward()
                original(tensor, *args, **kwargs)
                pass_._after_backward()
            finally:
                pass_.inside = False

        frozen = getattr(s2, "frozen", None)
        torch.Tensor.backward = backward
        s2.frozen = _not_frozen  # upstream's G pass runs D with its parameters requiring grad
        try:
            super(UpstreamEstimator, self.est).forward_backward(batch, False)
        finally:
            torch.Tensor.backward = original
            if frozen is not None:
                s2.frozen = frozen
            for hook in hooks:
                hook.remove()
            self.kept = self.real = self.d_pass_maps = None

    def _capture(self, module: nn.Module, args: tuple) -> None:
        if self.real is None and self.calls == 0:  # the first D call of the step: the real window
            self.real = args[0]

    def _d_pass_returned(self, module: nn.Module, args: tuple, output: tuple) -> None:
        if self.calls == 0:
            self.d_calls += 1
            if self.d_calls == 2:  # the D pass's fake branch: `_` now holds its maps, the last step's go
                self.d_pass_maps = [[m.detach() for m in maps] for maps in output[1]]

    def _g_forward(self, module: nn.Module, args: tuple) -> None:
        self.est.g_caches(False)  # from here G's graph holds its computed weights

    def _before_backward(self) -> None:
        models = self.est.models
        name = "discriminator" if self.calls == 0 else "generator"
        for p in models[name].parameters():
            p.grad = None  # upstream's optim.zero_grad() (set_to_none) right before this backward

    def _after_backward(self) -> None:
        self.calls += 1
        if self.calls == 1 and self.real is not None:  # the G pass: D(real) with grad replaces last step's
            real, self.real = self.real, None
            with parametrize.cached():
                kept = self.est.models["discriminator"](real)
            self.kept = kept
        elif self.calls == 2:
            self.est.g_caches(True)  # G's graph is gone; the modules keep their last weights
