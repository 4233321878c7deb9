"""Features for training: content features (768-dim, 50 Hz), semantic tokens (25 Hz), BERT.

Content features ("ssl", what s2 reads and the semantic tokens are made of):
  - `HubertContent(path)`: a local chinese-hubert-base checkpoint in Hugging Face
    format (`--hubert PATH`; needs the optional `transformers` package). Audio is
    resampled to 16 kHz; the last hidden state (768-dim, 50 Hz) is stretched by
    nearest-neighbour to exactly N // 640 frames of the 32 kHz clip.
  - `BuiltinContent()` (default, no download): computed from the audio itself.
    128-bin log-mel of the 32 kHz clip (the s2 spectrogram settings: n_fft 2048,
    hop 640 -> 50 Hz), each bin standardised over the clip (mean 0, variance 1), plus
    first and second regression deltas (+-2 frames, also standardised): 384 values a
    frame, multiplied by a fixed random projection (768 x 384, N(0, 1/384) entries
    drawn from torch.Generator seed 20261121), so each output has variance ~1.
    Deterministic, and similar sounds give similar vectors; it carries no phonetic
    knowledge a pretrained model would.
Semantic tokens (`SemanticTokenizer`): the s2 generator's SSL projection (Conv1d
768 -> 768, kernel 2, stride 2: 50 -> 25 Hz) and its quantiser (1 codebook of 1024,
`trainer.sovits`), as GPT-SoVITS's 3-get-semantic does; codes in 0..1023, F // 2 of
them. Weights: a local pretrained s2 checkpoint (`--s2-checkpoint PATH`: a torch
file whose state dict, or its "weight"/"model"/"generator" entry, has ssl_proj.* and
quantizer.* keys in our layout), else the modules' own initialisation under
torch seed `seed` (codes then hash spectral shapes rather than phonetic units).
BERT (`BertFeatures(path)`, `--bert PATH`, needs `transformers`): a local HF model
with 1024-wide hidden states; the third-from-last layer, one vector per character,
copied to every phoneme that character produced; only Chinese text gets them (as in
GPT-SoVITS), other languages and the default get zeros.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainer.audio_constants import BERT_DIM, HOP_LENGTH, SAMPLE_RATE, SSL_DIM
from trainer.data.text import Phonemes

PROJECTION_SEED = 20261121
DELTA_WINDOW = 5
BUILTIN_NAME = "builtin-logmel-projection-v1"


def _require_transformers(flag: str):
    try:
        import transformers
    except ImportError:
        raise ValueError(f"{flag} needs the optional package `transformers` (pip install transformers); it is not installed") from None
    return transformers


def _check_model_dir(path: str | os.PathLike, flag: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{flag} {path}: not a local Hugging Face model folder (no config.json)")
    return path


class BuiltinContent:
    """wav (N,) float32 at 32 kHz -> (768, N // 640) float32; see the module docstring."""

    name = BUILTIN_NAME

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(PROJECTION_SEED)
        self.projection = torch.randn(SSL_DIM, 384, generator=g) / 384**0.5  # (768, 384)

    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        from trainer.sovits.spectral import FEATURE_MAGNITUDE_EPS, log_mel_spectrogram

        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None]  # (1, N)
        mel = log_mel_spectrogram(x, FEATURE_MAGNITUDE_EPS)[0]  # (128, F)
        d1 = deltas(mel)
        d2 = deltas(d1)
        stacked = torch.cat([_standardize(mel), _standardize(d1), _standardize(d2)])  # (384, F)
        return self.projection @ stacked  # (768, F)


def deltas(x: torch.Tensor, reach: int = DELTA_WINDOW // 2) -> torch.Tensor:
    """Regression deltas over +-reach frames, edges repeated: (C, F) -> (C, F)."""
    padded = torch.cat([x[:, :1].expand(-1, reach), x, x[:, -1:].expand(-1, reach)], dim=1)
    frames = x.shape[1]
    num = sum(n * (padded[:, reach + n : reach + n + frames] - padded[:, reach - n : reach - n + frames]) for n in range(1, reach + 1))
    return num / (2 * sum(n * n for n in range(1, reach + 1)))


def _standardize(x: torch.Tensor) -> torch.Tensor:
    """Each row to mean 0, variance 1 over time (rows of constant value become 0)."""
    return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True, unbiased=False).clamp_min(1e-5)


class HubertContent:
    """A local HF-format HuBERT (chinese-hubert-base): wav at 32 kHz -> (768, N // 640)."""

    def __init__(self, path: str | os.PathLike) -> None:
        transformers = _require_transformers("--hubert")
        path = _check_model_dir(path, "--hubert")
        self.name = f"hubert:{path.resolve()}"
        self.model = transformers.HubertModel.from_pretrained(str(path), local_files_only=True).eval()
        if self.model.config.hidden_size != SSL_DIM:
            raise ValueError(f"--hubert {path}: hidden size {self.model.config.hidden_size}, expected {SSL_DIM} (chinese-hubert-base)")
        self.normalize = (path / "preprocessor_config.json").is_file()

    @torch.no_grad()
    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        from trainer.data.audio import resample

        x = torch.from_numpy(resample(wav, SAMPLE_RATE, 16_000))[None]  # (1, N/2)
        if self.normalize:  # what Wav2Vec2FeatureExtractor(do_normalize=True) does
            x = (x - x.mean()) / (x.var(unbiased=False) + 1e-7).sqrt()
        hidden = self.model(x).last_hidden_state.transpose(1, 2)  # (1, 768, ~N/640)
        frames = len(wav) // HOP_LENGTH
        return torch.nn.functional.interpolate(hidden, size=frames, mode="nearest")[0].float()


class SemanticTokens(nn.Module):
    """The s2 generator's `ssl_proj` + `quantizer` (full size); keys match the generator's."""

    def __init__(self) -> None:
        super().__init__()
        from trainer.sovits.config import FULL_GENERATOR as cfg
        from trainer.sovits.quantizer import ResidualVectorQuantizer

        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, cfg.quant_dim, 2, stride=2)  # as Synthesizer.ssl_proj
        self.quantizer = ResidualVectorQuantizer(cfg.quant_dim, cfg.codebook_size)

    @torch.no_grad()
    def forward(self, ssl: torch.Tensor) -> torch.Tensor:
        """ssl (768, F) -> codes (F // 2,) int64 in 0..1023."""
        tokens = self.ssl_proj(ssl[None].float())  # (1, 768, F // 2)
        mask = torch.ones(1, 1, tokens.shape[-1])
        _, codes, _ = self.quantizer(tokens, mask)
        return codes[0]


class SemanticTokenizer:
    """Builds `SemanticTokens` from a local s2 checkpoint or a seeded initialisation."""

    def __init__(self, checkpoint: str | os.PathLike | None = None, seed: int = 0) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = SemanticTokens().eval()
        if checkpoint is None:
            self.name = f"seeded-s2-quantizer:seed={seed}"
        else:
            self.name = f"s2-checkpoint:{_load_s2(self.module, Path(checkpoint))}"

    def __call__(self, ssl: torch.Tensor) -> torch.Tensor:
        return self.module(ssl)


def _load_s2(module: SemanticTokens, path: Path) -> str:
    """Load ssl_proj.* / quantizer.* from any GPT-SoVITS s2 generator file (pretrained s2G*.pth,
    resume G_*.pth, exported SoVITS_weights*.pth with or without the 05/06 header) or our
    export/generator.pt; returns "path sha256[:12]"."""
    from trainer.gptsovits.s2_files import read_s2_file

    what = "--s2-checkpoint"
    try:
        file = read_s2_file(path, what)
    except ValueError:
        file = _plain_state_dict(path, what)  # export/generator.pt: a bare state dict
        if file is None:
            raise
    wanted = module.state_dict()
    missing = sorted(set(wanted) - set(file.weights))
    if missing:
        raise ValueError(f"{what} {path}: missing {', '.join(missing)} (expected the s2 generator's ssl_proj and quantizer)")
    for key, target in wanted.items():
        if file.weights[key].shape != target.shape:
            raise ValueError(f"{what} {path}: {key} has shape {tuple(file.weights[key].shape)}, expected {tuple(target.shape)} (a full-size s2 generator)")
    with torch.no_grad():
        for key, target in wanted.items():
            target.copy_(file.weights[key].float())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.resolve()} sha256:{digest}"


def _plain_state_dict(path: Path, what: str):
    from trainer.gptsovits.s2_files import S2File

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if isinstance(state, dict) and isinstance(state.get("generator"), dict):
        state = state["generator"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    return S2File(path, "ours", "generator", state, None)


class StandInSpeakerEmbedding:
    """A stand-in for GPT-SoVITS's 20480-d ERes2NetV2 speaker embedding (7-sv_cn/), which this
    project cannot compute: per-bin mean and standard deviation of the clip's log-mel (256
    values, a crude timbre summary), standardised and mapped by a fixed seeded random
    projection to 20480 values. Same clip -> same vector; it is NOT the embedding upstream's
    v2Pro models were trained with, so for real fine-tuning convert a GPT-SoVITS experiment
    folder (`advisor prepare --from-gpt-sovits`), which carries the real one."""

    name = "stand-in-sv:logmel-stats-projection:seed=20480"

    def __init__(self) -> None:
        from trainer.sovits.config import SV_DIM

        g = torch.Generator().manual_seed(20480)
        self.projection = torch.randn(SV_DIM, 256, generator=g) / 256**0.5  # (20480, 256)

    def __call__(self, wav: np.ndarray) -> torch.Tensor:
        from trainer.sovits.spectral import FEATURE_MAGNITUDE_EPS, log_mel_spectrogram

        mel = log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None], FEATURE_MAGNITUDE_EPS)[0]  # (128, F)
        stats = torch.cat([mel.mean(1), mel.std(1, unbiased=False)])  # (256,)
        stats = (stats - stats.mean()) / stats.std(unbiased=False).clamp_min(1e-5)
        return self.projection @ stats  # (20480,)


class BertFeatures:
    """Per-phoneme BERT features (1024, P) for Chinese text from a local HF model."""

    def __init__(self, path: str | os.PathLike) -> None:
        transformers = _require_transformers("--bert")
        path = _check_model_dir(path, "--bert")
        self.name = f"bert:{path.resolve()}"
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        if self.model.config.hidden_size != BERT_DIM:
            raise ValueError(f"--bert {path}: hidden size {self.model.config.hidden_size}, expected {BERT_DIM}")

    @torch.no_grad()
    def __call__(self, phonemes: Phonemes) -> torch.Tensor:
        enc = self.tokenizer(phonemes.text, return_tensors="pt", return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping")[0]  # (L, 2) character spans of tokens
        hidden = self.model(**enc, output_hidden_states=True).hidden_states[-3][0]  # (L, 1024)
        token_of_char = {}
        for t, (start, end) in enumerate(offsets.tolist()):
            for c in range(start, end):
                token_of_char.setdefault(c, t)
        out = torch.zeros(BERT_DIM, len(phonemes.ids))
        for p, c in enumerate(phonemes.chars):
            if c in token_of_char:
                out[:, p] = hidden[token_of_char[c]]
        return out
