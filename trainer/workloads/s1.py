"""s1: the GPT text-to-semantic model of GPT-SoVITS v2, as a Workload.

Model (full size, 77,606,402 parameters, the GPT-SoVITS v2 count exactly). Module
names, registration order and shapes are GPT-SoVITS's (its state dict, without the
"model." prefix of its files, loads strictly; 295 tensors):
  bert_proj            Linear 1024 -> 512           524,800  (BERT features added to phonemes)
  ar_text_embedding    .word_embeddings 732 x 512   374,784
  ar_text_position     .alpha (1): x + alpha * sinusoid, dropout 0.1
  ar_audio_embedding   .word_embeddings 1025 x 512  524,800  (semantic tokens; 1024 = EOS/pad)
  ar_audio_position    .alpha (1)
  h.layers.0..23       post-norm layers, width 512, 16 heads, FFN 2048 (ReLU), dropout 0.1:
                       self_attn.in_proj_weight/bias (q, k, v stacked), self_attn.out_proj,
                       linear1, linear2, norm1, norm2; 3,152,384 per layer    75,657,216
  ar_predict_layer     Linear 512 -> 1025, no bias  524,800
Tiny size (`size="tiny"`, for tests): 2 layers, width 64, 4 heads, FFN 256, the same
key names, vocabularies and BERT width (so the batches are the same).

Sequence: [phonemes (P) ; semantic tokens (T)], S = P + T. Phonemes attend to
phonemes and never to semantic tokens; a semantic token attends to phonemes and to
itself and earlier valid semantic tokens. Which phoneme keys count as valid is the
recipe's (`attention_allowed`). Padding semantic keys are masked.

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

Training (teacher forcing), T+1 predicted positions: the input is the semantic
tokens (EOS at padding), the targets are the tokens followed by EOS (padded with
EOS), so the text's last position predicts the first token. Two recipes
(docs/ARCHITECTURE.md, "Recipes"):
  "advisor"     the first token is predicted from the sample's own last phoneme;
                right-padding phoneme mask; "ce" = mean nats per valid target (tokens
                + one EOS); DPO log-probabilities sum valid targets; AdamW.
  "gpt-sovits"  GPT-SoVITS's step: predicted from position P-1 of the padded text
                block; its left-padding phoneme mask on right-padded rows; the batch
                cut to its longest sample; "ce" = nats summed over all B x (T+1)
                targets (padded EOS included); DPO sums every position and its
                rejected rows come from `make_rejected_upstream`; ScaledAdam.
With DPO (the batch holds `rejected_ids`) the rejected sequence runs a second forward
pass in the same autograd graph, "dpo" = mean(-logsigmoid(0.2 * (logp_chosen -
logp_rejected))) (no reference model), "total" = ce + dpo.

The step path has no `.item()` and no data-dependent Python branches, so it traces
on the meta device; random rejected slices are made by `make_rejected` on the CPU
when the batch is built.

Over 400 lines on purpose: the model and both recipes' losses and masks share
the sequence layout above and are compared line by line with GPT-SoVITS's; the
batch helpers that stand alone are in s1_batches.py.
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
    SEMANTIC_EOS,
    SEMANTIC_VOCAB,
    TOKEN_RATE,
)
from trainer.data import collate as pad
from trainer.data import padding
from trainer.optim import OptimizerSet
from trainer.recipe import Recipe, as_recipe
from trainer.scaled_adam import ScaledAdam
from trainer.sizing import slice_shape
from trainer.workload import (
    Batch,
    StepResult,
    Workload,
    autocast,
    batch_size_of,
    check_batch_size,
    check_precision,
)
from trainer.workloads.s1_batches import as_upstream_batch, make_rejected, make_rejected_upstream, trim  # noqa: F401 (re-exported)

ATTENTIONS = ("sdpa", "gpt_sovits")
UPSTREAM_LR = 0.002  # GPT-SoVITS's s1 LR (ScaledAdam); its first step runs at 0.01
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
    upstream: bool = False  # the gpt-sovits recipe: upstream's left-padding mask, first predicted position, summed CE


CONFIGS = {
    "full": GPTConfig(),
    "tiny": GPTConfig(layers=2, width=64, heads=4, ffn=256),
}


# --- model ------------------------------------------------------------------------------


class TokenEmbedding(nn.Module):
    """An id -> vector table; the `word_embeddings` name is GPT-SoVITS's key."""

    def __init__(self, vocab: int, width: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, D)
        return self.word_embeddings(ids)


class SinePositional(nn.Module):
    """x + alpha * sinusoid(position), then dropout; one module (one alpha) per stream."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.width = width
        self.alpha = nn.Parameter(torch.ones(1))  # learnable scale of the table
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, D)
        return self.dropout(x + self.alpha * self.table(x.shape[1], x.device))

    def table(self, length: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]  # (L, 1)
        freq = torch.exp(torch.arange(0, self.width, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / self.width))
        angle = pos * freq  # (L, D/2)
        return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(length, self.width)  # (L, D): sin, cos interleaved


class Attention(nn.Module):
    """Multi-head self-attention; `impl` picks the kernel (see the module docstring).

    Parameters as torch's nn.MultiheadAttention names them (GPT-SoVITS's keys):
    in_proj_weight (3D, D) stacks q, k, v in that order; out_proj is a Linear."""

    def __init__(self, width: int, heads: int, dropout: float, impl: str) -> None:
        super().__init__()
        self.heads, self.dropout, self.impl = heads, dropout, impl
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))  # 786,432 at width 512
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)  # 262,656 at width 512
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's initialisation
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # x: (B, S, D)
        B, S, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, S, 3D)
        q, k, v = qkv.view(B, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, S, hd)
        p = self.dropout if self.training else 0.0
        if self.impl == "gpt_sovits":  # (B*H, S, S) float mask, index b*H + h
            mask = mask.view(B, self.heads, S, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # mask (B, 1, S, S) bool or (B, H, S, S) float
        return self.out_proj(y.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    """Post-norm transformer layer (attention, then ReLU FFN), 3,152,384 params at width 512.

    Registration order = GPT-SoVITS's key order: self_attn, linear1, linear2, norm1, norm2."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg.width, cfg.heads, cfg.dropout, cfg.attention)
        self.linear1 = nn.Linear(cfg.width, cfg.ffn)
        self.dropout = nn.Dropout(cfg.dropout)
        self.linear2 = nn.Linear(cfg.ffn, cfg.width)
        self.norm1 = nn.LayerNorm(cfg.width)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, S, D)
        x = self.norm1(x + self.dropout1(self.self_attn(x, mask)))
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class Transformer(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class GPT(nn.Module):
    """[phonemes (+ projected BERT) ; semantic tokens] -> next-semantic-token logits.

    Submodule names and registration order are GPT-SoVITS's (its state dict loads
    as is, without the "model." prefix of its files)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert_proj = nn.Linear(cfg.bert_dim, cfg.width)
        self.ar_text_embedding = TokenEmbedding(cfg.phoneme_vocab, cfg.width)
        self.ar_text_position = SinePositional(cfg.width, cfg.dropout)
        self.ar_audio_embedding = TokenEmbedding(cfg.semantic_vocab, cfg.width)
        self.ar_audio_position = SinePositional(cfg.width, cfg.dropout)
        self.h = Transformer(cfg)
        self.ar_predict_layer = nn.Linear(cfg.width, cfg.semantic_vocab, bias=False)

    def forward(
        self,
        phoneme_ids: torch.Tensor,  # (B, P) int64, right-padded with 0
        phoneme_lens: torch.Tensor,  # (B,)
        bert_features: torch.Tensor,  # (B, 1024, P)
        semantic_ids: torch.Tensor,  # (B, T) int64, padded with EOS
        semantic_lens: torch.Tensor,  # (B,)
    ) -> torch.Tensor:
        """Logits (B, T+1, V) of the T+1 predicted positions: the last phoneme predicts
        the first semantic token, semantic token t predicts token t+1 (or EOS)."""
        P = phoneme_ids.shape[1]
        text = self.ar_text_embedding(phoneme_ids) + self.bert_proj(bert_features.transpose(1, 2))  # (B, P, D)
        audio = self.ar_audio_embedding(semantic_ids)  # (B, T, D)
        x = torch.cat([self.ar_text_position(text), self.ar_audio_position(audio)], dim=1)  # (B, S, D)
        upstream = self.cfg.upstream
        allowed = attention_allowed(phoneme_lens, semantic_lens, P, semantic_ids.shape[1], left_padding_quirk=upstream)
        x = self.h(x, self.attention_mask(allowed, x.dtype))
        if upstream:  # position P-1 of the padded text block, whatever the sample's length
            return self.ar_predict_layer(x[:, P - 1 :])
        last = (phoneme_lens - 1).clamp_min(0)[:, None, None].expand(-1, 1, x.shape[2])  # (B, 1, D) index
        return self.ar_predict_layer(torch.cat([x.gather(1, last), x[:, P:]], dim=1))  # the sample's last phoneme

    def attention_mask(self, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.cfg.attention == "sdpa":
            return allowed[:, None]  # (B, 1, S, S) bool, broadcast over heads
        additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))
        return additive.repeat_interleave(self.cfg.heads, dim=0)  # (B*H, S, S), index b*H + h


def attention_allowed(
    phoneme_lens: torch.Tensor, semantic_lens: torch.Tensor, P: int, T: int, left_padding_quirk: bool = False
) -> torch.Tensor:
    """(B, S, S) bool, True where query i may attend to key j.

    Phoneme keys: the first `phoneme_lens` (right padding, what the batch holds),
    or with `left_padding_quirk` the last `phoneme_lens` positions, as GPT-SoVITS
    masks (it hides a shorter sample's last real phonemes and exposes padding).
    The corrected mask also allows the diagonal, so that a padded query row is
    never all -inf (NaN); padded positions are never keys of valid queries. With
    the quirk every row keeps >= 1 key, and upstream has no diagonal."""
    pos = torch.arange(P + T, device=phoneme_lens.device)  # (S,)
    is_sem = pos >= P
    lens = phoneme_lens[:, None]
    text_valid = pos >= P - lens if left_padding_quirk else pos < lens
    key_valid = torch.where(is_sem, pos - P < semantic_lens[:, None], text_valid)  # (B, S)
    causal = is_sem[:, None] & is_sem[None, :] & (pos[None, :] <= pos[:, None])  # (S, S): semantic sees earlier semantic
    structural = ~is_sem[None, :] | causal  # everyone sees phonemes; only semantic sees semantic
    allowed = structural[None] & key_valid[:, None, :]
    if left_padding_quirk:
        return allowed
    return allowed | torch.eye(P + T, dtype=torch.bool, device=pos.device)


# --- losses ----------------------------------------------------------------------------


def teacher_forcing(semantic_ids: torch.Tensor, semantic_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs (B, T), targets (B, T+1), valid (B, T+1)).

    inputs: the tokens, EOS at padded positions; targets: the tokens, then EOS at
    position len and at every padded position; valid: positions <= len (the
    tokens and the one EOS the model must learn to emit)."""
    T = semantic_ids.shape[1]
    pos = torch.arange(T + 1, device=semantic_ids.device)[None]  # (1, T+1)
    inputs = torch.where(pos[:, :T] < semantic_lens[:, None], semantic_ids, SEMANTIC_EOS)
    targets = F.pad(inputs, (0, 1), value=SEMANTIC_EOS)
    return inputs, targets, pos <= semantic_lens[:, None]


def token_nll(gpt: GPT, batch: Batch, ids_key: str, lens_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position negative log-likelihood (B, T+1) fp32 (unmasked) and its valid mask (B, T+1)."""
    inputs, targets, valid = teacher_forcing(batch[ids_key], batch[lens_key])
    logits = gpt(batch["phoneme_ids"], batch["phoneme_lens"], batch["bert_features"], inputs, batch[lens_key])  # (B, T+1, V)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, T+1), nats
    return nll, valid


def s1_losses(gpt: GPT, batch: Batch) -> dict[str, torch.Tensor]:
    """"ce", "dpo" when the batch has rejected ids, "total" = ce + dpo.

    recipe "advisor": ce = mean nats per valid target; DPO log-probabilities sum
    valid targets only. recipe "gpt-sovits": ce = summed nats over all B x (T+1)
    targets, padded EOS included; DPO sums run over every position too."""
    nll, valid = token_nll(gpt, batch, "semantic_ids", "semantic_lens")
    upstream = gpt.cfg.upstream
    if upstream:
        losses = {"ce": nll.sum()}
    else:
        nll = nll * valid
        losses = {"ce": nll.sum() / valid.sum().clamp_min(1)}
    if "rejected_ids" in batch:  # a key check, not a data-dependent branch
        nll_rejected, valid_rejected = token_nll(gpt, batch, "rejected_ids", "rejected_lens")
        if not upstream:
            nll_rejected = nll_rejected * valid_rejected
        margin = nll_rejected.sum(1) - nll.sum(1)  # logp_chosen - logp_rejected, (B,)
        losses["dpo"] = -F.logsigmoid(DPO_BETA * margin).mean()
    losses["total"] = losses["ce"] + losses.get("dpo", 0.0)
    return losses


def to_float(t: torch.Tensor) -> float:
    """A detached scalar as a float; NaN on the meta device (no data to read)."""
    return float("nan") if t.is_meta else float(t.detach())


# --- workload --------------------------------------------------------------------------


class S1Workload(Workload):
    name = "s1"
    metric_name = "val_ce"

    def __init__(self, size: str = "full", attention: str = "sdpa", recipe: Recipe | str = "advisor") -> None:
        super().__init__(size)
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}: expected one of {', '.join(ATTENTIONS)}")
        self.recipe = as_recipe(self.name, recipe)
        self.config = replace(CONFIGS[self.size], attention=attention, upstream=self.recipe.upstream)

    def build(self, device: torch.device | str = "cpu") -> nn.ModuleDict:
        with torch.device(device):
            return nn.ModuleDict({"gpt": GPT(self.config)}).train()

    def module_parameters(self, models: nn.ModuleDict) -> dict[str, int]:
        gpt = models["gpt"]
        return {name: sum(p.numel() for p in child.parameters()) for name, child in gpt.named_children()}

    def param_groups(self, models: nn.ModuleDict) -> dict[str, list[dict]]:
        """advisor: the transformer body and the rest (embeddings, head), so each can get its
        own LR scale. gpt-sovits: one group of every parameter, as upstream hands ScaledAdam
        (whose gradient clipping takes one norm per group)."""
        gpt = models["gpt"]
        if self.recipe.single_param_group:
            return {"gpt": [{"name": "all", "params": list(gpt.parameters()), "lr_scale": 1.0}]}
        body = list(gpt.h.parameters())
        body_ids = {id(p) for p in body}
        rest = [p for p in gpt.parameters() if id(p) not in body_ids]
        return {
            "gpt": [
                {"name": "body", "params": body, "lr_scale": 1.0},
                {"name": "embeddings_head", "params": rest, "lr_scale": 1.0},
            ]
        }

    def default_lr(self) -> dict[str, float]:
        if self.recipe.optimizer == "scaled_adam":
            return {"gpt": UPSTREAM_LR}
        # GPT-SoVITS runs ScaledAdam at 0.002, whose step is relative to each
        # parameter's RMS; AdamW's step is absolute, and 0.002 without warm-up on a
        # 24-layer post-norm transformer is far too large. 1e-4 is a safe AdamW LR.
        return {"gpt": 1e-4}

    def make_optimizers(self, models: nn.ModuleDict, lr: dict[str, float] | None = None) -> OptimizerSet:
        """recipe gpt-sovits: ScaledAdam (trainer/scaled_adam.py) as upstream; advisor: AdamW."""
        if self.recipe.optimizer != "scaled_adam":
            return super().make_optimizers(models, lr)
        base = {**self.default_lr(), **(lr or {})}["gpt"]
        groups = self.param_groups(models)["gpt"]
        for g in groups:
            g["lr"] = g["initial_lr"] = base * g.get("lr_scale", 1.0)
        names = {id(p): n for n, p in models["gpt"].named_parameters()}
        return OptimizerSet({"gpt": ScaledAdam(groups, lr=base, parameter_names=[[names[id(p)] for p in g["params"]] for g in groups])})

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
        T, _, P = slice_shape(slice_seconds)  # semantic tokens at 25 Hz, phonemes at 12 per second
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

    def collate(self, samples, slice_seconds, dpo=False, generator=None, later=False) -> Batch:
        """Tokens padded to T = 25*S (pad 1024), phonemes and BERT features to max(12*S, longest);
        with `dpo`, `make_rejected` sequences drawn from `generator`, padded to 2T like the
        synthetic batch (so DPO memory does not depend on the draw). `slice_seconds` None: padded
        to the batch's own longest instead (length buckets: trainer/data/padding.py)."""
        if slice_seconds is None:
            return padding.pad_s1(samples, dpo, generator)
        pad.check_fits(samples, slice_seconds)
        T, _, P = pad.padded_sizes(slice_seconds, samples)
        batch = {**pad.phonemes(samples, P), **pad.semantic(samples, T)}
        batch["bert_features"] = pad.stack_padded([s["bert_features"] for s in samples], P)  # (B, 1024, P)
        if dpo:
            batch["rejected_ids"], batch["rejected_lens"] = make_rejected(batch["semantic_ids"], batch["semantic_lens"], generator, pad_to=2 * T)
        return batch

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
        if self.recipe.upstream and not batch["semantic_lens"].is_meta:
            batch = as_upstream_batch(batch)
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
            # mean nats per valid target under both recipes: comparable across batches and runs
            return to_float((nll * valid).sum() / valid.sum().clamp_min(1))
        finally:
            gpt.train(was_training)
