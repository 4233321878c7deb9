"""Preflight: every check `advisor train` can make from its inputs, before anything is written.

A refused command leaves RUN_DIR (and the GPT-SoVITS checkout) byte-identical: these
checks run after the spec is resolved (advisor/launch.py) and before the run lock,
the spec files or the trainer touch anything. In order:

  1. run identity (`--resume`): workload, size, version, recipe, the dataset's
     identity and the init file's sha256 must be the run's own (`check_identity`);
     a changed --epochs / --max-steps is a re-plan, announced (`replan_note`)
  2. the dataset: complete, and able to feed the version (`check_dataset`)
  3. the init files: what they are (trainer/gptsovits/identify.py), then keys and
     shapes against the model built on the meta device (`check_init`); a new run only
  4. --gpt-sovits-root: GPT-SoVITS's checkout root, writable (`check_gpt_sovits_root`)
  5. free disk for the checkpoints the run will keep (`check_disk`)
  6. --vocoder (s2 v3/v4): loads strictly into the run's version's vocoder (`check_vocoder`);
     a resume too, as the samples need it at every validation

Each problem is one ValueError/UserError line naming the field, what was found and
the flag that fixes it. `check_all` runs 2-6 (and a live run's refusal) in that order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from advisor.errors import UserError
from trainer.versions import V3_FAMILY

IDENTITY = ("workload", "size", "version", "recipe", "dataset", "init")  # what a resume must keep
FLAGS = {"workload": "--workload", "size": "--size", "version": "--version", "recipe": "--recipe", "dataset": "--data", "init": "--init"}
SV_VERSIONS = ("v2Pro", "v2ProPlus")  # s2 versions that need sv_emb (7-sv_cn/) per clip
CHECKPOINT_BYTES_PER_PARAM = 12  # fp32 weights + AdamW's two fp32 moments
DISK_MARGIN = 1.1  # 10 % for events, samples, the manifest and filesystem overhead


# --- all of them, in order ---------------------------------------------------------------


def check_all(cfg, run_dir, resuming: bool, identity: dict | None = None) -> tuple[Any, str]:
    """Checks 2-5 (the identity was checked by `resolve`), before RUN_DIR or the GPT-SoVITS
    checkout is touched: a live run (--resume), the dataset, the LR groups (the model on
    meta), the init files (a new run only: they are needed only to start), the GPT-SoVITS
    root, free disk for the checkpoints. Returns the config with the init file's sha256
    (the identity's, hashed once by `resolve`) and a line saying what the file is ("" without one)."""
    if resuming:
        check_not_live(run_dir)
    workload, models, manifest = check_model(cfg)
    if cfg.init is not None and not resuming and manifest.get("phonemes") != "gpt-sovits-v2":
        print(f"advisor train: warning: {cfg.dataset} was not made by `advisor prepare --from-gpt-sovits`: its phonemes and "
              "features are this tool's stand-in, which GPT-SoVITS's --init weights do not understand", file=sys.stderr)
    kind = check_init(cfg, workload, models) if not resuming else "read at the start; the run goes on from its checkpoints"
    check_gpt_sovits_root(cfg.gpt_sovits_root)
    check_disk(run_dir.root, sum(p.numel() for p in models.parameters()), cfg.checkpoint.keep_last)
    check_vocoder(cfg)
    if cfg.init is None:
        return cfg, ""
    from dataclasses import replace

    digest = (identity or {}).get("init") or (file_sha256(cfg.init) if Path(cfg.init).exists() else None)
    cfg = replace(cfg, init_sha256=digest) if digest else cfg
    return cfg, f"{cfg.init} ({kind}" + (f"; sha256 {digest[:16]})" if digest else ")")


def check_model(cfg) -> tuple[Any, Any, dict]:
    """The dataset (complete, made by `advisor prepare`) and the model on the meta device with the
    config's LR groups: what `--print-config` checks too. Returns (workload, models, manifest)."""
    from trainer.workload import configured_optimizers
    from trainer.workloads import workload_for_config

    manifest = check_dataset(cfg)
    workload = workload_for_config(cfg)
    models = workload.build("meta")
    configured_optimizers(workload, models, cfg.optim)
    return workload, models, manifest


def check_not_live(run_dir) -> None:
    """--resume on a run whose supervisor is alive: the refusal the lock would give, now."""
    from advisor.supervisor import lock_held, pid_alive, read_lock_info

    info = read_lock_info(run_dir.root)
    if info and pid_alive(info["supervisor_pid"]) and lock_held(run_dir.root):
        raise UserError(f"run {run_dir.root} is live (supervisor pid {info['supervisor_pid']}); stop it with "
                        f"`advisor stop {run_dir.root}`, then --resume (nothing was changed)")


# --- 1. identity --------------------------------------------------------------------------


def dataset_identity(manifest: dict) -> str:
    """sha256 of the dataset's clip list (ids and splits): the ids hash each clip's audio, text
    and feature settings, so the same list prepared again keeps it and another list does not."""
    clips = sorted((c["id"], sorted(c["splits"])) for c in manifest["clips"])
    return hashlib.sha256(json.dumps(clips).encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    from trainer.data.listfile import file_sha256 as sha

    return sha(path)


def run_identity(cfg) -> dict[str, Any]:
    """The identity of a run about to start (reads the dataset manifest and the init file)."""
    from trainer.data.manifest import read_manifest

    return {
        "workload": cfg.workload,
        "size": cfg.size,
        "version": cfg.version,
        "recipe": cfg.recipe,
        "dataset": dataset_identity(read_manifest(cfg.dataset)),
        "init": file_sha256(_existing(cfg.init, "init")) if cfg.init else None,
    }


def _existing(path: str, field: str) -> str:
    if not Path(path).is_file():
        raise UserError(f"{FLAGS.get(field, field)} {path}: no such file")
    return path


def check_identity(saved_cfg, saved: dict, cfg) -> dict[str, Any]:
    """Refuse a resume that changes the run's identity; returns the identity (the saved one,
    completed for runs written before identities were saved).

    `saved_cfg` is the run's config.yaml as saved, `saved` launch.json's identity ({} for
    older runs), `cfg` the config with this command's flags applied. Files are read only
    where a flag changed a path: the init file is needed only to start."""
    from trainer.data.manifest import read_manifest

    identity = {k: saved.get(k, getattr(saved_cfg, k)) for k in ("workload", "size", "version", "recipe")}
    for field in ("workload", "size", "version", "recipe"):
        _same(field, identity[field], getattr(cfg, field), saved_cfg)
    identity["dataset"] = saved.get("dataset")
    if identity["dataset"] is None or cfg.dataset != saved_cfg.dataset:
        now = dataset_identity(read_manifest(cfg.dataset))
        if identity["dataset"] is None and Path(saved_cfg.dataset).is_dir():
            identity["dataset"] = dataset_identity(read_manifest(saved_cfg.dataset))
        if identity["dataset"] is not None and now != identity["dataset"]:
            raise UserError(
                f"--resume: dataset {cfg.dataset} is not this run's dataset (clip list sha256 {now[:12]}, the run's {identity['dataset'][:12]}, "
                f"from {saved_cfg.dataset}): a resume keeps its dataset; pass --data {saved_cfg.dataset} (or leave --data out), or start a new run with another --out"
            )
        identity["dataset"] = now
    identity["init"] = saved.get("init")
    if cfg.init != saved_cfg.init:
        now = file_sha256(_existing(cfg.init, "init")) if cfg.init else None
        if identity["init"] is not None and now != identity["init"]:
            was = saved_cfg.init or "none"
            raise UserError(
                f"--resume: init {cfg.init} is not the file this run started from ({was}, sha256 {identity['init'][:12]}; "
                f"this one {(now or 'none')[:12]}): the init file is needed only to start; leave --init out"
            )
    return identity


def _same(field: str, was: Any, now: Any, saved_cfg) -> None:
    if was != now:
        raise UserError(
            f"--resume: this run's {field} is {was}, the command says {now}: a resume keeps the run's {field}; "
            f"pass {FLAGS[field]} {was} (or leave {FLAGS[field]} out), or start a new run with another --out"
        )


def replan_note(saved_cfg, cfg) -> str | None:
    """What a resume with another --epochs / --max-steps does (None if unchanged)."""
    changes = [f"{name} {getattr(saved_cfg, attr)} -> {getattr(cfg, attr)}"
               for name, attr in (("--epochs", "epochs"), ("--max-steps", "max_steps")) if getattr(saved_cfg, attr) != getattr(cfg, attr)]
    if not changes:
        return None
    return (f"re-plan: {', '.join(changes)}: the learning rate continues from its current value and the cosine "
            "decays from there over the new length (it never jumps; the resume event says from which value)")


# --- version from the init file -------------------------------------------------------------


def default_version(cfg, explicit: set[str], report: Callable[[str], None]):
    """A new run without --version takes its init file's version (an s2 G file says it)."""
    if "version" in explicit or cfg.workload != "s2" or cfg.init is None or not Path(cfg.init).is_file():
        return cfg
    from trainer.config import VERSIONS, apply_overrides
    from trainer.gptsovits.identify import identify

    found = identify(cfg.init)
    if found.kind == "s2G" and found.version in VERSIONS and found.version != cfg.version:
        report(f"version: {found.version} (from --init {cfg.init}, {found.describe()}; --version sets another)")
        return apply_overrides(cfg, {"version": found.version})
    return cfg


# --- 2. dataset ----------------------------------------------------------------------------


def trainable_versions(manifest: dict) -> tuple[str, ...] | None:
    """The s2 versions a dataset can feed (v2Pro+ need sv_emb in every clip); None: unknown (all)."""
    versions = manifest.get("versions")
    if isinstance(versions, list):
        return tuple(versions)
    counts = (manifest.get("features") or {}).get("clips_with")
    if isinstance(counts, dict) and isinstance(counts.get("sv_emb"), int):
        return ("v2", *SV_VERSIONS) if counts["sv_emb"] >= len(manifest["clips"]) else ("v2",)
    return None


def check_mel(dataset, manifest: dict, version: str) -> None:
    """s2 v3/v4 train on the dataset's stored mel: it must be there, and of this version's rate."""
    mel = manifest.get("mel")
    made_for = mel.get("version") if isinstance(mel, dict) else None
    if made_for != version:
        has = f"holds the {made_for} mel" if made_for else "holds no mel target"
        raise UserError(f"{dataset}: s2 {version} learns each clip's {version} mel, and this dataset {has}: "
                        f"prepare it with `advisor prepare --from-gpt-sovits EXP OUT --version {version}`")


def check_dataset(cfg) -> dict:
    """The dataset is complete and can feed cfg.version; returns its manifest."""
    from trainer.data.manifest import read_manifest

    manifest = read_manifest(cfg.dataset)
    versions = trainable_versions(manifest)
    if cfg.workload == "s2" and cfg.version in V3_FAMILY:  # v3/v4 learn each clip's mel, stored by prepare --version v3|v4
        check_mel(cfg.dataset, manifest, cfg.version)
        return manifest
    if cfg.workload == "s2" and versions is not None and cfg.version not in versions:
        source = (manifest.get("source") or {}).get("gpt_sovits_experiment")
        why = (f"its experiment folder {source} has no 7-sv_cn/ (GPT-SoVITS's v2 preprocessing)" if source
               else "its clips hold no sv_emb")
        raise UserError(
            f"--version {cfg.version}: dataset {cfg.dataset} can train {', '.join(versions)} only ({why}; {cfg.version} needs a "
            f"speaker embedding per clip): pass --version {versions[-1]}, or run GPT-SoVITS's {cfg.version} preprocessing "
            "(it writes 7-sv_cn/) and `advisor prepare --from-gpt-sovits` again"
        )
    return manifest


# --- 3. init files --------------------------------------------------------------------------


def check_init(cfg, workload, models) -> str:
    """--init / --init-d are the files this workload needs (named by what they are), with the
    model's keys and shapes (on the meta device). Returns what the init file is ("" without one)."""
    from trainer.gptsovits.identify import expect

    if cfg.init is not None and cfg.workload == "s1":
        from trainer.gptsovits.s1_files import check_compatible, describe, read_s1_file

        expect(_existing(cfg.init, "init"), "s1", "s1")
        state = read_s1_file(cfg.init)
        check_compatible(cfg.init, state, models["gpt"])
        return describe(state)
    if cfg.workload == "s2" and (cfg.init or cfg.init_d):
        if cfg.init:
            found = expect(_existing(cfg.init, "init"), "s2G", "s2")
            v3v4 = cfg.version in V3_FAMILY
            if v3v4 and found.version in ("v3", "v4", "v3/v4"):  # the weights alone cannot tell v3 from v4: the reader decides (header, hash, config, name)
                return "; ".join(workload.load_init(models, cfg.init, cfg.init_d))
            if found.version != cfg.version:
                hint = (f"pass --version {found.version} (or leave --version out: it follows the init file)"
                        if found.version in ("v2", *SV_VERSIONS) else "v3/v4 training is not in this trainer yet")
                raise UserError(f"--init {cfg.init}: {found.describe()}, but this run trains {cfg.version}: {hint}, or pass a {cfg.version} s2G file")
        if cfg.init_d:
            expect(_existing(cfg.init_d, "init_d"), "s2D", "s2")
        return "; ".join(workload.load_init(models, cfg.init, cfg.init_d))  # version, kind and shapes checked on meta
    return ""


# --- 4. the GPT-SoVITS checkout ----------------------------------------------------------------


def check_gpt_sovits_root(root: str | None) -> None:
    """The folder that holds webui.py and GPT_SoVITS/ (where the webui lists GPT_weights_<ver>/
    and SoVITS_weights_<ver>/), writable."""
    if root is None:
        return
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"--gpt-sovits-root {root}: not a folder (expected the GPT-SoVITS checkout that holds webui.py and GPT_SoVITS/)")
    if not ((path / "webui.py").is_file() or (path / "GPT_SoVITS").is_dir()):
        if path.name == "GPT_SoVITS" or (path / "s1_train.py").is_file() or (path.parent / "webui.py").is_file():
            raise UserError(f"--gpt-sovits-root {root}: GPT-SoVITS's inner GPT_SoVITS/ package, not its root: the webui lists "
                            f"GPT_weights_<ver>/ and SoVITS_weights_<ver>/ beside webui.py; pass --gpt-sovits-root {path.resolve().parent}")
        raise UserError(f"--gpt-sovits-root {root}: not a GPT-SoVITS checkout (no webui.py or GPT_SoVITS/ in it); "
                        "pass the folder you start GPT-SoVITS's webui from")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--gpt-sovits-root {root}: not writable (the exports are copied into its GPT_weights_*/SoVITS_weights_* folders)")


# --- 5. disk --------------------------------------------------------------------------------


def checkpoint_bytes(parameters: int) -> int:
    """About one checkpoint's size: fp32 weights and AdamW's two moments."""
    return parameters * CHECKPOINT_BYTES_PER_PARAM


def disk_needed(parameters: int, keep_last: int, existing: int = 0) -> int:
    """Bytes the run's checkpoints still need: keep_last + the best + the latest finite + one
    being written (atomically, beside the others), plus the export (weights fp32 + fp16 copy),
    less what its checkpoints already take."""
    one = checkpoint_bytes(parameters)
    total = one * (keep_last + 3) + parameters * 6
    return max(0, int(total * DISK_MARGIN) - existing)


def check_disk(run_root: Path, parameters: int, keep_last: int, free: int | None = None) -> None:
    """UserError when the filesystem of RUN_DIR has less free space than the checkpoints need."""
    from probe.sizes import format_size

    folder = run_root
    while not folder.exists():
        folder = folder.parent
    existing = sum(f.stat().st_size for f in (run_root / "checkpoints").glob("*.pt")) if (run_root / "checkpoints").is_dir() else 0
    needed = disk_needed(parameters, keep_last, existing)
    free = shutil.disk_usage(folder).free if free is None else free
    if needed > free:
        raise UserError(
            f"--out {run_root}: about {format_size(needed)} of checkpoints needed ({keep_last} kept + best + latest finite + one being written, "
            f"{format_size(checkpoint_bytes(parameters))} each), {format_size(free)} free on its disk: free space, "
            "--set checkpoint.keep_last=1, or choose another --out"
        )


# --- 6. the vocoder ---------------------------------------------------------------------------


def check_vocoder(cfg) -> None:
    """validation.vocoder loads into the vocoder of cfg.version (v4 vocoder.pth, v3 the BigVGAN folder)."""
    if cfg.validation.vocoder is None:
        return
    from trainer.sovits.vocoder import load_vocoder

    try:
        load_vocoder(cfg.validation.vocoder, cfg.version)
    except ValueError as exc:
        raise UserError(f"--vocoder {exc}") from None
