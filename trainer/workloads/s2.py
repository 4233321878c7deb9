"""Stage s2: the SoVITS v2 synthesiser (VITS-style generator) trained against a
multi-period discriminator (GAN).

Step (one micro-batch), mirroring GPT-SoVITS:
  1. Generator forward: the full padded utterance runs through the style
     encoder, SSL projection + EMA quantiser, prior encoder (MRTE), posterior
     encoder and flow; a random 32-frame window of z (20480 samples, 0.64 s)
     per sample is decoded, so decoder, mel loss and discriminator cost do not
     grow with slice length.
  2. D loss (LSGAN) on the real window vs the detached fake; backward.
  3. G loss with D frozen: adversarial (LSGAN) + feature matching + 45 x L1 of
     log-mels + commitment + KL; backward. Both log-mels come from waveform
     windows (GPT-SoVITS takes the real one from the input spectrogram: the
     same up to edge padding; ours keeps synthetic batches self-consistent).
Both backwards accumulate; both optimisers step later in `OptimizerSet.step`.
GPT-SoVITS instead steps D before the G pass. With gradient accumulation ours
updates D and G together, so the G loss of a step sees the not-yet-updated D.
Peak memory is the same: D's gradients are alive during the G backward in
both orders.

Versions (`version`): v2, v2Pro, v2ProPlus, GPT-SoVITS's s2 models
(generator 51.31M / 79.43M / 98.34M, discriminator 46.75M / 63.19M / 63.19M);
v2Pro and v2ProPlus batches carry `sv_emb` (B, 20480). Recipes (`recipe`):
"advisor" is the step above; "gpt-sovits" changes what GPT-SoVITS's trainer
computes differently (frozen quantiser, unmasked SSL, detached style into
enc_q, real mel from the input spectrogram); docs/ARCHITECTURE.md lists each.

Sizes: "full" is GPT-SoVITS's size;
"tiny" keeps every module and the hop-640 decoder upsampling (so all shapes
are the real ones) with widths of 16-32 and one or two layers each, for tests.

Losses are returned as floats; on the meta device (the probe's traced
estimate) they are NaN, since no values exist there.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from trainer.audio_constants import (
    HOP_LENGTH,
    PHONEME_VOCAB,
    SAMPLE_RATE,
    SEGMENT_FRAMES,
    SPEC_BINS,
    SSL_DIM,
)
from trainer.data import collate as pad
from trainer.data import padding
from trainer.optim import OptimizerSet
from trainer.recipe import Recipe, as_recipe
from trainer.sovits import losses
from trainer.sovits.config import SV_DIM, check_version, discriminator_config, generator_config
from trainer.sovits.discriminator import MultiPeriodDiscriminator
from trainer.sovits.generator import PARTS, SV_PARTS, Synthesizer
from trainer.sovits.segment import cut_segments
from trainer.sizing import slice_shape
from trainer.sovits.spectral import log_mel_spectrogram, spec_to_log_mel
from trainer.workload import (
    backward,
    to_floats,
    Batch,
    StepResult,
    Workload,
    autocast,
    batch_size_of,
    check_batch_size,
    count_parameters,
    frozen,
)

MEL_WEIGHT = 45.0  # c_mel in GPT-SoVITS
SEGMENT_SAMPLES = SEGMENT_FRAMES * HOP_LENGTH  # 20480
VALIDATION_SEED = 1234  # fixed window and prior noise: the metric depends only on the batch


class S2Workload(Workload):
    name = "s2"
    metric_name = "val_mel_l1"

    def __init__(self, size: str = "full", version: str = "v2Pro", recipe: Recipe | str = "advisor") -> None:
        super().__init__(size)
        self.version = check_version(version)
        self.recipe = as_recipe(self.name, recipe)
        self.generator_config = generator_config(version, size)
        self.discriminator_config = discriminator_config(version, size)

    @property
    def has_sv(self) -> bool:
        return self.generator_config.has_sv

    # --- building -----------------------------------------------------------------
    def build(self, device: torch.device | str = "cpu") -> nn.ModuleDict:
        with torch.device(device):  # allocate in place: no CPU copy of a meta/CUDA model
            models = nn.ModuleDict(
                {
                    "generator": Synthesizer(self.generator_config, self.recipe.upstream),
                    "discriminator": MultiPeriodDiscriminator(self.discriminator_config),
                }
            )
        return models.train()

    def param_groups(self, models: nn.ModuleDict) -> dict[str, list[dict]]:
        """Text embedding, text transformer and MRTE at 0.4 x LR; the rest of G at 1 x."""
        generator = models["generator"]
        text = [p for m in generator.enc_p.text_modules() for p in m.parameters()]
        text_ids = {id(p) for p in text}
        rest = [p for p in generator.parameters() if id(p) not in text_ids and p.requires_grad]
        return {
            "generator": [
                {"name": "text_encoder", "params": text, "lr_scale": 0.4},
                {"name": "rest", "params": rest, "lr_scale": 1.0},
            ],
            "discriminator": [{"name": "discriminator", "params": list(models["discriminator"].parameters()), "lr_scale": 1.0}],
        }

    def default_lr(self) -> dict[str, float]:
        return {"generator": 1e-4, "discriminator": 1e-4}

    def adamw_options(self) -> dict:
        return {"betas": (0.8, 0.99), "eps": 1e-9}

    # --- data -----------------------------------------------------------------------
    def collate(self, samples, slice_seconds, dpo=False, generator=None, later=False) -> Batch:
        """ssl, spec, wav padded to F = 50*S frames (F*640 samples), phonemes to max(12*S, longest).
        `slice_seconds` None: padded to the batch's own longest, each clip's spectrogram from its
        own wav (length buckets: trainer/data/padding.py)."""
        if dpo:
            raise ValueError("DPO is an s1 mode: the s2 workload has no rejected sequences")
        if slice_seconds is None:
            return padding.pad_s2(samples, spectrogram=not later)
        pad.check_fits(samples, slice_seconds)
        _, F, P = pad.padded_sizes(slice_seconds, samples)
        return {**pad.audio(samples, F), **pad.phonemes(samples, P)}

    def finish(self, batch: Batch) -> Batch:
        """The per-clip spectrogram made where the batch is (a GPU: about a millisecond, where the
        loader's CPU takes ~0.1 s for 8 clips of 7 s)."""
        return batch if "spec" in batch else padding.add_spectrogram(batch)

    def synthetic_batch(
        self,
        batch_size: int,
        slice_seconds: float,
        dpo: bool = False,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Batch:
        """Full-length random samples shaped like `slice_seconds` of real data.

        F = round(50 s) frames (at least 2: the SSL projection halves it),
        P = round(12 s) phonemes (at least 1): `trainer.sizing.slice_shape`.
        `dpo` does not exist for s2 and is ignored."""
        b = check_batch_size(batch_size)
        _, frames, phonemes = slice_shape(slice_seconds)
        where = generator.device if generator is not None else torch.device(device)

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, device=where)

        batch = {
            "ssl": normal(b, SSL_DIM, frames),  # (B, 768, F) hubert features, 50 Hz
            "spec": normal(b, SPEC_BINS, frames).abs(),  # (B, 1025, F) magnitudes >= 0
            "spec_lens": torch.full((b,), frames, dtype=torch.int64, device=where),
            "wav": torch.rand(b, 1, frames * HOP_LENGTH, generator=generator, device=where) * 2 - 1,  # (B, 1, 640 F) in [-1, 1)
            "wav_lens": torch.full((b,), frames * HOP_LENGTH, dtype=torch.int64, device=where),
            "phoneme_ids": torch.randint(0, PHONEME_VOCAB, (b, phonemes), generator=generator, device=where),  # (B, P)
            "phoneme_lens": torch.full((b,), phonemes, dtype=torch.int64, device=where),
        }
        if self.has_sv:
            batch["sv_emb"] = normal(b, SV_DIM)  # (B, 20480) speaker-verification embedding
        return {k: v.to(device) for k, v in batch.items()}

    def audio_seconds(self, batch: Batch) -> float:
        lens = batch["wav_lens"]
        if lens.device.type == "meta":  # no values: assume full-length samples
            return batch["wav"].shape[0] * batch["wav"].shape[-1] / SAMPLE_RATE
        return float(lens.sum()) / SAMPLE_RATE

    # --- steps ----------------------------------------------------------------------
    def forward_backward(
        self,
        models: nn.ModuleDict,
        batch: Batch,
        precision: str,
        scaler: torch.amp.GradScaler | None = None,
        loss_scale: float = 1.0,
        step_discriminator: Callable[[], None] | None = None,
    ) -> StepResult:
        """`step_discriminator` (the gpt-sovits recipe, given by the loop): called after the D
        backward, it steps D, and the G pass then runs D with its parameters requiring grad
        (as GPT-SoVITS; those gradients are dropped with the step's). Without it D is
        frozen in the G pass and steps with G after the accumulation."""
        generator, discriminator = models["generator"], models["discriminator"]
        device = batch["wav"].device
        with autocast(precision, device):
            out = generator(
                batch["ssl"], batch["spec"], batch["spec_lens"], batch["phoneme_ids"], batch["phoneme_lens"], sv_emb=self._sv(batch)
            )
        real = cut_segments(batch["wav"], out.starts * HOP_LENGTH, SEGMENT_SAMPLES)  # (B, 1, 20480)
        if self.recipe.upstream:  # the real mel: a window of the input spectrogram's mel
            real_mel = cut_segments(spec_to_log_mel(batch["spec"]), out.starts, SEGMENT_FRAMES)  # (B, 128, 32)
        else:
            real_mel = log_mel_spectrogram(real)

        with autocast(precision, device):
            real_scores, _ = discriminator(real)
            fake_scores, _ = discriminator(out.wav.detach())
            loss_d = losses.discriminator_loss(real_scores, fake_scores)
        backward(loss_d, scaler, loss_scale)
        if step_discriminator is not None:
            step_discriminator()

        d_context = contextlib.nullcontext() if step_discriminator is not None else frozen(discriminator)
        with autocast(precision, device), d_context:
            with torch.no_grad() if step_discriminator is None else contextlib.nullcontext():
                _, real_maps = discriminator(real)  # feature-matching targets (detached in the loss)
            fake_scores, fake_maps = discriminator(out.wav)
            named = {
                "g_adv": losses.generator_adversarial_loss(fake_scores),
                "g_fm": losses.feature_matching_loss(real_maps, fake_maps),
                "mel": torch.mean(torch.abs(log_mel_spectrogram(out.wav) - real_mel)),
                "commit": out.commit.float(),
                "kl": losses.kl_loss(out.z_p, out.log_std_q, out.mean_p, out.log_std_p, out.mask),
            }
            loss_g = named["g_adv"] + named["g_fm"] + MEL_WEIGHT * named["mel"] + named["commit"] + named["kl"]
        backward(loss_g, scaler, loss_scale)

        named.update(d=loss_d, g=loss_g, total=loss_g + loss_d)
        return StepResult(losses=to_floats(named), samples=batch_size_of(batch))

    @torch.no_grad()
    def validation_step(self, models: nn.ModuleDict, batch: Batch, precision: str = "fp32") -> float:
        """Mel L1 of the inference path (prior sample, reverse flow, decoder) on one
        window per sample; window and noise come from a fixed seed, so the same
        batch and weights always give the same value."""
        generator = models["generator"]
        was_training = generator.training
        generator.eval()
        try:
            wav, real = self._synthesize_window(generator, batch, precision)
            value = mel_l1(wav, real)
        finally:
            generator.train(was_training)
        return to_floats({"mel": value})["mel"]

    def _synthesize_window(self, generator: Synthesizer, batch: Batch, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
        spec = batch["spec"]
        device = spec.device
        rng = torch.Generator().manual_seed(VALIDATION_SEED)  # CPU draws: identical on every device
        b, frames = spec.shape[0], spec.shape[-1]
        noise = torch.randn(b, generator.cfg.hidden, frames, generator=rng).to(device)
        uniform = torch.rand(b, generator=rng).to(device)
        with autocast(precision, device):
            wav, starts = generator.synthesize(
                batch["ssl"], spec, batch["spec_lens"], batch["phoneme_ids"], batch["phoneme_lens"], noise, uniform, sv_emb=self._sv(batch)
            )
        return wav, cut_segments(batch["wav"], starts * HOP_LENGTH, SEGMENT_SAMPLES)

    def early_steps(self, optimizers: OptimizerSet, scaler: torch.amp.GradScaler | None) -> dict:
        """gpt-sovits recipe: D steps inside the step, after its pass and before the G pass (as upstream)."""
        if not self.recipe.discriminator_first:
            return {}
        return {"step_discriminator": lambda: optimizers.step_early("discriminator", scaler)}

    # --- GPT-SoVITS files -------------------------------------------------------------
    def load_init(self, models: nn.ModuleDict, init: str | None, init_d: str | None = None) -> list[str]:
        """Start from GPT-SoVITS weights (trainer/gptsovits/s2_files.py): G from `init`, D from
        `init_d` or the s2D…/D_… file beside `init`. Returns one note per decision."""
        from trainer.gptsovits import s2_files

        notes = []
        if init is not None:
            g = s2_files.read_s2_file(init, "init")
            if g.model != "generator":
                raise ValueError(f"init {g.path}: a discriminator file; pass it as --init-d and the generator as --init")
            s2_files.check_version(g, self.version, "init")
            skipped = s2_files.load_weights(models["generator"], g, "init", allow_missing="enc_q" if g.kind == "exported" else None)
            notes.append(f"generator from {g.path} ({g.kind}, {g.version})")
            if skipped:
                notes.append(f"enc_q starts from this trainer's initialisation: {g.path.name} is an exported SoVITS_weights file without it")
            init_d = init_d or (str(s2_files.discriminator_beside(g.path)) if s2_files.discriminator_beside(g.path) else None)
        if init_d is not None:
            d = s2_files.read_s2_file(init_d, "init_d")
            if d.model != "discriminator":
                raise ValueError(f"init_d {d.path}: a generator file, expected GPT-SoVITS's discriminator (s2D*.pth or D_*.pth)")
            s2_files.check_version(d, self.version, "init_d")
            s2_files.load_weights(models["discriminator"], d, "init_d")
            notes.append(f"discriminator from {d.path} ({d.kind})")
        else:
            notes.append("discriminator starts from this trainer's initialisation (no --init-d and no s2D*/D_* file beside --init)")
        return notes

    def _sv(self, batch: Batch) -> torch.Tensor | None:
        """The batch's sv_emb (B, 20480) for v2Pro+; a one-line error naming the key if absent."""
        if not self.has_sv:
            return None
        if "sv_emb" not in batch:
            raise ValueError(f"batch has no sv_emb: s2 {self.version} needs a (B, {SV_DIM}) speaker embedding per clip (prepare writes one)")
        return batch["sv_emb"]

    # --- description ---------------------------------------------------------------
    def module_parameters(self, models: nn.ModuleDict) -> dict[str, int]:
        """generator, discriminator, and each generator part (quantizer: 0, its codebook is buffers)."""
        counts = {name: count_parameters(m)[0] for name, m in models.items()}
        generator = models["generator"]
        parts = PARTS + (SV_PARTS if self.has_sv else ())
        counts.update({part: count_parameters(getattr(generator, part))[0] for part in parts})
        return counts

    def describe(self) -> dict:
        return {**super().describe(), "version": self.version, "recipe": self.recipe.name}


def export_folder(version: str) -> str:
    """GPT-SoVITS's folder for s2 weights of `version` (its webui: SoVITS_weights, _v2, _v2Pro, _v2ProPlus)."""
    return f"SoVITS_weights_{version}"


def mel_l1(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean |log-mel(generated) - log-mel(real)| over (B, 128, 32), fp32 (STFT never in half precision)."""
    return torch.mean(torch.abs(log_mel_spectrogram(generated) - log_mel_spectrogram(real)))
