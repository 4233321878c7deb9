"""GPT-SoVITS model versions, and which of them each stage of this tool trains (one place; no torch).

GPT-SoVITS has one s1 (the GPT) for every version from v2 on (v3, v4, v2Pro and
v2ProPlus all start from s1v3.ckpt, the same architecture and file format), and two
s2 families:
  V2_FAMILY  v2, v2Pro, v2ProPlus: the VITS generator + discriminator (trainer/sovits)
  V3_FAMILY  v3, v4: SynthesizerTrnV3, the v2 text encoder + a CFM/DiT mel decoder,
             fine-tuned with LoRA; v3 predicts a 24 kHz mel, v4 a 32 kHz one
The version names the export folders (GPT_weights_<v>/, SoVITS_weights_<v>/; s1:
`trainer.gptsovits.s1_files.weights_folder`). `S2_VERSIONS` is what `--workload s2`
accepts (both families). `trainer.checks.table_name` names a (workload, version) as the probe and
the VRAM tables do (s1, s2 = the default version, s2-<version>).
"""

from __future__ import annotations

V2_FAMILY = ("v2", "v2Pro", "v2ProPlus")
V3_FAMILY = ("v3", "v4")
ALL = (*V2_FAMILY, *V3_FAMILY)
DEFAULT = "v2Pro"  # GPT-SoVITS webui's default version
DEFAULT_LORA_RANK = 32  # v3/v4 s2: the webui's LoRA rank (it offers 16, 32, 64, 128); TrainConfig.lora_rank's default

S1_VERSIONS = ALL  # the same GPT for all of them; only the export folder differs
S2_VERSIONS = (*V2_FAMILY, *V3_FAMILY)  # V2_FAMILY: the GAN (trainer/workloads/s2.py); V3_FAMILY: LoRA on the CFM/DiT (s2v3.py)


def check_version(version: str, workload: str | None = None) -> str:
    """`version`, or a one-line ValueError naming what `workload` (s1, s2, or any) accepts."""
    allowed = {"s1": S1_VERSIONS, "s2": S2_VERSIONS}.get(workload or "", ALL)
    if version in allowed:
        return version
    if version in ALL:
        raise ValueError(f"GPT-SoVITS {version}: {workload} does not train it yet ({workload} trains {', '.join(allowed)})")
    raise ValueError(f"unknown GPT-SoVITS version {version!r}: expected one of {', '.join(allowed)}")
