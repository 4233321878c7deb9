"""Which batch fits a card: the lookup `advisor plan` prints and `advisor train` uses.

`plan()` answers for one trainer: "advisor" (our `advisor train`) or
"gpt-sovits" (GPT-SoVITS's own s1_train.py / s2_train.py, `probe.upstream`).
It takes the best table row for exactly this card size and cell, measured >
estimated (a measured table of this very device first); when no table has that
exact row it estimates on the fly (the meta-device trace, seconds); with
estimating turned off it falls back to the nearest smaller card and the
nearest longer slice, which can only under-promise. The community table is
the last resort, whoever trains: lore from an article, not a measurement, and
the answer says so. For gpt-sovits, `webui_batch_size` is the number to type
into GPT-SoVITS's webui (it halves the batch on cards without fp16, and s1's
loader halves it again with DPO). `what_fits()` says what would fit when
batch 1 does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from probe.runner import DEFAULT_MARGIN, ESTIMATED_DEVICE
from probe.search import MAX_BATCH, Trials, largest_batch
from probe.sizes import format_size, tier_label
from probe.table import SOURCE_RANK, WORKLOADS, Row, TableFile, load_tables

ALTERNATIVE_SLICES = (30.0, 15.0, 10.0, 5.0, 3.0)  # shorter slices offered when batch 1 does not fit
LORE = "community lore: an article's figures for GPT-SoVITS, not measured by anyone here; probe your card"


@dataclass(frozen=True)
class PlanResult:
    workload: str
    slice_seconds: float
    dpo: bool
    precision: str
    vram_bytes: int
    max_batch_size: int  # 0: batch 1 does not fit
    recommended_batch_size: int
    predicted_peak_bytes: int | None  # at max_batch_size (at batch 1 when that does not fit)
    source: str  # measured | estimated | community
    table: str | None  # the table file, or None when estimated on the fly
    attention: str | None = None
    row_vram_bytes: int | None = None  # the row's card size (< vram_bytes when falling back)
    row_slice_seconds: float | None = None
    note: str | None = None
    trainer: str = "advisor"  # advisor | gpt-sovits
    webui_batch_size: int | None = None  # gpt-sovits: what to type into its webui
    webui_note: str | None = None
    grad_ckpt: bool = False  # s2-v3 / s2-v4: with gradient checkpointing of the DiT's blocks

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def fits(self) -> bool:
        return self.max_batch_size >= 1


def default_attention(workload: str, attention: str | None, trainer: str = "advisor") -> str | None:
    """s1 trains with sdpa unless told otherwise (GPT-SoVITS: its float mask,
    `gpt_sovits`); s2 has no attention choice."""
    if workload != "s1":
        return None
    if trainer == "gpt-sovits":
        return "gpt_sovits"
    return attention or "sdpa"


def webui_batch(workload: str, batch: int, dpo: bool, precision: str) -> tuple[int, str]:
    """The webui number that makes GPT-SoVITS's loader use `batch`, and how it gets there.

    The webui halves its batch on cards without fp16 (is_half False: fp32
    training) for s1 and s2; s1's data module halves it again with DPO (both
    floor, at least 1) and also caps it at a quarter of the dataset. s1 steps
    the optimiser every 4 batches, so 4 x batch samples make one update."""
    factor = (2 if precision == "fp32" else 1) * (2 if dpo and workload == "s1" else 1)
    steps = []
    if precision == "fp32":
        steps.append("the webui halves it on a card without fp16")
    if dpo and workload == "s1":
        steps.append("s1 halves it again with DPO")
    how = ("; ".join(steps) + f", so type {batch * factor} to train {batch} a batch") if steps else f"type {batch}: the webui passes it on unchanged"
    if workload == "s1":
        from probe.trainers import S1_ACCUMULATION

        how += f"; s1 steps every {S1_ACCUMULATION} batches ({S1_ACCUMULATION * batch} samples an update) and uses at most a quarter of the dataset a batch"
    return batch * factor, how


def plan(
    vram_bytes: int,
    workload: str,
    slice_seconds: float,
    dpo: bool = False,
    precision: str = "fp16",
    device_name: str | None = None,
    attention: str | None = None,
    tables: list[TableFile] | None = None,
    allow_estimate: bool = True,
    margin: float = DEFAULT_MARGIN,
    trainer: str = "advisor",
    grad_ckpt: bool = False,
) -> PlanResult:
    """The batch for a card of `vram_bytes` (see the module docstring).
    Raises ValueError for impossible requests and LookupError when nothing can answer."""
    from probe.trainers import check_trainer

    check_trainer(trainer)
    result = _plan(vram_bytes, workload, slice_seconds, dpo, precision, device_name, attention, tables, allow_estimate, margin, trainer, grad_ckpt)
    if trainer == "gpt-sovits" and result.fits:
        typed, how = webui_batch(workload, result.recommended_batch_size, dpo, precision)
        result = replace(result, webui_batch_size=typed, webui_note=how)
    return result


def _plan(vram_bytes, workload, slice_seconds, dpo, precision, device_name, attention, tables, allow_estimate, margin, trainer, grad_ckpt) -> PlanResult:
    from trainer.checks import check_grad_ckpt, check_precision, check_slice_seconds

    check_precision(precision)
    slice_seconds = check_slice_seconds(slice_seconds)
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}: expected one of {', '.join(WORKLOADS)}")
    if dpo and workload != "s1":
        raise ValueError("s2 has no DPO mode: --dpo applies to s1 only")
    if vram_bytes < 1:
        raise ValueError(f"vram {vram_bytes!r} is not a size: expected a positive number of bytes")
    grad_ckpt = check_grad_ckpt(workload, grad_ckpt)
    attention = default_attention(workload, attention, trainer)
    tables = load_tables()[0] if tables is None else tables
    candidates = _candidates(tables, vram_bytes, workload, slice_seconds, dpo, precision, attention, device_name, trainer, grad_ckpt)
    ours = [c for c in candidates if c[1].source != "community"]
    lore = [c for c in candidates if c[1].source == "community"]
    exact = [c for c in ours if c[1].vram_bytes == vram_bytes and math.isclose(c[1].slice_seconds, slice_seconds)]
    if exact:
        return _from_row(*exact[0], vram_bytes, workload, slice_seconds, dpo, precision, attention, trainer, grad_ckpt)
    if allow_estimate:
        return estimate_plan(vram_bytes, workload, slice_seconds, dpo, precision, attention, margin, trainer, grad_ckpt)
    if ours or lore:  # the community table only when nothing of ours answers
        return _from_row(*(ours or lore)[0], vram_bytes, workload, slice_seconds, dpo, precision, attention, trainer, grad_ckpt)
    raise LookupError(
        f"no table has a row for {workload} {slice_seconds:g} s{' dpo' if dpo else ''} {precision} at or below {format_size(vram_bytes)}: "
        "run `advisor probe` or allow estimating"
    )


def _candidates(tables, vram_bytes, workload, slice_seconds, dpo, precision, attention, device_name, trainer="advisor",
                grad_ckpt=False) -> list[tuple[TableFile, Row]]:
    """Usable rows (card <= vram, slice >= asked), best first: closest card and slice,
    then measured on this device, measured, estimated, community. Community rows
    serve either trainer (they are lore about GPT-SoVITS, whatever the attention).
    Rows with gradient checkpointing answer only a plan with it, and the other way round."""
    found = []
    for tf in tables:
        for t in tf.tables:
            if t.workload != workload or t.precision != precision or t.model_size != "full" or t.grad_ckpt != grad_ckpt:
                continue
            if tf.source != "community" and (t.attention != attention or t.trainer != trainer):
                continue
            for row in t.rows:
                if row.dpo == dpo and row.vram_bytes <= vram_bytes and row.slice_seconds >= slice_seconds - 1e-9:
                    found.append((tf, row))

    def rank(item: tuple[TableFile, Row]) -> tuple:
        tf, row = item
        this_device = row.source == "measured" and device_name is not None and tf.device.name == device_name
        return (vram_bytes - row.vram_bytes, row.slice_seconds - slice_seconds, 0 if this_device else 1 + SOURCE_RANK[row.source])

    return sorted(found, key=rank)


def _from_row(tf: TableFile, row: Row, vram_bytes, workload, slice_seconds, dpo, precision, attention, trainer="advisor", grad_ckpt=False) -> PlanResult:
    note = row.note
    if row.vram_bytes != vram_bytes or not math.isclose(row.slice_seconds, slice_seconds):
        note = f"from the {tier_label(row.vram_bytes)} / {row.slice_seconds:g} s row (no exact row; never more than fits)"
    if row.source == "community":
        note = LORE + (f"; {note}" if note else "")
    return PlanResult(
        workload=workload,
        slice_seconds=slice_seconds,
        dpo=dpo,
        precision=precision,
        vram_bytes=vram_bytes,
        max_batch_size=row.max_batch_size,
        recommended_batch_size=row.recommended_batch_size,
        predicted_peak_bytes=row.peak_bytes,
        source=row.source,
        table=str(tf.path) if tf.path else None,
        attention=attention,
        row_vram_bytes=row.vram_bytes,
        row_slice_seconds=row.slice_seconds,
        note=note,
        trainer=trainer,
        grad_ckpt=grad_ckpt,
    )


_ESTIMATORS: dict[tuple, object] = {}


def estimate_plan(vram_bytes: int, workload: str, slice_seconds: float, dpo: bool, precision: str, attention: str | None, margin: float = DEFAULT_MARGIN,
                  trainer: str = "advisor", grad_ckpt: bool = False) -> PlanResult:
    """Search this one budget with the meta-device estimate (a few seconds)."""
    from probe.upstream import estimator_for, workload_for

    key = (workload, precision, attention, trainer, grad_ckpt)
    if key not in _ESTIMATORS:
        _ESTIMATORS[key] = estimator_for(trainer, workload_for(trainer, workload, "full", attention, grad_ckpt=grad_ckpt), precision)
    est = _ESTIMATORS[key]
    trials = Trials(lambda b: est.card_bytes(est.trace(b, slice_seconds, dpo).allocator_bytes))
    best = largest_batch(trials, int(vram_bytes * (1 - margin)), limit=MAX_BATCH)
    peak = trials.peak(max(best, 1))
    return PlanResult(
        workload=workload,
        slice_seconds=slice_seconds,
        dpo=dpo,
        precision=precision,
        vram_bytes=vram_bytes,
        max_batch_size=best,
        recommended_batch_size=best,
        predicted_peak_bytes=peak,
        source="estimated",
        table=None,
        attention=attention,
        row_vram_bytes=vram_bytes,
        row_slice_seconds=slice_seconds,
        note=f"estimated on the fly ({ESTIMATED_DEVICE}, margin {margin:g}): no throughput, recommended = max",
        trainer=trainer,
        grad_ckpt=grad_ckpt,
    )


@dataclass(frozen=True)
class Alternative:
    change: str  # "slice 5 s", "DPO off", "precision fp16"
    result: PlanResult


def what_fits(result: PlanResult, tables: list[TableFile] | None = None, allow_estimate: bool = True) -> list[Alternative]:
    """For a plan where batch 1 does not fit: gradient checkpointing (s2-v3 / s2-v4), shorter
    slices, DPO off, lower precision (each alone) that would fit this card, best first."""
    from trainer.checks import GRAD_CKPT_WORKLOADS

    tables = load_tables()[0] if tables is None else tables
    common = dict(vram_bytes=result.vram_bytes, workload=result.workload, attention=result.attention, tables=tables, allow_estimate=allow_estimate,
                  trainer=result.trainer)
    same = dict(grad_ckpt=result.grad_ckpt)
    options: list[tuple[str, dict]] = []
    if result.workload in GRAD_CKPT_WORKLOADS and not result.grad_ckpt:
        options.append(("--grad-ckpt", dict(slice_seconds=result.slice_seconds, dpo=result.dpo, precision=result.precision, grad_ckpt=True)))
    if result.dpo:
        options.append(("DPO off", dict(slice_seconds=result.slice_seconds, dpo=False, precision=result.precision, **same)))
    if result.precision == "fp32":
        options.append(("precision fp16", dict(slice_seconds=result.slice_seconds, dpo=result.dpo, precision="fp16", **same)))
    for s in ALTERNATIVE_SLICES:
        if s < result.slice_seconds:
            options.append((f"slice {s:g} s", dict(slice_seconds=s, dpo=result.dpo, precision=result.precision, **same)))
    found = []
    for change, kwargs in options:
        try:
            alt = plan(**common, **kwargs)
        except LookupError:
            continue
        if alt.fits:
            found.append(Alternative(change, alt))
            if change.startswith("slice"):
                break  # the longest slice that fits is the one worth naming
    return found


def too_small_message(result: PlanResult, alternatives: list[Alternative]) -> str:
    """One line: batch 1 does not fit, what it needs, and what would fit."""
    if result.predicted_peak_bytes:
        need = f" (batch 1 needs {format_size(result.predicted_peak_bytes)})"
    else:  # a table row with max 0 keeps its need in the note
        need = f" ({result.note})" if result.note and result.note.startswith("batch 1 needs") else ""
    head = (
        f"{format_size(result.vram_bytes)} is too small for batch 1 of {result.workload} {result.slice_seconds:g} s"
        f"{' DPO' if result.dpo else ''} {result.precision}{need}"
    )
    if not alternatives:
        return f"{head}; nothing shorter, without DPO or in lower precision fits either"
    offers = "; ".join(f"{a.change}: batch {a.result.max_batch_size}" for a in alternatives)
    return f"{head}; would fit: {offers}"


def advise_smaller(workload: str, slice_seconds: float, dpo: bool, precision: str, vram_bytes: int | None = None, allow_estimate: bool = True,
                   grad_ckpt: bool = False) -> str:
    """One line for a run whose micro-batch 1 ran out of memory: what the tables (or an
    estimate) say would fit this card. `vram_bytes` defaults to the CUDA card's memory;
    without a card or an answer it names the general remedies. Never raises."""
    generic = (
        f"micro-batch 1 of {workload} {slice_seconds:g} s{' DPO' if dpo else ''} {precision} does not fit: "
        "shorter slices, DPO off or a lower precision need less memory (see `advisor plan`)"
    )
    try:
        if vram_bytes is None:
            vram_bytes = _cuda_total_bytes()
        if vram_bytes is None:
            return generic
        result = plan(vram_bytes, workload, slice_seconds, dpo, precision, allow_estimate=allow_estimate, grad_ckpt=grad_ckpt)
        alternatives = what_fits(result, allow_estimate=allow_estimate)
        if not result.fits:
            return too_small_message(result, alternatives)
        offers = "; ".join(f"{a.change}: batch {a.result.max_batch_size}" for a in alternatives) or "nothing smaller is tabulated"
        return (
            f"micro-batch 1 ran out of memory although the {result.source} figures expect batch {result.max_batch_size} "
            f"to fit {format_size(vram_bytes)} (other processes on the card?); would fit: {offers}"
        )
    except (LookupError, ValueError, RuntimeError) as exc:
        return f"{generic} ({exc})"


def _cuda_total_bytes() -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
