"""What reads the events as the loop writes them (rank 0), besides events.jsonl itself.

    Log(kind, step, **fields) -> EventLog (the file: the source of truth)
                              -> on_event (a progress display)
                              -> sinks: TensorBoardWriter (RUN_DIR/tensorboard/), SampleWriter (RUN_DIR/samples/)

Each sink is a `Sink`: `write(event)` and `close()`; the loop knows nothing else of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from trainer.rundir import RunDir


class Sink(Protocol):
    def write(self, event: dict) -> None: ...

    def close(self) -> None: ...


def make_sinks(p: Any, run: RunDir, log: Callable[..., None]) -> list[Sink]:
    """The sinks of a run on rank 0: TensorBoard always; samples when validation.samples > 0 and there is a val split."""
    from trainer.loop.samples import SampleWriter, load_s2_export
    from trainer.tensorboard import TensorBoardWriter

    from trainer.workloads import get_workload

    sinks: list[Sink] = [TensorBoardWriter(run.tensorboard)]
    v = p.cfg.validation
    if v.samples > 0 and p.validating:
        s2 = None
        if p.cfg.workload == "s1" and v.sample_s2:
            path = Path(v.sample_s2) if Path(v.sample_s2).is_absolute() else run.root / v.sample_s2
            s2 = load_s2_export(path, p.device)
        writer = SampleWriter(run.root, p.workload, p.models, p.data.val, p.data.slice_seconds, p.device, v.samples, log, s2, get_workload("s2"))
        if p.workload.recipe.workload == "s2-cfm" and v.vocoder:
            writer.vocoder, writer.no_vocoder = _vocoder(v.vocoder, run, p)
        sinks.append(writer)
    return sinks


def _vocoder(path: str, run: RunDir, p: Any) -> tuple[Any, str]:
    """(the vocoder, on the CPU until a validation needs it, "") or (None, why not): checked before
    the run started (advisor/preflight.py); a file gone or changed since costs the samples, never the run."""
    from trainer.sovits.vocoder import load_vocoder

    where = Path(path) if Path(path).is_absolute() else run.root / path
    try:
        return load_vocoder(where, p.cfg.version), ""
    except (ValueError, OSError) as exc:
        return None, f"no samples: validation.vocoder {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
