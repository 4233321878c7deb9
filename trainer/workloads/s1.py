"""s1: the GPT text-to-semantic model of GPT-SoVITS v2, as a Workload.

Model (full size, 77,606,402 parameters, the GPT-SoVITS v2 count exactly):
  phoneme_embedding  732 x 512                    374,784
  bert_proj          Linear 1024 -> 512           524,800  (BERT features added to phonemes)
  audio_embedding    1025 x 512                   524,800  (semantic tokens; 1024 = EOS/pad)
  positional         sinusoidal, one learnable alpha per stream (text, audio)   2
  transformer        24 post-norm layers, width 512, 16 heads, FFN 2048 (ReLU),
                     dropout 0.1; 3,152,384 per layer                    75,657,216
  head               Linear 512 -> 1025, no bias  524,800
Tiny size (`size="tiny"`, for tests): 2 layers, width 64, 4 heads, FFN 256, same
vocabularies and BERT width (so the batches are the same).

Sequence: [phonemes (P) ; semantic tokens (T)], S = P + T. Phonemes attend to all
valid phonemes and never to semantic tokens; a semantic token attends to all valid
phonemes and to itself and earlier valid semantic tokens. Padding keys are masked.

Attention implementations (`attention=` on the workload), same parameters, same
loss (up to float rounding):
  "sdpa"        (default) F.scaled_dot_product_attention with a boolean mask
                (B, 1, S, S) broadcast over heads: PyTorch may pick a fused kernel
                that never materialises the (S, S) scores per head. Memory-saving.
  "gpt_sovits"  what GPT-SoVITS trains with: an additive float mask of shape
                (B*heads, S, S) is materialised once per forward (0 / -inf, in the
                hidden-state dtype: fp32 under autocast, ~9 MB per sample at S~370)
                and handed, viewed as (B, heads, S, S), to the same
                F.scaled_dot_product_attention with dropout. PyTorch copies a float
                mask whose last dim is not a multiple of 8 into a padded one in
                every layer (kept for backward on CUDA): ~0.2 GiB per 10 s sample.

Training (teacher forcing): the input is the semantic tokens, the target is the
same sequence shifted left by one with EOS (1024) appended; the loss is the mean
cross-entropy over valid semantic positions ("ce"). With DPO (the batch holds
`rejected_ids`) the rejected sequence runs a second forward pass in the same
autograd graph and "dpo" = mean(-logsigmoid(0.2 * (logp_chosen - logp_rejected))),
logp being the summed log-probability of a sequence's targets; "total" = ce + dpo.

The step path has no `.item()` and no data-dependent Python branches, so it traces
on the meta device; random rejected slices are made by `make_rejected` on the CPU
when the batch is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from trainer.audio_constants import (
    BERT_DIM,
    PHONEME_VOCAB,
    PHONEMES_PER_SECOND,
    SEMANTIC_EOS,
    SEMANTIC_VOCAB,
    TOKEN_RATE,
)
from trainer.workload import (
    Batch,
    StepResult,
    Workload,
    autocast,
    batch_size_of,
    check_batch_size,
    check_precision,
    check_slice_seconds,
)

ATTENTIONS = ("sdpa", "gpt_sovits")
DPO_BETA = 0.2  # GPT-SoVITS's beta; no reference model
PHONEME_PAD = 0


@dataclass(frozen=True)
class GPTConfig:
    layers: int = 24
    width: int = 512
    heads: int = 16
    ffn: int = 2048
    dropout: float = 0.1  # in every layer and in the positional encodings
    phoneme_vocab: int = PHONEME_VOCAB
    semantic_vocab: int = SEMANTIC_VOCAB
    bert_dim: int = BERT_DIM
    attention: str = "sdpa"


CONFIGS = {
    "full": GPTConfig(),
    "tiny": GPTConfig(layers=2, width=64, heads=4, ffn=256),
}


# --- model ------------------------------------------------------------------------------


class SinePositional(nn.Module):
    """x + alpha[stream] * sinusoid(position), then dropout. Streams: 0 text, 1 audio."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.width = width
        self.alpha = nn.Parameter(torch.ones(2))  # one learnable scale per stream
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, stream: int) -> torch.Tensor:  # x: (B, L, D)
        return self.dropout(x + self.alpha[stream] * self.table(x.shape[1], x.device))

    def table(self, length: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]  # (L, 1)
        freq = torch.exp(torch.arange(0, self.width, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / self.width))
        angle = pos * freq  # (L, D/2)
        return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(length, self.width)  # (L, D): sin, cos interleaved


class Attention(nn.Module):
    """Multi-head self-attention; `impl` picks the kernel (see the module docstring)."""

    def __init__(self, width: int, heads: int, dropout: float, impl: str) -> None:
        super().__init__()
        self.heads, self.dropout, self.impl = heads, dropout, impl
        self.qkv = nn.Linear(width, 3 * width)  # 787,968 at width 512
        self.out = nn.Linear(width, width)  # 262,656 at width 512

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # x: (B, S, D)
        B, S, D = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, S, hd)
        p = self.dropout if self.training else 0.0
        if self.impl == "gpt_sovits":  # (B*H, S, S) float mask, index b*H + h
            mask = mask.view(B, self.heads, S, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # mask (B, 1, S, S) bool or (B, H, S, S) float
        return self.out(y.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    """Post-norm transformer layer (attention, then ReLU FFN), 3,152,384 params at width 512."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg.width, cfg.heads, cfg.dropout, cfg.attention)
        self.norm1 = nn.LayerNorm(cfg.width)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.width, cfg.ffn), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ffn, cfg.width)
        )
        self.norm2 = nn.LayerNorm(cfg.width)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, S, D)
        x = self.norm1(x + self.drop(self.attn(x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class Transformer(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class GPT(nn.Module):
    """[phonemes (+ projected BERT) ; semantic tokens] -> next-semantic-token logits."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.phoneme_embedding = nn.Embedding(cfg.phoneme_vocab, cfg.width)
        self.bert_proj = nn.Linear(cfg.bert_dim, cfg.width)
        self.audio_embedding = nn.Embedding(cfg.semantic_vocab, cfg.width)
        self.positional = SinePositional(cfg.width, cfg.dropout)
        self.transformer = Transformer(cfg)
        self.head = nn.Linear(cfg.width, cfg.semantic_vocab, bias=False)

    def forward(
        self,
        phoneme_ids: torch.Tensor,  # (B, P) int64, padded with 0
        phoneme_lens: torch.Tensor,  # (B,)
        bert_features: torch.Tensor,  # (B, 1024, P)
        semantic_ids: torch.Tensor,  # (B, T) int64, padded with EOS
        semantic_lens: torch.Tensor,  # (B,)
    ) -> torch.Tensor:
        text = self.phoneme_embedding(phoneme_ids) + self.bert_proj(bert_features.transpose(1, 2))  # (B, P, D)
        audio = self.audio_embedding(semantic_ids)  # (B, T, D)
        x = torch.cat([self.positional(text, 0), self.positional(audio, 1)], dim=1)  # (B, S, D)
        allowed = attention_allowed(phoneme_lens, semantic_lens, phoneme_ids.shape[1], semantic_ids.shape[1])  # (B, S, S)
        x = self.transformer(x, self.attention_mask(allowed, x.dtype))
        return self.head(x[:, phoneme_ids.shape[1] :])  # (B, T, V)

    def attention_mask(self, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.cfg.attention == "sdpa":
            return allowed[:, None]  # (B, 1, S, S) bool, broadcast over heads
        additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))
        return additive.repeat_interleave(self.cfg.heads, dim=0)  # (B*H, S, S), index b*H + h


def attention_allowed(phoneme_lens: torch.Tensor, semantic_lens: torch.Tensor, P: int, T: int) -> torch.Tensor:
    """(B, S, S) bool, True where query i may attend to key j.

    The diagonal is always allowed so that padded query rows never become all -inf
    (NaN); padded positions are never keys, so valid outputs do not see them."""
    pos = torch.arange(P + T, device=phoneme_lens.device)  # (S,)
    is_sem = pos >= P
    key_valid = torch.where(is_sem, pos - P < semantic_lens[:, None], pos < phoneme_lens[:, None])  # (B, S)
    causal = is_sem[:, None] & is_sem[None, :] & (pos[None, :] <= pos[:, None])  # (S, S): semantic sees earlier semantic
    structural = ~is_sem[None, :] | causal  # everyone sees phonemes; only semantic sees semantic
    return (structural[None] & key_valid[:, None, :]) | torch.eye(P + T, dtype=torch.bool, device=pos.device)


# --- losses ----------------------------------------------------------------------------


def teacher_forcing(semantic_ids: torch.Tensor, semantic_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, valid), each (B, T): targets = inputs shifted left, EOS after the last token."""
    pos = torch.arange(semantic_ids.shape[1], device=semantic_ids.device)[None]  # (1, T)
    valid = pos < semantic_lens[:, None]  # (B, T)
    inputs = torch.where(valid, semantic_ids, SEMANTIC_EOS)
    shifted = F.pad(inputs[:, 1:], (0, 1), value=SEMANTIC_EOS)
    targets = torch.where(pos < semantic_lens[:, None] - 1, shifted, SEMANTIC_EOS)
    return inputs, targets, valid


def token_nll(gpt: GPT, batch: Batch, ids_key: str, lens_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood (B, T) fp32 and its valid mask (B, T)."""
    inputs, targets, valid = teacher_forcing(batch[ids_key], batch[lens_key])
    logits = gpt(batch["phoneme_ids"], batch["phoneme_lens"], batch["bert_features"], inputs, batch[lens_key])  # (B, T, V)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, T), nats
    return nll * valid, valid


def s1_losses(gpt: GPT, batch: Batch) -> dict[str, torch.Tensor]:
    """"ce" (mean nats per valid token), "dpo" when the batch has rejected ids, "total"."""
    nll, valid = token_nll(gpt, batch, "semantic_ids", "semantic_lens")
    losses = {"ce": nll.sum() / valid.sum().clamp_min(1)}
    if "rejected_ids" in batch:  # a key check, not a data-dependent branch
        nll_rejected, _ = token_nll(gpt, batch, "rejected_ids", "rejected_lens")
        margin = nll_rejected.sum(1) - nll.sum(1)  # logp_chosen - logp_rejected, (B,)
        losses["dpo"] = -F.logsigmoid(DPO_BETA * margin).mean()
    losses["total"] = losses["ce"] + losses.get("dpo", 0.0)
    return losses


def to_float(t: torch.Tensor) -> float:
    """A detached scalar as a float; NaN on the meta device (no data to read)."""
    return float("nan") if t.is_meta else float(t.detach())


# --- data ------------------------------------------------------------------------------


def make_rejected(
    semantic_ids: torch.Tensor,
    semantic_lens: torch.Tensor,
    generator: torch.Generator | None = None,
    pad_to: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO "rejected" sequences by rule, on the CPU: (rejected_ids (B, T_r), rejected_lens (B,)).

    T_r = max(pad_to, longest rejected). Batches of a slice length pad to
    `pad_to = 2 * T` (the longest a duplicate can make), so the memory a DPO
    step needs does not depend on which random slices were drawn.

    Samples alternate (from a random start) between duplicating a random slice
    (longer, at most 2x) and deleting one (shorter, at least 1 token kept), so any
    batch of >= 2 holds both kinds. A 1-token sample can only be duplicated."""
    ids, lens = semantic_ids.cpu(), semantic_lens.cpu()
    first = int(torch.randint(2, (1,), generator=generator))
    rows = [_reject_one(ids[i, : int(lens[i])], (first + i) % 2 == 0, generator) for i in range(len(lens))]
    out_lens = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    width = max(int(out_lens.max()), pad_to or 0)
    out = torch.full((len(rows), width), SEMANTIC_EOS, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out.to(semantic_ids.device), out_lens.to(semantic_lens.device)


def _reject_one(seq: torch.Tensor, duplicate: bool, generator: torch.Generator | None) -> torch.Tensor:
    n = len(seq)
    if duplicate or n < 2:
        k = int(torch.randint(1, n + 1, (1,), generator=generator))  # slice length, total <= 2n
        s = int(torch.randint(0, n - k + 1, (1,), generator=generator))
        return torch.cat([seq[: s + k], seq[s : s + k], seq[s + k :]])
    k = int(torch.randint(1, n, (1,), generator=generator))  # delete k < n tokens
    s = int(torch.randint(0, n - k + 1, (1,), generator=generator))
    return torch.cat([seq[:s], seq[s + k :]])


# --- workload --------------------------------------------------------------------------


class S1Workload(Workload):
    name = "s1"
    metric_name = "val_ce"

    def __init__(self, size: str = "full", attention: str = "sdpa") -> None:
        super().__init__(size)
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}: expected one of {', '.join(ATTENTIONS)}")
        self.config = replace(CONFIGS[self.size], attention=attention)

    def build(self, device: torch.device | str = "cpu") -> nn.ModuleDict:
        with torch.device(device):
            return nn.ModuleDict({"gpt": GPT(self.config)}).train()

    def module_parameters(self, models: nn.ModuleDict) -> dict[str, int]:
        gpt = models["gpt"]
        parts = ("phoneme_embedding", "bert_proj", "audio_embedding", "positional", "transformer", "head")
        return {name: sum(p.numel() for p in getattr(gpt, name).parameters()) for name in parts}

    def param_groups(self, models: nn.ModuleDict) -> dict[str, list[dict]]:
        gpt = models["gpt"]
        body = list(gpt.transformer.parameters())
        body_ids = {id(p) for p in body}
        rest = [p for p in gpt.parameters() if id(p) not in body_ids]
        return {
            "gpt": [
                {"name": "body", "params": body, "lr_scale": 1.0},
                {"name": "embeddings_head", "params": rest, "lr_scale": 1.0},
            ]
        }

    def default_lr(self) -> dict[str, float]:
        # GPT-SoVITS runs ScaledAdam at 0.002, whose step is relative to each
        # parameter's RMS; AdamW's step is absolute, and 0.002 without warm-up on a
        # 24-layer post-norm transformer is far too large. 1e-4 is a safe AdamW LR.
        return {"gpt": 1e-4}

    def synthetic_batch(
        self,
        batch_size: int,
        slice_seconds: float,
        dpo: bool = False,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Batch:
        """Full-length samples (the worst case of a `slice_seconds` bucket), built on the CPU."""
        B = check_batch_size(batch_size)
        seconds = check_slice_seconds(slice_seconds)
        T = max(1, round(TOKEN_RATE * seconds))  # semantic tokens at 25 Hz
        P = max(1, round(PHONEMES_PER_SECOND * seconds))
        batch = {
            "phoneme_ids": torch.randint(1, PHONEME_VOCAB, (B, P), generator=generator),
            "phoneme_lens": torch.full((B,), P, dtype=torch.int64),
            "bert_features": torch.zeros(B, BERT_DIM, P),  # non-Chinese text gets zeros
            "semantic_ids": torch.randint(0, SEMANTIC_EOS, (B, T), generator=generator),
            "semantic_lens": torch.full((B,), T, dtype=torch.int64),
        }
        if dpo:
            batch["rejected_ids"], batch["rejected_lens"] = make_rejected(
                batch["semantic_ids"], batch["semantic_lens"], generator, pad_to=2 * T
            )
        return {k: v.to(device) for k, v in batch.items()}

    def audio_seconds(self, batch: Batch) -> float:
        lens = batch["semantic_lens"]
        if lens.is_meta:  # no data: synthetic batches are full length
            return batch_size_of(batch) * batch["semantic_ids"].shape[1] / TOKEN_RATE
        return float(lens.sum()) / TOKEN_RATE

    def forward_backward(
        self,
        models: nn.ModuleDict,
        batch: Batch,
        precision: str,
        scaler: torch.amp.GradScaler | None = None,
        loss_scale: float = 1.0,
    ) -> StepResult:
        with autocast(precision, batch["semantic_ids"].device):
            losses = s1_losses(models["gpt"], batch)
        loss = losses["total"] * loss_scale
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return StepResult({k: to_float(v) for k, v in losses.items()}, batch_size_of(batch))

    @torch.no_grad()
    def validation_step(self, models: nn.ModuleDict, batch: Batch, precision: str = "fp32") -> float:
        gpt = models["gpt"]
        was_training = gpt.training
        gpt.eval()
        try:
            with autocast(check_precision(precision), batch["semantic_ids"].device):
                nll, valid = token_nll(gpt, batch, "semantic_ids", "semantic_lens")
            return to_float(nll.sum() / valid.sum().clamp_min(1))
        finally:
            gpt.train(was_training)
