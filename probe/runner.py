"""`advisor probe`'s engine: every cell x every card tier -> table rows.

A cell is (workload, slice seconds, dpo) at one precision. For each cell the
largest batch that fits each tier's budget (tier x (1 - margin)) is searched
(`probe.search`), rows are added to the table, and the table file is written
atomically after every cell, so an interrupted probe keeps what it finished
and a rerun with the same file skips those cells.

estimated  (no CUDA, or --backend estimated) every tier is a hypothetical
           card; peaks come from `MetaEstimator`; throughput is null and the
           recommended batch is the max.
measured   (CUDA) tiers below the card's memory are emulated by capping the
           caching allocator (set_per_process_memory_fraction, less the
           measured CUDA context); the card's own size is one more row.
           Throughput is timed on the card; recommended = fastest within the margin.

Why one file over 400 lines: the probe's cell loop, its two backends' batch
searches (estimated, measured with CUDA caps) and the resume-by-cell logic share
one state (the table being written); splitting them would pass that state around.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from probe.search import MAX_BATCH, Trials, largest_batch, search_tiers
from probe.sizes import CUBLAS_WORKSPACE_BYTES, CUDA_CONTEXT_BYTES, GIB, format_size
from probe.table import Device, Row, TableError, TableFile, now_utc, read_table, write_table

DEFAULT_SLICES = (5.0, 10.0, 15.0, 30.0)
DEFAULT_TIERS_GB = (6, 8, 12, 16, 24, 32, 40, 80)
DEFAULT_MARGIN = 0.10
ESTIMATED_DEVICE = "estimated tiers (any CUDA card)"
ESTIMATE_NOTE = "estimate: recommended = max"


@dataclass(frozen=True)
class Cell:
    workload: str
    slice_seconds: float
    dpo: bool

    def label(self) -> str:
        return f"{self.workload} {self.slice_seconds:g}s{' dpo' if self.dpo else ''}"


@dataclass(frozen=True)
class ProbeConfig:
    precision: str  # resolved: fp32 | fp16 | bf16
    backend: str  # estimated | measured
    workloads: tuple[str, ...] = ("s1", "s2")
    slice_seconds: tuple[float, ...] = DEFAULT_SLICES
    tiers_bytes: tuple[int, ...] = tuple(g * GIB for g in DEFAULT_TIERS_GB)
    margin: float = DEFAULT_MARGIN  # fraction of each card left free
    size: str = "full"  # model size: full | tiny (tests)
    attention: str = "sdpa"  # s1's attention: sdpa | gpt_sovits
    dpo_modes: tuple[bool, ...] = (False, True)  # for s1; s2 has no DPO
    context_bytes: int = CUDA_CONTEXT_BYTES  # estimates: CUDA context added to every peak
    workspace_bytes: int = CUBLAS_WORKSPACE_BYTES  # estimates: cuBLAS workspace added too
    trainer: str = "advisor"  # whose training loop: advisor | gpt-sovits (probe.upstream)
    grad_ckpt: bool = False  # s2-v3 / s2-v4: gradient checkpointing of the DiT's blocks (tables marked grad_ckpt)

    def __post_init__(self) -> None:
        from trainer.workload import check_precision, check_size, check_slice_seconds

        check_precision(self.precision)
        check_size(self.size)
        if self.backend not in ("estimated", "measured"):
            raise ValueError(f"unknown backend {self.backend!r}: expected estimated or measured")
        from probe.table import WORKLOADS

        unknown = [w for w in self.workloads if w not in WORKLOADS]
        if unknown or not self.workloads:
            raise ValueError(f"unknown workload {unknown[0] if unknown else ''!r}: expected {', '.join(WORKLOADS)}")
        if not self.slice_seconds:
            raise ValueError("no slice lengths: expected at least one, e.g. 10")
        for s in self.slice_seconds:
            check_slice_seconds(s)
        if not self.tiers_bytes or any(t < 1 for t in self.tiers_bytes):
            raise ValueError(f"tiers {self.tiers_bytes!r} are invalid: expected positive sizes")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin {self.margin!r} is outside [0, 1): expected a fraction such as 0.1")
        if self.attention not in ("sdpa", "gpt_sovits"):
            raise ValueError(f"unknown attention {self.attention!r}: expected sdpa or gpt_sovits")
        if not self.dpo_modes:
            raise ValueError("no DPO modes: expected off, on or both")
        if self.context_bytes < 0 or self.workspace_bytes < 0:
            raise ValueError("context and workspace bytes must be >= 0")
        from probe.trainers import check_trainer

        check_trainer(self.trainer)
        from trainer.checks import check_grad_ckpt

        for w in self.workloads:
            check_grad_ckpt(w, self.grad_ckpt)
        if self.trainer == "gpt-sovits" and self.backend == "measured":
            raise ValueError("a measured gpt-sovits table needs GPT-SoVITS's own trainer on the GPU: use --backend estimated with --for gpt-sovits")

    def cells(self) -> list[Cell]:
        """s1: DPO off then on, each by slice length ascending; then s2 (no DPO).
        Shorter slices come first because their answers seed (bound) longer ones."""
        slices = sorted(set(float(s) for s in self.slice_seconds))
        cells = []
        for w in self.workloads:
            for dpo in sorted(set(self.dpo_modes)) if w == "s1" else (False,):
                cells.extend(Cell(w, s, dpo) for s in slices)
        return cells

    def budget(self, tier_bytes: int) -> int:
        return int(tier_bytes * (1 - self.margin))


class Listener(Protocol):
    def started(self, cells: int, tiers: int) -> None: ...
    def cell_started(self, cell: Cell, index: int, total: int) -> None: ...
    def cell_skipped(self, cell: Cell, rows: list[Row]) -> None: ...
    def tier_done(self, cell: Cell, row: Row) -> None: ...
    def cell_done(self, cell: Cell, rows: list[Row], path: Path) -> None: ...


class _Quiet:
    def started(self, cells, tiers): pass
    def cell_started(self, cell, index, total): pass
    def cell_skipped(self, cell, rows): pass
    def tier_done(self, cell, row): pass
    def cell_done(self, cell, rows, path): pass


@dataclass
class Probe:
    """One probe run: config, output file, and the per-workload state it builds."""

    config: ProbeConfig
    path: Path
    listener: Listener = field(default_factory=_Quiet)

    def run(self) -> TableFile:
        table_file = self._open()
        cells = self.config.cells()
        self.listener.started(len(cells), len(self._tiers()))
        answers: dict[Cell, list[int]] = {}
        for index, cell in enumerate(cells):
            table = table_file.ensure_table(cell.workload, self.config.precision, self._attention(cell.workload), self.config.size, self.config.margin, self.config.trainer,
                                             self.config.grad_ckpt)
            if table.margin != self.config.margin:
                raise TableError(f"{self.path}: its {cell.workload} {self.config.precision} table was probed with margin {table.margin}, not {self.config.margin:g}: use --margin {table.margin} or another --out")
            done = [table.row(t, cell.slice_seconds, cell.dpo) for t in self._tiers()]
            if all(r is not None for r in done):
                answers[cell] = [r.max_batch_size for r in done]
                self.listener.cell_skipped(cell, done)
                continue
            self.listener.cell_started(cell, index, len(cells))
            rows = self._cell_rows(cell, self._seeds(cell, answers))
            answers[cell] = [r.max_batch_size for r in rows]
            for row in rows:
                table.put(row)
            table_file.created = now_utc()
            write_table(table_file, self.path)
            self.listener.cell_done(cell, rows, self.path)
        return table_file

    # --- setup ---------------------------------------------------------------------------
    def _attention(self, workload: str) -> str | None:
        if workload != "s1":
            return None
        return "gpt_sovits" if self.config.trainer == "gpt-sovits" else self.config.attention

    def _tiers(self) -> list[int]:
        if self.config.backend == "measured":
            return self.tiers_for_card()
        return sorted(set(self.config.tiers_bytes))

    def _device_and_software(self) -> tuple[Device, dict]:
        import torch

        __version__ = package_version()
        if self.config.backend == "estimated":
            return Device(ESTIMATED_DEVICE, None, None), {"torch": str(torch.__version__), "cuda": None, "sovits_advisor": __version__}
        gpu = cuda_device()
        return Device(gpu.name, gpu.total_bytes, gpu.compute_capability), {"torch": str(torch.__version__), "cuda": torch.version.cuda, "sovits_advisor": __version__}

    def _open(self) -> TableFile:
        device, software = self._device_and_software()
        source = self.config.backend
        if not self.path.exists():
            return TableFile(source, device, software, [], provenance=self._provenance(), created=now_utc())
        existing = read_table(self.path)
        if existing.source != source or existing.device != device or existing.software.get("torch") != software["torch"]:
            raise TableError(
                f"{self.path}: holds a {existing.source} table for {existing.device.name} (torch {existing.software.get('torch')}), "
                f"not {source} for {device.name} (torch {software['torch']}): choose another --out"
            )
        return existing

    def _provenance(self) -> str:
        margin = f"margin {self.config.margin:g}: the max batch leaves {self.config.margin:.0%} of each card free."
        if self.config.backend == "measured":
            return (
                f"advisor probe, measured: real training steps on this GPU, {margin} Smaller cards emulated by capping the "
                "caching allocator (set_per_process_memory_fraction) less the measured CUDA context; peak = allocator's "
                "reserved peak + context. Throughput timed after a warm-up step; recommended = fastest within the max, "
                "ties (2 %) to the smaller. DPO rows assume rejected sequences twice the chosen length."
            )
        return (
            f"advisor probe, estimated: the training step traced on the meta device, {margin} CUDA's autocast, attention "
            "kernel and foreach AdamW are modelled; the caching allocator's rounding, "
            f"{format_size(self.config.context_bytes)} of CUDA context and {format_size(self.config.workspace_bytes)} of cuBLAS "
            "workspace are added. No throughput: recommended = max. DPO rows assume rejected sequences twice the chosen length. "
            "Tables with trainer gpt-sovits are for GPT-SoVITS's own s1_train.py / s2_train.py / s2_train_v3_lora.py (probe/upstream.py: "
            "its float attention mask and padded copies, ScaledAdam's step, gradients kept across its accumulation, s2's previous "
            "gradients, D outputs held by its loop and weight-norm caches); trainer advisor is `advisor train`. Tables with "
            "grad_ckpt: true (s2-v3 / s2-v4) trace the DiT's blocks checkpointed."
        )

    @staticmethod
    def _seeds(cell: Cell, answers: dict[Cell, list[int]]) -> list[int] | None:
        """Answers of the nearest finished neighbour: the next shorter slice (same DPO),
        else the same slice without DPO. Longer slices and DPO never allow more."""
        shorter = [c for c in answers if c.workload == cell.workload and c.dpo == cell.dpo and c.slice_seconds < cell.slice_seconds]
        if shorter:
            return answers[max(shorter, key=lambda c: c.slice_seconds)]
        plain = Cell(cell.workload, cell.slice_seconds, False)
        return answers.get(plain) if cell.dpo else None

    # --- one cell --------------------------------------------------------------------------
    def _cell_rows(self, cell: Cell, seeds: list[int] | None) -> list[Row]:
        if self.config.backend == "measured":
            return MeasuredCell(self, cell).rows(seeds)
        return EstimatedCell(self, cell).rows(seeds)

    def tiers_for_card(self) -> list[int]:
        """Measured: the tiers below this card's memory, and the card itself."""
        total = cuda_device().total_bytes
        return sorted({t for t in self.config.tiers_bytes if t < total} | {total})


class EstimatedCell:
    """Rows of one cell from traced meta steps (shared estimator per workload)."""

    _estimators: dict[tuple, object] = {}

    def __init__(self, probe: Probe, cell: Cell) -> None:
        self.probe, self.cell, self.config = probe, cell, probe.config

    def estimator(self):
        from probe.memory import CardOverhead
        from probe.upstream import estimator_for, workload_for

        overhead = CardOverhead(self.config.context_bytes, self.config.workspace_bytes)
        trainer = self.config.trainer
        key = (self.cell.workload, self.config.size, self.config.precision, self.probe._attention(self.cell.workload), overhead, trainer,
               self.config.grad_ckpt)
        if key not in self._estimators:
            workload = workload_for(trainer, self.cell.workload, self.config.size, self.config.attention, grad_ckpt=self.config.grad_ckpt)
            EstimatedCell._estimators = {key: estimator_for(trainer, workload, self.config.precision, overhead)}  # keep one: frees the last workload's
        return self._estimators[key]

    def rows(self, seeds: list[int] | None) -> list[Row]:
        est = self.estimator()
        c = self.cell
        trials = Trials(lambda b: est.card_bytes(est.trace(b, c.slice_seconds, c.dpo).allocator_bytes))
        tiers = self.probe._tiers()
        answers = search_tiers(trials, [self.config.budget(t) for t in tiers], seeds, MAX_BATCH)
        rows = []
        for tier, best in zip(tiers, answers):
            row = Row(
                vram_bytes=tier,
                slice_seconds=c.slice_seconds,
                dpo=c.dpo,
                max_batch_size=best,
                recommended_batch_size=best,
                peak_bytes=trials.results[best] if best else None,
                samples_per_second=None,
                audio_seconds_per_second=None,
                source="estimated",
                note=ESTIMATE_NOTE if best else f"batch 1 needs {format_size(trials.peak(1))}",
            )
            rows.append(row)
            self.probe.listener.tier_done(c, row)
        return rows


def package_version() -> str:
    """sovits-advisor's installed version, written into every table's software key."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sovits-advisor")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def default_table_path(backend: str) -> Path:
    """<user tables dir>/<estimated | gpu name>-torch-<version>.yaml."""
    import torch

    from probe.table import slug, user_tables_dir

    name = "estimated" if backend == "estimated" else cuda_device().name
    return user_tables_dir() / f"{slug(name)}-torch-{slug(str(torch.__version__))}.yaml"


def cuda_device():
    """The GPU a measured probe runs on (torch's device 0), as a `probe.device.GPUInfo`."""
    import torch

    from probe.device import GPUInfo

    if not torch.cuda.is_available():
        raise ValueError("the measured backend needs a CUDA GPU and torch sees none: use --backend estimated")
    props = torch.cuda.get_device_properties(0)
    return GPUInfo(0, props.name, int(props.total_memory), None, f"{props.major}.{props.minor}", None)


class MeasuredCell:
    """Rows of one cell measured on the GPU. Each tier below the card's memory is
    emulated by capping the caching allocator at tier x (1 - margin) less the CUDA
    context; a trial that runs out of memory just counts as "does not fit"."""

    _models: dict[tuple, tuple] = {}

    def __init__(self, probe: Probe, cell: Cell) -> None:
        self.probe, self.cell, self.config = probe, cell, probe.config
        self.speeds: dict[int, object] = {}  # batch -> throughput.Speed, from any successful trial

    def setup(self):
        from trainer.workload import make_scaler
        from trainer.workloads import get_workload

        key = (self.cell.workload, self.config.size, self.probe._attention(self.cell.workload), self.config.grad_ckpt)
        if key not in self._models:
            options = {"attention": self.config.attention} if self.cell.workload == "s1" else {}
            if self.config.grad_ckpt:
                options["grad_ckpt"] = True
            workload = get_workload(self.cell.workload, self.config.size, **options)
            models = workload.build("cuda")
            MeasuredCell._models = {key: (workload, models, workload.make_optimizers(models))}
        workload, models, optimizers = self._models[key]
        return workload, models, optimizers, make_scaler(self.config.precision, "cuda")

    def rows(self, seeds: list[int] | None) -> list[Row]:
        import torch

        from probe.device import cuda_context_bytes
        from probe.throughput import recommend, sizes_to_time

        workload, models, optimizers, scaler = self.setup()
        context = cuda_context_bytes(0)
        total = torch.cuda.get_device_properties(0).total_memory
        tiers = self.probe._tiers()
        known_fits: dict[int, int] = {}
        rows = []
        try:
            for i, tier in enumerate(tiers):
                budget = self.config.budget(tier)
                cap = max(budget - context, 0) / total
                trials = Trials(lambda b, cap=cap: self._trial(workload, models, optimizers, scaler, b, cap), dict(known_fits))
                guess = seeds[i] if seeds and i < len(seeds) else None
                best = largest_batch(trials, budget, guess, MAX_BATCH)
                known_fits.update({b: p for b, p in trials.results.items() if p is not None and p <= budget})
                for b in sizes_to_time(best):
                    if b not in self.speeds:
                        self._trial(workload, models, optimizers, scaler, b, 1.0)
                speeds = {b: s.samples_per_second for b, s in self.speeds.items()}
                chosen = recommend(speeds, best)
                speed = self.speeds.get(chosen)
                row = Row(
                    vram_bytes=tier,
                    slice_seconds=self.cell.slice_seconds,
                    dpo=self.cell.dpo,
                    max_batch_size=best,
                    recommended_batch_size=chosen,
                    peak_bytes=trials.results.get(best) if best else None,
                    samples_per_second=round(speed.samples_per_second, 3) if speed else None,
                    audio_seconds_per_second=round(speed.audio_seconds_per_second, 3) if speed else None,
                    source="measured",
                    note=None if best else "batch 1 does not fit",
                )
                rows.append(row)
                self.probe.listener.tier_done(self.cell, row)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
        return rows

    def _trial(self, workload, models, optimizers, scaler, batch_size: int, cap: float) -> int | None:
        """Peak bytes of a few steps at `batch_size` under the cap, None on OOM; memory
        is released before and after."""
        import torch

        from probe.memory import probe_batch, release_memory
        from probe.throughput import speed

        release_memory("cuda")
        torch.cuda.set_per_process_memory_fraction(min(max(cap, 0.0), 1.0))
        peak = measured_or_none(workload, models, optimizers, scaler, batch_size, self.cell.slice_seconds, self.cell.dpo, self.config.precision)
        if peak is None:
            return None
        self.speeds[batch_size] = speed(workload, probe_batch(workload, batch_size, self.cell.slice_seconds, self.cell.dpo, "meta"), peak.step_seconds)
        return peak.peak_bytes


def measured_or_none(workload, models, optimizers, scaler, batch_size: int, slice_seconds: float, dpo: bool, precision: str, **steps):
    """`measured_peak` of a CUDA batch of `batch_size` (a `Peak`), or None if it runs out of
    memory; the optimisers' gradients and the batch are released either way. `steps`: the
    warm-up/steps counts `measured_peak` takes."""
    from probe.memory import measured_peak, probe_batch, release_memory

    batch = None
    try:
        batch = probe_batch(workload, batch_size, slice_seconds, dpo, "cuda")
        return measured_peak(workload, models, optimizers, batch, precision, scaler, **steps)
    except Exception as exc:
        if not is_oom(exc):
            raise
        return None
    finally:
        optimizers.zero_grad()
        del batch
        release_memory("cuda")


def is_oom(exc: BaseException) -> bool:
    """CUDA ran out of memory (cuFFT reports it as an internal error, NeMo notes)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "CUFFT_INTERNAL_ERROR" in text)
