"""Samples to listen to: at each validation, a few validation clips synthesised whole.

    val event ─ SampleWriter.write(event) (rank 0, a sink of the loop's event log)
        s2 v3/v4 (the CFM/DiT predicts a mel): no samples; the event's note says a vocoder is needed
        s2: the generator being trained:  style(ref spec) -> prior(ssl, phonemes) -> z_p = mean + 0.5 noise std
                                           -> flow(reverse=True) -> dec: the WHOLE clip, not a 0.64 s window
        s1: with validation.sample_s2 (our export's generator.pt): the GPT's predicted semantic tokens
            (teacher-forced argmax, one step ahead) -> the s2 codebook -> enc_p -> flow(reverse) -> dec
        -> RUN_DIR/samples/step_<N>/<clip>.wav (32 kHz, 16-bit) and <clip>.ref.wav (the clip itself)
        -> a `samples` event {folder, files, clips}
    checkpoint event with best=true, export event -> export/samples/ = the best step's folder

The generator is put in eval mode (no quantiser EMA update, no dropout) and
back; noise comes from a private generator seeded per clip, so training's RNG
streams, and hence a resume, are untouched. fp32, no autocast: a few clips.
The style reference is the clip itself (GPT-SoVITS's inference takes a
reference recording; ours has the clip at hand).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainer.audio_constants import HOP_LENGTH, SAMPLE_RATE
from trainer.data import audio_backend
from trainer.data.loader import PreparedDataset
from trainer.workload import Workload

SAMPLES = "samples"
NOISE_SCALE = 0.5  # of the prior's std, as in GPT-SoVITS inference
SEED = 4321
KEPT = "samples"  # export/samples/
KEPT_STEP = "step.txt"  # which step export/samples/ holds
CFM_NOTE = ("s2 v3/v4 samples need GPT-SoVITS's vocoder (BigVGAN 24 kHz for v3, vocoder.pth for v4): not given; "
            "this trainer has no vocoder option yet")  # the model predicts a mel, not a waveform


def step_folder(run_root: str | os.PathLike, step: int) -> Path:
    return Path(run_root) / SAMPLES / f"step_{step:08d}"


# --- synthesis ---------------------------------------------------------------------------------
def _call(method: Callable, *args: Any, sv_emb: torch.Tensor | None = None) -> Any:
    """method(*args), with sv_emb= when the batch has one and the method takes it (v2Pro)."""
    target = method.forward if isinstance(method, nn.Module) else method  # a module's __call__ hides forward's signature
    if sv_emb is not None and "sv_emb" in inspect.signature(target).parameters:
        return method(*args, sv_emb=sv_emb)
    return method(*args)


def _mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    return (torch.arange(frames, device=lengths.device)[None] < lengths[:, None]).unsqueeze(1).float()  # (B, 1, F)


def _decode(generator: nn.Module, mean_p: torch.Tensor, log_std_p: torch.Tensor, mask: torch.Tensor, style: torch.Tensor,
            seed: int, sv_emb: torch.Tensor | None) -> torch.Tensor:
    """Prior sample -> reverse flow -> decoder over every frame: wav (B, F * 640)."""
    rng = torch.Generator().manual_seed(seed)  # CPU draws: the same noise on every device
    noise = torch.randn(mean_p.shape, generator=rng).to(mean_p.device)
    z_p = (mean_p + noise * torch.exp(log_std_p) * NOISE_SCALE) * mask
    z = generator.flow(z_p, mask, style, reverse=True)
    return _call(generator.dec, z * mask, style, sv_emb=sv_emb).reshape(mean_p.shape[0], -1)


@torch.no_grad()
def synthesize_s2(generator: nn.Module, batch: dict, seed: int = SEED) -> torch.Tensor:
    """A one-clip s2 batch (cropped to its length) -> wav (F * 640,) f32 in [-1, 1], the whole clip."""
    spec, lengths = batch["spec"].float(), batch["spec_lens"]
    mask = _mask(lengths, spec.shape[-1]).to(spec.dtype)
    sv_emb = batch.get("sv_emb")
    style = _call(generator.style, spec, mask, sv_emb=sv_emb)
    mean_p, log_std_p, _ = _call(generator.prior, batch["ssl"].float(), mask, lengths, batch["phoneme_ids"], batch["phoneme_lens"], style, sv_emb=sv_emb)
    return _decode(generator, mean_p, log_std_p, mask, style, seed, sv_emb)[0].clamp(-1, 1).float()


def code_vectors(quantizer: nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """Semantic codes (B, T) at 25 Hz -> code vectors (B, D, T): the quantizer's `decode` if it has one, else its codebook."""
    decode = getattr(quantizer, "decode", None)
    if callable(decode):
        return decode(codes)
    bins = quantizer.embed.shape[0]  # 1024 at full size, as s1's vocabulary; the tiny rehearsal model has 64,
    return F.embedding(codes % bins, quantizer.embed).transpose(1, 2)  # so there ids wrap (a no-op at full size)


@torch.no_grad()
def synthesize_from_codes(generator: nn.Module, codes: torch.Tensor, ref: dict, seed: int = SEED) -> torch.Tensor:
    """s1's semantic tokens (1, T) through an s2 generator; `ref` (a one-clip s2 batch) gives style and phonemes."""
    frames = 2 * codes.shape[-1]  # 25 Hz tokens -> 50 Hz frames
    spec, spec_lens = ref["spec"].float(), ref["spec_lens"]
    sv_emb = ref.get("sv_emb")  # v2Pro / v2ProPlus generators take the reference clip's speaker embedding
    style = _call(generator.style, spec, _mask(spec_lens, spec.shape[-1]), sv_emb=sv_emb)
    mask = _mask(torch.tensor([frames], device=codes.device), frames)
    quantized = F.interpolate(code_vectors(generator.quantizer, codes).float(), size=frames, mode="nearest")  # (1, D, F)
    phoneme_mask = _mask(ref["phoneme_lens"], ref["phoneme_ids"].shape[-1])
    mean_p, log_std_p = generator.enc_p(quantized, mask, ref["phoneme_ids"], phoneme_mask, generator.text_style(style))
    return _decode(generator, mean_p, log_std_p, mask, style, seed, sv_emb)[0].clamp(-1, 1).float()


@torch.no_grad()
def predicted_codes(gpt: nn.Module, batch: dict, vocab: int = 1024) -> torch.Tensor:
    """The GPT's next-token predictions for a one-clip s1 batch (teacher-forced argmax), (1, L) in [0, vocab).

    Position t predicts token t + 1; the first token is the clip's own. A
    predicted EOS (or pad) keeps the previous token, so the length stays the clip's."""
    length = int(batch["semantic_lens"][0])
    ids = batch["semantic_ids"][:, :length]
    logits = gpt(batch["phoneme_ids"], batch["phoneme_lens"], batch["bert_features"], ids, batch["semantic_lens"].clamp(max=length))
    guess = logits[0, : length - 1].float().argmax(-1)  # (L - 1,)
    out = [int(ids[0, 0])]
    for token in guess.tolist():
        out.append(token if token < vocab else out[-1])
    return torch.tensor([out], device=ids.device)


def _crop(batch: dict) -> dict:
    """A one-clip s2 batch cut to the clip's own frames (the padded tail is not synthesised)."""
    frames = int(batch["spec_lens"][0])
    out = dict(batch)
    out["ssl"], out["spec"] = batch["ssl"][..., :frames], batch["spec"][..., :frames]
    out["wav"] = batch["wav"][..., : frames * HOP_LENGTH]
    return out


# --- the sink ----------------------------------------------------------------------------------
def load_s2_export(path: str | os.PathLike, device: torch.device) -> nn.Module:
    """An s2 generator from our export (`RUN_DIR/export/generator.pt`, size from the info.json beside it).

    GPT-SoVITS's own SoVITS weights files are the s2 loader's (trainer/gptsovits); not read here yet."""
    from trainer.workloads import get_workload

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"validation.sample_s2: {path}: no such file (expected an s2 export's generator.pt)")
    info_path = path.parent / "info.json"
    size = "full"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("workload") not in (None, "s2"):
            raise ValueError(f"validation.sample_s2: {path}: exported by a {info.get('workload')} run, expected s2")
        size = info.get("size", size)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or damaged: name the file
        raise ValueError(f"validation.sample_s2: {path}: not a readable state dict ({type(exc).__name__})") from None
    generator = get_workload("s2", size=size).build("cpu")["generator"]
    try:
        generator.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"validation.sample_s2: {path}: not an s2 {size} generator state dict ({str(exc).splitlines()[0]})") from None
    return generator.to(device).eval()


@dataclass
class SampleWriter:
    """Event sink: on each `val` event, writes samples; on a best checkpoint or an export, keeps the best step's."""

    root: Path
    workload: Workload  # the run's (s1: collates the tokens the GPT predicts from)
    models: nn.ModuleDict
    dataset: PreparedDataset
    slice_seconds: float
    device: torch.device
    count: int
    log: Callable[..., None]  # the loop's event log (kind, step, **fields)
    s2: nn.Module | None = None  # the s1 run's decoder
    s2_workload: Workload | None = None  # s1: collates the reference clip the decoder takes its style from

    def write(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "val":
            self.at_validation(int(event.get("step", 0)))
        elif kind == "checkpoint" and event.get("best"):
            keep_best(self.root, int(event.get("step", 0)))
        elif kind == "export":
            keep_exported(self.root)

    def close(self) -> None:
        """A sink's end-of-run hook; this one holds no files open between events."""

    def at_validation(self, step: int) -> None:
        n = min(self.count, len(self.dataset))  # the split's first clips: the same ones at every validation
        if n <= 0:
            return
        if self.workload.name == "s1" and self.s2 is None:
            self.log("samples", step, folder=None, files=[], clips=[], note="s1 samples need an s2 checkpoint: pass --s2 PATH (an s2 run's export/generator.pt)")
            return
        if self.workload.recipe.workload == "s2-cfm":  # v3/v4: a mel model; no vocoder, no audio
            self.log("samples", step, folder=None, files=[], clips=[], note=CFM_NOTE)
            return
        folder = step_folder(self.root, step)
        folder.mkdir(parents=True, exist_ok=True)
        model = self.models["generator"] if self.workload.name == "s2" else self.models["gpt"]
        was_training = model.training
        model.eval()
        files, clips, problem, quiet = [], [], None, 0
        try:
            for i in range(n):
                clip = str(self.dataset.clips[i].get("id", i))[:16]
                wav, ref = self._one(i, SEED + i)
                quiet += float(wav.detach().float().std()) < NEAR_SILENT  # a DC offset is silence too
                files += [_write(folder / f"{i:02d}_{clip}.wav", wav), _write(folder / f"{i:02d}_{clip}.ref.wav", ref)]
                clips.append(str(clip))
        except Exception as exc:  # a listening aid never ends an unattended run: the event says what failed
            problem = f"samples failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        finally:
            model.train(was_training)
        if quiet and problem is None:
            problem = (f"{quiet} of {n} samples near-silent (their variation under -60 dBFS): expected early in training, "
                       "before the decoder has learned; later validations' samples become speech")
        fields = {"note": problem} if problem else {}
        self.log("samples", step, folder=str(folder.relative_to(self.root)), files=[str(Path(f).relative_to(self.root)) for f in files], clips=clips, **fields)

    def _one(self, index: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.dataset[index]
        if self.workload.name == "s2":
            batch = _crop(_to(self.workload.collate([sample], self.slice_seconds), self.device))
            return synthesize_s2(self.models["generator"], batch, seed), batch["wav"][0, 0]
        ref = _crop(_to(self.s2_workload.collate([sample], self.slice_seconds), self.device))
        codes = predicted_codes(self.models["gpt"], _to(self.workload.collate([sample], self.slice_seconds), self.device))
        return synthesize_from_codes(self.s2, codes, ref, seed), ref["wav"][0, 0]


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _write(path: Path, wav: torch.Tensor) -> str:
    """16-bit PCM WAV at 32 kHz (written to a temporary name, then renamed)."""
    samples = wav.detach().float().cpu().numpy()
    tmp = path.with_name(path.name + ".tmp")
    audio_backend.soundfile().write(str(tmp), samples.clip(-1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return str(path)


# --- keeping the best step's samples with the export -------------------------------------------
def keep_best(root: str | os.PathLike, step: int) -> bool:
    """export/samples/ = samples/step_<step>/ (replaced whole); False if that step has none."""
    source = step_folder(root, step)
    if not source.is_dir():
        return False
    target = Path(root) / "export" / KEPT
    tmp = target.with_name(KEPT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    (tmp / KEPT_STEP).write_text(f"{step}\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return True


def keep_exported(root: str | os.PathLike) -> None:
    """After an export: make export/samples/ match the step export/info.json names."""
    info = Path(root) / "export" / "info.json"
    if not info.is_file():
        return
    step = json.loads(info.read_text(encoding="utf-8")).get("step")
    if not isinstance(step, int):
        return
    marker = Path(root) / "export" / KEPT / KEPT_STEP
    if not (marker.is_file() and marker.read_text(encoding="utf-8").strip() == str(step)):
        keep_best(root, step)


NEAR_SILENT = 1e-3  # a sample whose standard deviation is under -60 dBFS: silence (an early decoder's output)


def is_audible(wav: Any) -> bool:
    """Finite and not silent (RMS above -60 dBFS): what a test and `advisor report` check."""
    import numpy as np

    x = np.asarray(wav, dtype=np.float64)
    return bool(x.size and np.isfinite(x).all() and math.sqrt(float((x**2).mean())) > 1e-3)
