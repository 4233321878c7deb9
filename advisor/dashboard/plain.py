"""The plain view: one log line per event, for nohup/CI (no terminal, no rich)."""

from __future__ import annotations

import time

from advisor.dashboard.format import fmt, gib, table_source
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


def _start_line(kind, step, e) -> str:
    what = f"start {e.get('workload', '?')}" + (f" ({e['size']})" if e.get("size") else "")
    bits = [
        str(e["precision"]) if e.get("precision") else "",
        f"{fmt(number(e.get('slice_seconds')), 3)} s slices" if e.get("slice_seconds") is not None else "",
        ("DPO on" if e.get("dpo") else "DPO off") if e.get("dpo") is not None else "",
        f"batch {e.get('micro_batch', '?')} x {e.get('accumulation', '?')} = {e.get('effective_batch', '?')}"
        if e.get("micro_batch") is not None
        else "",
        table_source(e),
        f"{e['total_steps']} steps" if e.get("total_steps") is not None else "",
        f"{e['epochs']} epochs" if e.get("epochs") is not None else "",
        f"watching {e['metric_name']}" if e.get("metric_name") else "",
    ]
    return f"{what} at step {step}: " + ", ".join(b for b in bits if b)


def _step_line(kind, step, e) -> str:
    losses = e.get("losses") if isinstance(e.get("losses"), dict) else {}
    total = number(e.get("loss"))
    if total is None:
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
    peak = number(e.get("peak_memory_bytes"))
    memory = e.get("memory") if isinstance(e.get("memory"), dict) else {}
    peak = number(memory.get("peak_bytes")) if peak is None else peak
    if peak is not None:
        budget = number(memory.get("budget_bytes"))
        parts.append(f"peak {gib(peak)}" + (f" of {gib(budget)}" if budget is not None else ""))
    return " ".join(parts)


def _val_line(kind, step, e) -> str:
    metric = e.get("metric") if isinstance(e.get("metric"), str) else "metric"
    line = f"val step {step}" + (f" after epoch {e['epoch']}" if e.get("epoch") is not None else "")
    line += f": {metric} {fmt(number(e.get('value')))}"
    return line + (" (best)" if e.get("best") else "")


def _checkpoint_line(kind, step, e) -> str:
    where = e.get("file", e.get("path", "?"))
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
}

