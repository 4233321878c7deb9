"""GPT-SoVITS's vocoders: the s2 v3 / v4 mel -> a waveform, for the validation samples only.

Facts: ../shared/reference/gpt-sovits/INTEROP-v3v4.md sections 1 and 9 (upstream
TTS_infer_pack/TTS.py `init_vocoder`, module/models.py `Generator`); no upstream code used.

    version  the user's file                                   network                     hop  rate
    v4       gsv-v4-pretrained/vocoder.pth: a bare state dict   HiFi-GAN (decoder.py)       480  48 kHz
             of plain weight / bias tensors (upstream builds
             the Generator, removes its weight norm, then
             load_state_dict strictly)
    v3       models--nvidia--bigvgan_v2_24khz_100band_256x/:    BigVGAN v2 (bigvgan.py)     256  24 kHz
             config.json + bigvgan_generator.pt holding         from config.json, which
             {"generator": state dict}, weight-normed (as       must say 100 mels, 24 kHz,
             NVIDIA ships it) or plain; loaded strictly,        256 samples per frame
             then the weight norm removed

The v4 network is upstream's `Generator(initial_channel=100, resblock "1", kernels
3/7/11, dilations 1/3/5, rates 10/6/2/2/2, kernels 20/12/4/4/4, gin 0, is_bias=True)`;
its width (512 upstream) is read from the file's conv_pre.weight, so a narrower
file (the tests') loads too; every other shape is upstream's, and every key must
match (missing, unexpected or misshaped: one ValueError line naming the first).
fp16 and fp32 files both load (copied into fp32).

`Vocoder(mel)`: the model's normalised mel (B, 100, N) -> denormalised (inference's
`denorm_spec`) -> waveform (B, 1, hop N) in [-1, 1], fp32, eval mode, no gradients.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainer.gptsovits.mel_v3 import N_MELS, denormalize

SAMPLE_RATES = {"v3": 24_000, "v4": 48_000}  # Hz of the vocoder's output (upstream inference's output rate)
HOPS = {"v3": 256, "v4": 480}  # output samples per mel frame
REFERENCE_FRAMES = {"v3": 468, "v4": 500}  # the most reference mel upstream inference prompts the CFM with
V3_FILES = ("config.json", "bigvgan_generator.pt")
EXPECTED = {"v4": "GPT-SoVITS's gsv-v4-pretrained/vocoder.pth (a state dict of plain weights)",
            "v3": "the BigVGAN folder (config.json + bigvgan_generator.pt), GPT-SoVITS's models--nvidia--bigvgan_v2_24khz_100band_256x"}


@dataclass(frozen=True)
class HifiGanShape:
    """The v4 vocoder's shape, in the fields decoder.Decoder reads."""

    hidden: int = N_MELS  # input channels: the mel bands
    upsample_channels: int = 512
    upsample_rates: tuple[int, ...] = (10, 6, 2, 2, 2)  # product 480: 100 frames/s -> 48 kHz
    upsample_kernels: tuple[int, ...] = (20, 12, 4, 4, 4)
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)
    gin: int = 0  # no style input


class Vocoder(nn.Module):
    """A loaded vocoder: normalised mel (B, 100, N) -> waveform (B, 1, hop N) at `sample_rate`."""

    def __init__(self, net: nn.Module, version: str) -> None:
        super().__init__()
        self.net = net.requires_grad_(False)
        self.version = version
        self.sample_rate = SAMPLE_RATES[version]
        self.hop = HOPS[version]
        self.eval()

    def train(self, mode: bool = True) -> "Vocoder":
        return super().train(False)  # inference only: never in train mode

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.net(denormalize(mel.float()))


def load_vocoder(path: str | os.PathLike, version: str) -> Vocoder:
    """The vocoder for `version` from the user's file (v4) or folder (v3), on the CPU;
    ValueError, one line starting with the path, when it is not that vocoder."""
    if version not in SAMPLE_RATES:
        raise ValueError(f"{path}: version {version} has no vocoder: only s2 v3 / v4 predict a mel")
    path = Path(path)
    net = read_v4(path) if version == "v4" else read_bigvgan(path)
    return Vocoder(net, version)


# --- v4 ----------------------------------------------------------------------------------------


def build_v4(channels: int = HifiGanShape.upsample_channels) -> nn.Module:
    """GPT-SoVITS's v4 vocoder with its weight norm removed (plain weight / bias keys), random weights."""
    from trainer.sovits.decoder import Decoder

    return Decoder(HifiGanShape(upsample_channels=channels), post_bias=True).remove_weight_norm()


def read_v4(path: Path) -> nn.Module:
    """vocoder.pth -> the v4 network, loaded strictly."""
    if path.is_dir():
        raise ValueError(f"{path}: a folder; v4 takes {EXPECTED['v4']}")
    state = _read_state(path, "v4")
    pre = state.get("conv_pre.weight")
    stages = len(HifiGanShape.upsample_rates)
    channels = pre.shape[0] if isinstance(pre, torch.Tensor) and pre.dim() == 3 else HifiGanShape.upsample_channels
    if channels % (1 << stages):
        raise ValueError(f"{path}: conv_pre.weight has {channels} output channels, expected a multiple of {1 << stages} "
                         f"(GPT-SoVITS's: 512): not {EXPECTED['v4']}")
    net = build_v4(channels)
    hint = " (weight-normed weight_g / weight_v keys: GPT-SoVITS's vocoder.pth holds plain weights)" if any(k.endswith(".weight_g") for k in state) else ""
    load_strictly(net, state, path, "v4", hint)
    return net


# --- v3 ----------------------------------------------------------------------------------------


V3_CONFIG = {"num_mels": N_MELS, "sampling_rate": SAMPLE_RATES["v3"]}  # what the v3 mel needs of a BigVGAN config
V3_CONFIG_KEYS = ("resblock", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                  "resblock_kernel_sizes", "resblock_dilation_sizes", "activation", "snake_logscale", "num_mels")


def read_bigvgan(folder: Path) -> nn.Module:
    """The BigVGAN folder -> the v3 network, loaded strictly, weight norm removed: its checkpoint may
    hold weight-normed keys (as NVIDIA ships it) or plain ones (BigVGAN's own loader takes both)."""
    from trainer.sovits.bigvgan import BigVGAN

    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; v3 takes {EXPECTED['v3']}")
    missing = [name for name in V3_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder}: no {missing[0]}; v3 takes {EXPECTED['v3']}")
    h = check_bigvgan_config(read_json(folder / "config.json"), folder / "config.json")
    path = folder / "bigvgan_generator.pt"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, damaged, or pickled objects: name the file
        raise ValueError(f"{path}: not a readable torch file ({type(exc).__name__}); expected BigVGAN's {{'generator': state dict}}") from None
    state = saved.get("generator") if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = ", ".join(map(str, list(saved)[:3])) if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"{path}: expected BigVGAN's {{'generator': state dict}}, found {found}")
    net = BigVGAN(h)
    if not any(k.endswith(".weight_g") for k in state):
        net.remove_weight_norm()
    load_strictly(net, state, path, "v3", f" (for the network {folder / 'config.json'} describes)")
    return net.remove_weight_norm() if any(k.endswith(".weight_g") for k in state) else net


def check_bigvgan_config(h: dict, path: Path) -> dict:
    """A BigVGAN config with every field the network needs, for a 100-band 24 kHz mel at hop 256."""
    for key in V3_CONFIG_KEYS:
        if key not in h:
            raise ValueError(f"{path}: no {key!r}: not a BigVGAN config.json")
    hop = math.prod(h["upsample_rates"]) if all(isinstance(r, int) for r in h["upsample_rates"]) else None
    for key, want in V3_CONFIG.items():
        if key in h and h[key] != want:
            raise ValueError(f"{path}: {key} {h[key]}, GPT-SoVITS v3's mel needs {want} (bigvgan_v2_24khz_100band_256x)")
    if hop != HOPS["v3"]:
        raise ValueError(f"{path}: upsample_rates {h['upsample_rates']} make {hop} samples per frame; v3's mel needs {HOPS['v3']}")
    if str(h["resblock"]) not in ("1", "2") or h["activation"] not in ("snake", "snakebeta"):
        raise ValueError(f"{path}: resblock {h['resblock']!r} / activation {h['activation']!r}: expected \"1\" or \"2\" / snake or snakebeta")
    channels = h["upsample_initial_channel"]
    if not isinstance(channels, int) or channels >> len(h["upsample_rates"]) < 1 or len(h["upsample_kernel_sizes"]) != len(h["upsample_rates"]):
        raise ValueError(f"{path}: upsample_initial_channel {channels!r} with {len(h['upsample_rates'])} upsampling stages: not a BigVGAN shape")
    return h


# --- loading -----------------------------------------------------------------------------------


def _read_state(path: Path, version: str) -> dict:
    if not path.is_file():
        raise ValueError(f"{path}: no such file (expected {EXPECTED[version]})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, damaged, or pickled objects: name the file
        raise ValueError(f"{path}: not a readable torch state dict ({type(exc).__name__}); expected {EXPECTED[version]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = ", ".join(map(str, list(state)[:3])) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a bare state dict of tensors (found {keys}); expected {EXPECTED[version]}")
    return state


def load_strictly(net: nn.Module, state: dict, path: Path, version: str, hint: str = "") -> None:
    """Every key of `net` in `state` with its shape, and no other; floats copied into net's dtype."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = ([f"{len(missing)} keys missing (first: {missing[0]})"] if missing else []) + \
                ([f"{len(unexpected)} unexpected (first: {unexpected[0]})"] if unexpected else [])
        raise ValueError(f"{path}: not {EXPECTED[version]}: {', '.join(parts)}{hint}")
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, the {version} vocoder's is {tuple(value.shape)}")
        if not state[key].is_floating_point():
            raise ValueError(f"{path}: {key} is {state[key].dtype}, expected floating-point weights")
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
