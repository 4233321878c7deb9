"""What `advisor train` tells the user about a run beyond the batch line: notes on what the
flags imply (an emulated budget a tiny model cannot reach, a full-size model on a CPU), the
--init file's sha256 (hashed once, before the run), and where the export was copied."""

from __future__ import annotations


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """A file's sha256, read in 1 MiB chunks (a multi-GB checkpoint never sits in memory)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


TINY_FAR_BELOW = 2**30  # an emulated budget a --size tiny run cannot reach (its peak: ~0.2 GiB at micro-batch 4)
CPU_FULL_HINT_BATCH = 8  # a full-size micro-batch past this on a CPU: say that --size tiny is the rehearsal


def launch_notes(spec) -> list[str]:
    """What the flags imply that a user may not expect: an emulated budget a tiny model cannot
    reach; a full-size model on a CPU (a step takes minutes)."""
    cfg, notes = spec.config, []
    budget = spec.launch.emulate_vram_bytes
    if budget and budget >= TINY_FAR_BELOW and cfg.size == "tiny":
        notes.append(f"--emulate-vram {budget / 2**30:.2f} GiB with --size tiny: the tiny model's tensors stay far below "
                     "a budget this size (s2 at micro-batch 4 peaks at ~0.2 GiB), so it will not run out; rehearse a "
                     "card's OOMs with --size full")
    if cfg.size == "full" and _on_cpu(cfg.device) and cfg.batch.micro > CPU_FULL_HINT_BATCH:
        notes.append(f"training the full-size {cfg.workload} on the CPU (micro-batch {cfg.batch.micro}): each step will take "
                     "minutes; --size tiny is the CPU rehearsal size (seconds a step), full size is for a GPU")
    return notes


def _on_cpu(device: str) -> bool:
    """Will the trainer run on the CPU? (no torch import: NVML says whether there is a GPU)"""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    from probe.device import gpus

    return not gpus(cuda_available=False)


def copies_made(run_dir) -> list[str]:
    """Where the last export event says the GPT-SoVITS files were copied (--gpt-sovits-root)."""
    from trainer.events import read_all

    exports = [e for e in read_all(run_dir.events)[0] if e.get("kind") == "export"] if run_dir.events.is_file() else []
    return [str(c) for c in exports[-1].get("copied_to") or []] if exports else []
