"""What a run exports, in one place: export/ and GPT-SoVITS's own folders.

    write_exports(p, ckpt, models, entry)   a new best (or the final weights): all of the below
        plain_export                        export/<model>.pt (CPU state dicts) + export/info.json
        s1: gpt_sovits_export               export/GPT_weights_<ver>/<run>-e<E>.ckpt (+ copy in gpt_sovits_root)
        s2: sovits_export                   export/SoVITS_weights_<ver>/<run>_e<E>_s<S>.pth (+ copy);
                                            v3/v4: <run>_e<E>_s<S>_l<rank>.pth, the LoRA tensors only
    export_best(p, ckpt, log, pos)          at the end: export/ = the best checkpoint's weights; `export` event

The files' formats are GPT-SoVITS's and live with their readers
(trainer/gptsovits/s1_files.py `write_gpt_weights`, s2_files.py
`write_inference_file`, s2v3_files.py `write_lora_export`); this module decides what is written where and when. Only
rank 0 writes (`Checkpointer.enabled`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.atomic import atomic_write_bytes, atomic_writer, write_json
from trainer.loop.checkpoint import Checkpointer, Entry
from trainer.loop.metrics import Log
from trainer.loop.parts import Parts, Position


def write_exports(p: Parts, ckpt: Checkpointer, models: dict, entry: Entry) -> list[str]:
    """export/<model>.pt + info.json, and GPT-SoVITS's own file: s1 GPT_weights_<ver>/<run>-e<E>.ckpt,
    s2 SoVITS_weights_<ver>/<run>_e<E>_s<S>.pth."""
    info = export_info(p, entry)
    files = plain_export(ckpt, models, info)
    if ckpt.enabled and files and p.cfg.workload == "s2" and "generator" in models:
        files += sovits_export(p, ckpt, models, info)
    if ckpt.enabled and p.cfg.workload == "s1":
        files.append(gpt_sovits_export(p, ckpt, models, entry.epoch))
        if not p.cfg.checkpoint.export_every_epoch:  # export/ holds the best only (the copies in gpt_sovits_root stay)
            for old in (ckpt.run.root / files[-1]).parent.glob("*.ckpt"):
                if str(old.relative_to(ckpt.run.root)) != files[-1]:
                    old.unlink(missing_ok=True)
    return files


def plain_export(ckpt: Checkpointer, models: dict[str, dict], info: dict) -> list[str]:
    """Write export/<model>.pt (plain state dicts of CPU tensors) and export/info.json."""
    if not ckpt.enabled:
        return []
    ckpt.run.make()
    files = []
    for name, state_dict in models.items():
        plain = {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}
        path = ckpt.run.export / f"{name}.pt"
        with atomic_writer(path) as f:
            torch.save(plain, f)
        files.append(str(path.relative_to(ckpt.run.root)))
    write_json(ckpt.run.export / "info.json", {**info, "files": files})
    return files


def exported_from(ckpt: Checkpointer) -> str | None:
    """The checkpoint file export/ was written from (None if there is no export)."""
    try:
        return json.loads((ckpt.run.export / "info.json").read_text(encoding="utf-8")).get("file")
    except (OSError, ValueError, AttributeError):
        return None


def exported_files(ckpt: Checkpointer) -> list[str]:
    """Every file export/ holds: the plain state dicts and GPT-SoVITS's files."""
    root = ckpt.run.root
    plain = sorted(str(f.relative_to(root)) for f in ckpt.run.export.glob("*.pt"))
    return plain + sorted(str(f.relative_to(root)) for f in ckpt.run.export.glob("*_weights*/*.*"))


def gpt_sovits_export(p: Parts, ckpt: Checkpointer, models: dict, epoch: int) -> str:
    """Write export/GPT_weights_<ver>/<run name>-e<epoch>.ckpt (epoch: epochs completed),
    and copy it into gpt_sovits_root when set. Returns its path relative to the run."""
    from trainer.gptsovits.s1_files import copy_into, upstream_config, weights_folder, write_gpt_weights

    name = ckpt.run.root.resolve().name
    folder = ckpt.run.export / weights_folder(p.cfg.version)
    config = upstream_config(p.workload.config, exp_name=name)
    path = write_gpt_weights(folder, name, epoch, models["gpt"], config)
    if p.cfg.gpt_sovits_root:
        copy_into(path, p.cfg.gpt_sovits_root, p.cfg.version)
    return str(path.relative_to(ckpt.run.root))


def export_info(p: Parts, entry: Entry) -> dict:
    return {
        "workload": p.cfg.workload,
        "size": p.cfg.size,
        "metric_name": p.workload.metric_name,
        **entry.summary(),
    }


def sovits_export(p: Parts, ckpt: Checkpointer, models: dict[str, dict], info: dict) -> list[str]:
    """export/SoVITS_weights_<ver>/<run>_e<E>_s<S>.pth as GPT-SoVITS's inference loads it (the only
    one kept there), copied into cfg.gpt_sovits_root/SoVITS_weights_<ver>/ when set. Returns the
    paths written."""
    from trainer.gptsovits import upstream_epoch

    name, w = ckpt.run.root.name, p.workload
    info = {**info, "epoch": upstream_epoch(info["epoch"])}  # GPT-SoVITS counts epochs from 1: never _e0_
    if p.recipe.workload == "s2-cfm":  # v3 / v4: the LoRA export (<run>_e<E>_s<S>_l<rank>.pth, header 03/04)
        from trainer.gptsovits import s2v3_files

        written = Path(s2v3_files.write_lora_export(ckpt.run.export, name, info["epoch"], info["step"], models["generator"], w.version, w.config, w.lora_rank, w.base,
                                                         w.grad_ckpt))
    else:
        from trainer.gptsovits import s2_files
        from trainer.workloads.s2 import export_folder

        config = s2_files.inference_config(w.version, w.generator_config, name)
        target = ckpt.run.export / export_folder(w.version) / f"{name}_e{info['epoch']}_s{info['step']}.pth"
        written = Path(s2_files.write_inference_file(target, models["generator"], w.version, config, info["epoch"], info["step"]))
    for old in written.parent.glob("*.pth"):
        if old != written:
            old.unlink()
    files = [str(written.relative_to(ckpt.run.root))]
    if p.cfg.gpt_sovits_root:
        copy = Path(p.cfg.gpt_sovits_root) / written.parent.name / written.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(copy, written.read_bytes())
        files.append(str(copy))
    return files


def export_best(p: Parts, ckpt: Checkpointer, log: Log, pos: Position) -> None:
    """export/ = the best checkpoint's weights; with no validated checkpoint, the final
    weights, or the latest finite checkpoint's if the final ones have diverged.

    A new best is exported when it is saved; this re-exports from the best
    checkpoint file if export/ names another one (a crash between the two)."""
    if not ckpt.enabled:
        return
    best = ckpt.manifest.best
    if best is None:
        latest = ckpt.manifest.latest  # holds the final weights: the loop saves them first
        source = latest if latest.finite else ckpt.manifest.latest_finite or latest
        models = {name: m.state_dict() for name, m in p.models.items()} if source is latest else ckpt.load(source)["models"]
        files = write_exports(p, ckpt, models, source)
        log("export", pos.step, source="latest" if source is latest else "latest_finite", checkpoint=source.file, files=files,
            copied_to=copies(p, ckpt))
        return
    if exported_from(ckpt) != best.file:
        write_exports(p, ckpt, ckpt.load(best)["models"], best)
    log("export", pos.step, source="best", checkpoint=best.file, metric=best.metric, files=exported_files(ckpt), copied_to=copies(p, ckpt))


def copies(p: Parts, ckpt: Checkpointer) -> list[str]:
    """Where write_exports copied export/'s GPT-SoVITS files (under --gpt-sovits-root), for the export event."""
    if not p.cfg.gpt_sovits_root:
        return []
    return sorted(str(Path(p.cfg.gpt_sovits_root) / f.parent.name / f.name) for f in ckpt.run.export.glob("*_weights*/*.*"))
