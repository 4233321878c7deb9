"""s1 batch rules: DPO rejected sequences (ours and GPT-SoVITS's) and upstream's padding.

Made on the CPU from real data, outside the traced step: `make_rejected` when a batch
is collated (recipe advisor, and the probe's worst case), `as_upstream_batch` inside
the gpt-sovits recipe's step on real (non-meta) batches.
"""

from __future__ import annotations

import torch

from trainer.audio_constants import SEMANTIC_EOS

Batch = dict[str, torch.Tensor]


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


def trim(batch: Batch) -> Batch:
    """Cut the padding to the longest sample (what upstream's collate pads to), on real data."""
    P, T = int(batch["phoneme_lens"].max()), int(batch["semantic_lens"].max())
    out = dict(batch, phoneme_ids=batch["phoneme_ids"][:, :P], bert_features=batch["bert_features"][..., :P], semantic_ids=batch["semantic_ids"][:, :T])
    if "rejected_ids" in batch:
        out["rejected_ids"] = batch["rejected_ids"][:, : int(batch["rejected_lens"].max())]
    return out


def as_upstream_batch(batch: Batch, generator: torch.Generator | None = None) -> Batch:
    """The batch GPT-SoVITS's step sees: padding cut to the longest sample and, with DPO,
    rejected sequences made by upstream's rule (`make_rejected_upstream`)."""
    out = trim(batch)
    if "rejected_ids" in batch:
        out["rejected_ids"], out["rejected_lens"] = make_rejected_upstream(out["semantic_ids"], generator)
    return out


def make_rejected_upstream(semantic_ids: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-SoVITS's rejected rule on the padded rows (B, T): per sample a coin flip
    (0: repeat, 1: delete) then two sorted draws a <= b from randint(0, T); the slice
    [a, b) of the padded row (EOS padding included; can be empty) is repeated or
    deleted. Rows are padded with 0 to the longest (at most 2T - 1); its length
    counts the row's own padding. Draws from `generator` (torch's global RNG if None)."""
    ids = semantic_ids.cpu()
    rows = []
    for row in ids:
        n = len(row)
        repeat = int(torch.randint(0, 2, (1,), generator=generator)) == 0
        a, b = torch.randint(0, n, (2,), generator=generator).sort().values.tolist()
        rows.append(torch.cat([row[:a], row[a:b], row[a:b], row[b:]] if repeat else [row[:a], row[b:]]))
    lens = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    out = torch.zeros(len(rows), int(lens.max()), dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out.to(semantic_ids.device), lens.to(semantic_ids.device)


def _reject_one(seq: torch.Tensor, duplicate: bool, generator: torch.Generator | None) -> torch.Tensor:
    n = len(seq)
    if duplicate or n < 2:
        k = int(torch.randint(1, n + 1, (1,), generator=generator))  # slice length, total <= 2n
        s = int(torch.randint(0, n - k + 1, (1,), generator=generator))
        return torch.cat([seq[: s + k], seq[s : s + k], seq[s + k :]])
    k = int(torch.randint(1, n, (1,), generator=generator))  # delete k < n tokens
    s = int(torch.randint(0, n - k + 1, (1,), generator=generator))
    return torch.cat([seq[:s], seq[s + k :]])


