"""Stage s2 for GPT-SoVITS v3 / v4: LoRA fine-tuning of SynthesizerTrnV3's DiT by flow matching.

Model (trainer/sovits/v3.py, lora.py): the v2 text side (frozen), ref_enc,
bridge + wns1 (trained), and the 22-block DiT, frozen except for peft's LoRA
adapters on every attention Linear (rank `lora_rank`, alpha = rank).

Step (one micro-batch), as GPT-SoVITS's `s2_train_v3_lora.py` (INTEROP-v3v4.md section 3):
  1. fp32, outside autocast: style = ref_enc(spec); content = enc_p(quantised ssl, phonemes, style)
     with ssl_proj, quantizer and enc_p frozen and under no_grad.
  2. Under autocast: fea = wns1(upsample(bridge(content))) at the mel rate;
     mel and fea cut to the shorter of the two.
  3. The flow-matching loss with a random prompt excluded (trainer/sovits/cfm.py);
     with probability 0.3 per batch (one `random.random()` draw, Python's RNG
     as upstream) the target comes from two extra DiT passes.

Recipes:
  gpt-sovits  upstream's computation: extra passes build (and drop) autograd
              graphs; ref_enc and linear_mel in the optimiser though they never
              receive a gradient; ref_enc's dropout on. `train_step` (what the
              probe runs) zeroes gradients after the forward, as upstream.
  advisor     the same loss; the extra passes under no_grad (same values, no
              graph), ref_enc and linear_mel frozen and ref_enc in eval mode
              (they get no gradient either way: an honest trainable count and a
              deterministic style vector), gradients zeroed before the forward.
  Both: AdamW lr 1e-4, betas (0.8, 0.99), eps 1e-9, torch's default weight decay
  0.01, one group. Clipping, the LR schedule and the step order are the loop's.

Validation metric `val_cfm_loss`: the same flow-matching loss in eval mode
(no dropout) with t, x0 and the prompt fraction drawn from a private CPU
generator seeded with VALIDATION_SEED per call, and no extra passes: the same
batch and weights always give the same value, on any device.

Batches: what upstream's collate makes for clips of S seconds (INTEROP-v3v4.md
section 4): F = 50 S frames padded to 2 (F // 2 + 1) for ssl and spec; mel
frames v4 2F (padded 2 x padded F), v3 floor(1.875 F) (padded
int(8 (F // 8 + 1) x 1.875)). On the meta device no extra passes are taken
(no values to draw; they do not raise the peak: INTEROP-v3v4.md section 11).
"""

from __future__ import annotations

import math
import random

import torch
from torch import nn

from trainer.data import collate as pad
from trainer.audio_constants import FRAME_RATE, PHONEME_VOCAB, SPEC_BINS, SSL_DIM
from trainer.sizing import slice_shape
from trainer.sovits import lora
from trainer.sovits.cfm import EXTRA_PASS_PROBABILITY, FlowDraws, draw
from trainer.sovits.config import MEL_BINS, V3_VERSIONS, v3_config
from trainer.recipe import Recipe, as_recipe
from trainer.sovits.v3 import PARTS, SynthesizerTrnV3
from trainer.workload import Batch, StepResult, Workload, backward, to_floats, autocast, batch_size_of, check_batch_size, count_parameters

VALIDATION_SEED = 1234


class S2V3Workload(Workload):
    metric_name = "val_cfm_loss"

    def __init__(self, size: str = "full", version: str = "v4", recipe: Recipe | str = "advisor", lora_rank: int = lora.DEFAULT_RANK, grad_ckpt: bool = False) -> None:
        super().__init__(size)
        if version not in V3_VERSIONS:
            raise ValueError(f"unknown v3-family version {version!r}: expected one of {', '.join(V3_VERSIONS)}")
        self.version = version
        self.name = f"s2-{version}"  # the table name: the probe tells it from the GAN workload "s2"
        self.recipe = as_recipe("s2-cfm", recipe)
        self.lora_rank = lora.check_rank(lora_rank)
        self.grad_ckpt = bool(grad_ckpt)
        self.config = v3_config(version, size)
        self.base: str | None = None  # the pretrained file under the weights (load_init), named in exports

    # --- building -----------------------------------------------------------------
    def build(self, device: torch.device | str = "cpu") -> nn.ModuleDict:
        with torch.device(device):  # allocate in place: no CPU copy of a meta/CUDA model
            model = SynthesizerTrnV3(self.config, frozen_style=not self.recipe.upstream)
            lora.add_lora(model, self.lora_rank)
        lora.base_cfm(model).estimator.checkpoint_blocks = self.grad_ckpt
        return nn.ModuleDict({"generator": model}).train()

    def param_groups(self, models: nn.ModuleDict) -> dict[str, list[dict]]:
        """One group, as upstream: every parameter that requires grad (LoRA, bridge, wns1; gpt-sovits: + ref_enc, linear_mel)."""
        params = [p for p in models["generator"].parameters() if p.requires_grad]
        return {"generator": [{"name": "trainable", "params": params, "lr_scale": 1.0}]}

    def default_lr(self) -> dict[str, float]:
        return {"generator": 1e-4}

    def adamw_options(self) -> dict:
        return {"betas": (0.8, 0.99), "eps": 1e-9}  # weight decay: torch's default 0.01, as upstream

    # --- data -----------------------------------------------------------------------
    def synthetic_batch(
        self,
        batch_size: int,
        slice_seconds: float,
        dpo: bool = False,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Batch:
        """Full-length random samples padded as upstream's collate pads S seconds (module doc);
        mel values ~ N(-0.5, 0.5), about where normalised log-mels sit. `dpo` is ignored."""
        b = check_batch_size(batch_size)
        frames, padded, mel_frames, mel_padded, phonemes = padded_lengths(self.version, slice_seconds)
        where = generator.device if generator is not None else torch.device(device)

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, device=where)

        def lengths(n: int) -> torch.Tensor:
            return torch.full((b,), n, dtype=torch.int64, device=where)

        batch = {
            "ssl": normal(b, SSL_DIM, padded),  # (B, 768, F') hubert features, 50 Hz
            "spec": normal(b, SPEC_BINS, padded).abs(),  # (B, 1025, F') magnitudes >= 0
            "spec_lens": lengths(frames),
            "mel": normal(b, MEL_BINS, mel_padded) * 0.5 - 0.5,  # (B, 100, M') normalised log-mel
            "mel_lens": lengths(mel_frames),
            "phoneme_ids": torch.randint(0, PHONEME_VOCAB, (b, phonemes), generator=generator, device=where),  # (B, P)
            "phoneme_lens": lengths(phonemes),
        }
        return {k: v.to(device) for k, v in batch.items()}

    def collate(self, samples, slice_seconds, dpo=False, generator=None, later=False) -> Batch:
        """ssl, spec to upstream's padded frame count for the slice, mel to its padded mel length
        (`padded_lengths`: the synthetic batch's shapes). DPO is an s1 mode."""
        if dpo:
            raise ValueError("DPO is an s1 mode: the s2 workload has no rejected sequences")
        _, padded, _, mel_padded, _ = padded_lengths(self.version, slice_seconds)
        return pad.cfm(samples, slice_seconds, self.version, padded, mel_padded)

    def audio_seconds(self, batch: Batch) -> float:
        lens = batch["spec_lens"]
        if lens.device.type == "meta":  # no values: assume full-length samples
            return batch["spec"].shape[0] * (batch["spec"].shape[-1] - 2) / FRAME_RATE
        return float(lens.sum()) / FRAME_RATE

    # --- steps ----------------------------------------------------------------------
    def loss(self, models: nn.ModuleDict, batch: Batch, precision: str, draws: FlowDraws | None = None) -> torch.Tensor:
        """The flow-matching loss of one micro-batch (fresh draws unless `draws` is given)."""
        model = models["generator"]
        content, style = model.condition(batch["ssl"], batch["spec"], batch["spec_lens"], batch["phoneme_ids"], batch["phoneme_lens"])
        mel, mel_lens = batch["mel"], batch["mel_lens"]
        with autocast(precision, mel.device):
            fea = model.features(content, mel_lens, style)
            n = min(mel.shape[-1], fea.shape[-1])  # upstream's cut: both to the shorter
            mel, fea = mel[..., :n], fea[..., :n]
            if draws is None:
                draws = draw(mel, extra=self._take_extra_passes(mel))
            return model.cfm(mel, mel_lens, fea, draws, detach_extra=not self.recipe.upstream)

    def _take_extra_passes(self, mel: torch.Tensor) -> bool:
        """Upstream's one draw per batch (Python's RNG, saved with our checkpoints); never on meta."""
        return mel.device.type != "meta" and random.random() < EXTRA_PASS_PROBABILITY

    def forward_backward(
        self,
        models: nn.ModuleDict,
        batch: Batch,
        precision: str,
        scaler: torch.amp.GradScaler | None = None,
        loss_scale: float = 1.0,
    ) -> StepResult:
        loss = self.loss(models, batch, precision)
        backward(loss, scaler, loss_scale)
        return StepResult(losses=to_floats({"cfm": loss, "total": loss}), samples=batch_size_of(batch))

    def train_step(self, models, optimizers, batch, precision, scaler=None, max_grad_norm=None) -> dict[str, float]:
        """One whole step; gpt-sovits: forward, then zero_grad, backward, step without clipping (upstream's order)."""
        if not self.recipe.upstream:
            return super().train_step(models, optimizers, batch, precision, scaler, max_grad_norm)
        loss = self.loss(models, batch, precision)
        optimizers.zero_grad()
        backward(loss, scaler, 1.0)
        norms = optimizers.step(scaler, None)
        return {**to_floats({"cfm": loss, "total": loss}), **{f"grad_norm/{k}": v for k, v in norms.items()}}

    @torch.no_grad()
    def validation_step(self, models: nn.ModuleDict, batch: Batch, precision: str = "fp32") -> float:
        """The flow-matching loss at fixed draws (module doc), in eval mode."""
        model = models["generator"]
        was_training = model.training
        model.eval()
        try:
            rng = torch.Generator().manual_seed(VALIDATION_SEED)  # CPU draws: identical on every device
            mel = batch["mel"]
            n = min(mel.shape[-1], fea_length(self.config.mel_upsample, batch["spec"].shape[-1]))
            draws = draw(mel[..., :n], extra=False, generator=rng)
            value = self.loss(models, batch, precision, draws)
        finally:
            model.train(was_training)
        return to_floats({"v": value})["v"]

    # --- GPT-SoVITS files -------------------------------------------------------------
    def load_init(self, models: nn.ModuleDict, init: str | None, init_d: str | None = None, base: str | None = None) -> list[str]:
        """Start from GPT-SoVITS weights (trainer/gptsovits/s2v3_files.py): a pretrained
        s2Gv3/s2Gv4 file, a LoRA export (over its base), or upstream's resume G_*.pth."""
        from trainer.gptsovits import s2v3_files

        if init_d is not None:
            raise ValueError(f"init_d {init_d}: GPT-SoVITS {self.version} has no discriminator; pass only --init")
        if init is None:
            return []
        notes, used = s2v3_files.load_init(models["generator"], init, self.version, base)
        self.base = str(used) if used is not None else None
        return notes

    # --- description ---------------------------------------------------------------
    def module_parameters(self, models: nn.ModuleDict) -> dict[str, int]:
        """generator, each part (cfm with its LoRA), and the LoRA adapters alone."""
        model = models["generator"]
        counts = {"generator": count_parameters(model)[0]}
        counts.update({part: count_parameters(getattr(model, part))[0] for part in PARTS})
        counts["lora"] = sum(p.numel() for n, p in model.named_parameters() if lora.LORA_KEY.search(n))
        return counts

    def describe(self) -> dict:
        """As the v2 family's s2 entries (name "s2" + version), plus the LoRA rank."""
        return {**super().describe(), "name": "s2", "version": self.version, "recipe": self.recipe.name, "lora_rank": self.lora_rank}


def padded_lengths(version: str, slice_seconds: float) -> tuple[int, int, int, int, int]:
    """(frames, padded frames, mel frames, padded mel frames, phonemes) of a full-length slice:
    50 Hz frames padded to 2 (F // 2 + 1) as upstream's v3/v4 collate pads them."""
    _, frames, phonemes = slice_shape(slice_seconds)
    padded = 2 * (frames // 2 + 1)
    mel_frames, mel_padded = mel_lengths(version, frames, padded)
    return frames, padded, mel_frames, mel_padded, phonemes


def mel_lengths(version: str, frames: int, padded: int) -> tuple[int, int]:
    """(mel frames of a clip of `frames` 50 Hz frames, the padded mel length upstream's collate makes)."""
    if version == "v4":
        return 2 * frames, 2 * padded  # 32 kHz, hop 320
    return math.floor(1.875 * frames), int(8 * (frames // 8 + 1) * 1.875)  # 24 kHz, hop 256


def fea_length(upsample: float, frames: int) -> int:
    """Frames of the DiT condition: nearest upsampling of `frames` (50 Hz) by 1.875 or 2."""
    return math.floor(frames * upsample)

