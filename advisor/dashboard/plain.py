"""The plain view: one log line per event, for nohup/CI (no terminal, no rich)."""

from __future__ import annotations

import time

from advisor.dashboard.format import fmt, gib
from advisor.dashboard.state import integer, resume_text, worst_grad_norm
from trainer.events import DECISIONS, number


def format_event_line(event: dict, clock: bool = True) -> str:
    """One log line per event, for nohup/CI (no terminal). `clock` prefixes the local time."""
    kind = str(event.get("kind", "?"))
    step = event.get("step")
    prefix = ""
    t = number(event.get("time"))
    if clock and t is not None:
        prefix = time.strftime("%H:%M:%S ", time.localtime(t))
    formatter = _LINES.get(kind)
    if formatter is None:
        formatter = _decision_line if kind in DECISIONS else _other_line
    return prefix + formatter(kind, step, event)


def batch_text(e: dict) -> str:
    """micro x accumulation (x processes) = effective: what one optimiser step sees."""
    world = integer(e.get("world_size"))
    processes = f" x {world} processes" if world and world > 1 else ""
    bucket = integer(e.get("bucket"))
    where = f" (length bucket {bucket})" if bucket is not None else ""
    return f"batch {e.get('micro_batch', '?')} x {e.get('accumulation', '?')}{processes} = {e.get('effective_batch', '?')}{where}"


def init_text(init) -> str:
    """The start event's `init` (path, sha256, what it is) in one phrase; "" without one."""
    if isinstance(init, dict) and init.get("path"):
        what = ", ".join(str(x) for x in (init.get("kind"), f"sha256 {str(init['sha256'])[:16]}" if init.get("sha256") else "") if x)
        return f"init {init['path']}" + (f" ({what})" if what else "")
    if isinstance(init, list) and init:
        return "init: " + "; ".join(str(x) for x in init)
    return ""


def _start_line(kind, step, e) -> str:
    what = f"start {e.get('workload', '?')}" + (f" ({e['size']})" if e.get("size") else "")
    bits = [
        str(e["version"]) if e.get("version") else "",
        str(e["precision"]) if e.get("precision") else "",
        f"{fmt(number(e.get('slice_seconds')), 3)} s slices" if e.get("slice_seconds") is not None else "",
        ("DPO on" if e.get("dpo") else "DPO off") if e.get("dpo") is not None else "",
        batch_text(e) if e.get("micro_batch") is not None else "",
        f"batch from {e['batch_source']}" if e.get("batch_source") else "",
        f"{e['total_steps']} steps" if e.get("total_steps") is not None else "",
        f"{e['epochs']} epochs" if e.get("epochs") is not None else "",
        f"watching {e['metric_name']}" if e.get("metric_name") else "",
        init_text(e.get("init")),
    ]
    return f"{what} at step {step}: " + ", ".join(b for b in bits if b)


def _step_line(kind, step, e) -> str:
    losses = e.get("losses") if isinstance(e.get("losses"), dict) else {}
    total = number(losses.get("total"))
    epoch = integer(e.get("epoch"))  # 0-based in step events; 1-based on screen
    parts = [f"step {step}" + (f" epoch {epoch + 1}" if epoch is not None else ""), f"loss {fmt(total)}"]
    others = [f"{k} {fmt(number(v))}" for k, v in losses.items() if k != "total"]
    if others:
        parts.append("[" + " ".join(others) + "]")
    lr = e.get("lr")
    if isinstance(lr, dict) and lr:
        parts.append(f"lr {fmt(number(next(iter(lr.values()))), 3)}")
    elif number(lr) is not None:
        parts.append(f"lr {fmt(number(lr), 3)}")
    grad = worst_grad_norm(e.get("grad_norm"))
    if grad is not None:
        parts.append(f"grad {fmt(grad, 3)}")
    sps = number(e.get("samples_per_s"))
    if sps is not None:
        parts.append(f"{fmt(sps, 3)} samples/s")
    if integer(e.get("bucket")) is not None:  # length buckets: each its own micro-batch
        parts.append(f"micro-batch {e.get('micro_batch', '?')} (length bucket {integer(e.get('bucket'))})")
    parts.append(memory_text(e))
    return " ".join(p for p in parts if p)


def memory_text(e: dict) -> str:
    """The peak against the budget, like with like: the budget's own peak (`memory`: the
    emulated budget's live tensors, CUDA's allocator, or RSS against RAM), as the dashboard
    shows; a step event without `memory` gives the process's peak alone."""
    memory = e.get("memory") if isinstance(e.get("memory"), dict) else {}
    peak, budget = number(memory.get("peak_bytes")), number(memory.get("budget_bytes"))
    if peak is None or budget is None:
        process = number(e.get("peak_memory_bytes"))
        return f"peak {gib(process)}" if process is not None else ""
    return f"peak {gib(peak)} of {gib(budget)}" + (" emulated" if memory.get("source") == "emulated" else "")


def _val_line(kind, step, e) -> str:
    metric = e.get("metric") if isinstance(e.get("metric"), str) else "metric"
    line = f"val step {step}" + (f" after epoch {e['epoch']}" if e.get("epoch") is not None else "")
    line += f": {metric} {fmt(number(e.get('value')))}"
    return line + (" (best)" if e.get("best") else "")


def _checkpoint_line(kind, step, e) -> str:
    where = e.get("file", "?")
    flags = [x for x in ("best" if e.get("best") else "", "NOT finite" if e.get("finite") is False else "") if x]
    return f"checkpoint step {step}: {where}" + (f" ({', '.join(flags)})" if flags else "")


def _decision_line(kind, step, e) -> str:
    policy = f" [{e['policy']}]" if e.get("policy") else ""
    return f"watchdog step {step} {kind}{policy}: {e.get('reason', '')}"


def _oom_line(kind, step, e) -> str:
    error = str(e.get("error", "")).splitlines()[0] if e.get("error") else ""
    return f"OOM at step {step}, micro-batch {e.get('micro_batch', '?')}" + (f": {error}" if error else "")


def _restart_line(kind, step, e) -> str:
    attempt = f" attempt {e['attempt']}" if e.get("attempt") is not None else ""
    why = e.get("reason") or ""
    return f"restart{attempt} at step {step}" + (f": {why}" if why else "")



def _resume_line(kind, step, e) -> str:
    return f"resume at step {step}: {resume_text(e)}"


def _end_line(kind, step, e) -> str:
    reason = ": ".join(str(x) for x in (e.get("reason"), e.get("detail")) if x)
    return f"end at step {step}" + (f": {reason}" if reason else "")


def _samples_line(kind, step, e) -> str:
    if not e.get("folder"):
        return f"samples step {step}: {e.get('note') or 'none'}"
    files = e.get("files") if isinstance(e.get("files"), list) else []
    return f"samples step {step}: {len(files)} WAVs in {e['folder']}/" + (f" ({e['note']})" if e.get("note") else "")


def _export_line(kind, step, e) -> str:
    copies = e.get("copied_to") or []
    files = [str(f) for f in e.get("files") or [] if not str(f).endswith(".json") and f not in copies]
    line = f"export step {step} ({e.get('source', '?')}): " + (", ".join(files) or "export/")
    return line + (f"; copied to {', '.join(str(c) for c in copies)}" if copies else "")


def _other_line(kind, step, e) -> str:
    fields = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("time", "kind", "step"))
    return f"{kind} step {step}" + (f" {fields}" if fields else "")


_LINES = {
    "start": _start_line,
    "step": _step_line,
    "val": _val_line,
    "checkpoint": _checkpoint_line,
    "oom": _oom_line,
    "restart": _restart_line,
    "resume": _resume_line,
    "end": _end_line,
    "samples": _samples_line,
    "export": _export_line,
}

