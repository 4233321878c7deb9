"""GPT-SoVITS's vocoders (trainer/sovits/vocoder.py, bigvgan.py) and CFM sampling (trainer/sovits/cfm.py `CFM.sample`).

The files are written in upstream's exact formats: v4's vocoder.pth is a bare state dict of
plain weight / bias tensors (upstream removes the weight norm, then loads strictly), here
at width 32 instead of 512 to stay cheap; v3's BigVGAN folder is config.json +
bigvgan_generator.pt holding {"generator": state dict} with weight-normed weight_g /
weight_v keys, as NVIDIA ships it, here at 64 channels instead of 1536. Every key name is
upstream's: tests/data/bigvgan/ lists the full-size BigVGAN's keys and shapes as NVIDIA's
own class (BigVGAN v2.4, bigvgan.py) builds them from bigvgan_v2_24khz_100band_256x's config.
"""

from __future__ import annotations

from pathlib import Path

import json

import pytest
import torch

from trainer.gptsovits.mel_v3 import normalize
from trainer.sovits.cfm import CFM
from trainer.sovits.config import v3_config
from trainer.sovits.bigvgan import BigVGAN, kaiser_sinc
from trainer.sovits.vocoder import HOPS, SAMPLE_RATES, build_v4, load_vocoder

WIDTH = 32  # the narrowest v4 vocoder: 5 halvings leave 1 channel
DATA = Path(__file__).parent / "data" / "bigvgan"
# bigvgan_v2_24khz_100band_256x's config.json: the fields that shape the network, and its rate
V3_CONFIG = {"resblock": "1", "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
             "upsample_initial_channel": 1536, "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
             "use_tanh_at_final": False, "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True,
             "num_mels": 100, "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 24000, "fmin": 0, "fmax": None}


def v4_file(path: Path, seed: int = 0, dtype: torch.dtype = torch.float32, edit=None) -> Path:
    torch.manual_seed(seed)  # weights ~ N(0, 1 / fan-in): the output follows the mel (HiFi-GAN's N(0, 0.01) init echoes its biases)
    state = {k: (torch.randn_like(v) * (v[0].numel() ** -0.5 if v.dim() > 1 else 0.01)).to(dtype) for k, v in build_v4(WIDTH).state_dict().items()}
    if edit:
        edit(state)
    torch.save(state, path)
    return path


def test_v4_state_dict_has_upstreams_plain_keys():
    """Generator(gin 0, is_bias=True) with weight norm removed, as TTS.py's init_vocoder builds it."""
    keys = list(build_v4(WIDTH).state_dict())
    assert len(keys) == 194 and "cond.weight" not in keys and "conv_post.bias" in keys
    assert keys[:4] == ["conv_pre.weight", "conv_pre.bias", "ups.0.bias", "ups.0.weight"]
    assert "resblocks.14.convs2.2.weight" in keys and not any("weight_g" in k or "weight_v" in k for k in keys)
    full = build_v4().state_dict()
    assert full["conv_pre.weight"].shape == (512, 100, 7) and full["ups.0.weight"].shape == (512, 256, 20)
    assert full["ups.4.weight"].shape == (32, 16, 4) and full["conv_post.weight"].shape == (1, 16, 7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_v4_file_loads_strictly_and_voices_480_samples_per_frame(tmp_path, dtype):
    vocoder = load_vocoder(v4_file(tmp_path / "vocoder.pth", dtype=dtype), "v4")
    assert vocoder.sample_rate == SAMPLE_RATES["v4"] == 48_000 and vocoder.hop == HOPS["v4"] == 480
    mel = normalize(torch.randn(2, 100, 37) - 5)
    wav = vocoder(mel)
    assert wav.shape == (2, 1, 480 * 37) and wav.dtype == torch.float32 and torch.isfinite(wav).all()
    assert wav.abs().max() <= 1 and not vocoder.training and not torch.equal(wav[0], wav[1])
    saved = torch.load(tmp_path / "vocoder.pth")
    assert all(torch.equal(v.float(), saved[k].float()) for k, v in vocoder.net.state_dict().items())


def _drop(key):
    return lambda state: state.pop(key)


def _rename(key, new):
    return lambda state: state.__setitem__(new, state.pop(key))


@pytest.mark.parametrize("edit, needles", [
    (_drop("conv_post.bias"), ["1 keys missing (first: conv_post.bias)"]),
    (_rename("ups.2.weight", "ups.2.weight_v"), ["missing (first: ups.2.weight)", "unexpected (first: ups.2.weight_v)", "plain weights"]),
    (lambda s: s.__setitem__("resblocks.3.convs1.0.weight", torch.zeros(8, 8, 7)), ["resblocks.3.convs1.0.weight has shape (8, 8, 7)", "is (8, 8, 3)"]),
    (lambda s: s.__setitem__("conv_pre.weight", torch.zeros(40, 100, 7)), ["40 output channels"]),
])
def test_a_wrong_v4_file_is_a_one_line_error_naming_the_key(tmp_path, edit, needles):
    path = v4_file(tmp_path / "vocoder.pth", edit=edit)
    with pytest.raises(ValueError) as caught:
        load_vocoder(path, "v4")
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert all(n in message for n in needles), message


def test_not_a_v4_file_is_named(tmp_path):
    (tmp_path / "text.pth").write_text("hello")
    torch.save({"generator": build_v4(WIDTH).state_dict()}, tmp_path / "wrapped.pth")
    for path, needle in [(tmp_path / "missing.pth", "no such file"), (tmp_path, "a folder"),
                         (tmp_path / "text.pth", "not a readable torch state dict"), (tmp_path / "wrapped.pth", "not a bare state dict")]:
        with pytest.raises(ValueError, match=needle):
            load_vocoder(path, "v4")


def test_cfm_sample_keeps_the_prompt_zero_and_repeats_exactly():
    torch.manual_seed(0)
    cfm = CFM(v3_config("v4", "tiny").dit).eval()
    cond = torch.randn(1, v3_config("v4", "tiny").dit.text_dim, 30)
    prompt = torch.randn(1, 100, 10)
    rng_state = torch.get_rng_state()
    first = cfm.sample(cond, prompt, 4, torch.Generator().manual_seed(7))
    again = cfm.sample(cond, prompt, 4, torch.Generator().manual_seed(7))
    other = cfm.sample(cond, prompt, 4, torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), rng_state)  # training's RNG untouched
    assert first.shape == (1, 100, 30) and torch.equal(first, again) and not torch.equal(first, other)
    assert (first[..., :10] == 0).all() and torch.isfinite(first).all()


def test_cfm_sample_is_upstreams_euler_loop():
    """x0 ~ N(0, I) from the generator, the prompt zeroed, then x += d v(x, t) with the DiT told (t, d)."""
    seen = []

    class Echo(torch.nn.Module):  # v = 1 everywhere: x ends at x0 + 1 outside the prompt
        def forward(self, x, prompt, lengths, t, dt, cond):
            seen.append((float(t[0]), float(dt[0]), int(lengths[0]), prompt.clone()))
            return torch.ones_like(x)

    cfm = CFM(v3_config("v4", "tiny").dit)
    cfm.estimator = Echo()
    prompt = torch.full((1, 100, 3), 0.5)
    out = cfm.sample(torch.zeros(1, 8, 12), prompt, 4, torch.Generator().manual_seed(1))
    x0 = torch.randn((1, 100, 12), generator=torch.Generator().manual_seed(1))
    assert [(t, dt, n) for t, dt, n, _ in seen] == [(0.0, 0.25, 12), (0.25, 0.25, 12), (0.5, 0.25, 12), (0.75, 0.25, 12)]
    assert torch.equal(seen[0][3][..., :3], prompt) and (seen[0][3][..., 3:] == 0).all()
    assert torch.allclose(out[..., 3:], x0[..., 3:] + 1) and (out[..., :3] == 0).all()


# --- v3: BigVGAN ---------------------------------------------------------------------------------


def bigvgan_folder(folder: Path, seed: int = 0, plain: bool = False, edit=None, **config) -> Path:
    """A BigVGAN folder in NVIDIA's format at 64 channels (6 halvings leave 1), random weights."""
    h = {**V3_CONFIG, "upsample_initial_channel": 64, **config}
    torch.manual_seed(seed)
    net = BigVGAN(h)
    with torch.no_grad():  # snake parameters off their zero init, so the activations differ per channel
        for name, p in net.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.normal_(0, 0.3)
    if plain:
        net.remove_weight_norm()
    state = net.state_dict()
    if edit:
        edit(state)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(h, indent=4))
    torch.save({"generator": state}, folder / "bigvgan_generator.pt")
    return folder


def test_bigvgan_full_size_is_nvidias_key_for_key():
    with torch.device("meta"):
        ours = BigVGAN(V3_CONFIG).state_dict()
    theirs = json.loads((DATA / "bigvgan_v2_24khz_100band_256x_state_dict.json").read_text())
    assert [[k, list(v.shape)] for k, v in ours.items()] == theirs  # 783 keys, 112,448,905 elements, in order
    assert "conv_pre.weight_g" in ours and "conv_post.bias" not in ours and "resblocks.17.activations.5.downsample.lowpass.filter" in ours


def test_the_resampling_filter_is_a_unit_gain_kaiser_sinc():
    taps = kaiser_sinc(0.25, 0.3, 12)[0, 0]
    assert taps.shape == (12,) and torch.allclose(taps.sum(), torch.tensor(1.0)) and torch.allclose(taps, taps.flip(0))
    assert int(taps.argmax()) in (5, 6)  # an even kernel: symmetric about the middle, between taps 5 and 6


@pytest.mark.parametrize("plain", [False, True])
def test_v3_folder_loads_strictly_and_voices_256_samples_per_frame(tmp_path, plain):
    folder = bigvgan_folder(tmp_path / "bigvgan", plain=plain)
    vocoder = load_vocoder(folder, "v3")
    assert vocoder.sample_rate == SAMPLE_RATES["v3"] == 24_000 and vocoder.hop == HOPS["v3"] == 256
    assert not any(k.endswith(("weight_g", "weight_v")) for k in vocoder.net.state_dict())  # weight norm removed for inference
    mel = normalize(torch.randn(2, 100, 21) - 5)
    wav = vocoder(mel)
    assert wav.shape == (2, 1, 256 * 21) and torch.isfinite(wav).all() and wav.abs().max() <= 1 and not torch.equal(wav[0], wav[1])
    other = load_vocoder(bigvgan_folder(tmp_path / "other", plain=not plain), "v3")  # the same weights, the other key form
    assert torch.allclose(wav, other(mel), atol=1e-5)


@pytest.mark.parametrize("make, needle", [
    (lambda d: bigvgan_folder(d, edit=lambda s: s.pop("ups.3.0.weight_v")), "1 keys missing (first: ups.3.0.weight_v)"),
    (lambda d: bigvgan_folder(d, edit=lambda s: s.pop("activation_post.upsample.filter")), "first: activation_post.upsample.filter"),
    (lambda d: bigvgan_folder(d, num_mels=80), "num_mels 80, GPT-SoVITS v3's mel needs 100"),
    (lambda d: bigvgan_folder(d, upsample_rates=[4, 4, 2, 2, 2, 4]), "make 512 samples per frame"),
    (lambda d: bigvgan_folder(d) and (d / "config.json").write_text("{}"), "no 'resblock'"),
    (lambda d: bigvgan_folder(d) and (d / "bigvgan_generator.pt").unlink(), "no bigvgan_generator.pt"),
    (lambda d: v4_file(d.parent / "vocoder.pth") and d.parent / "vocoder.pth", "not a folder; v3 takes the BigVGAN folder (config.json + bigvgan_generator.pt)"),
])
def test_a_wrong_v3_folder_is_a_one_line_error(tmp_path, make, needle):
    folder = tmp_path / "bigvgan"
    target = make(folder)
    path = target if isinstance(target, Path) and target.suffix == ".pth" else folder
    with pytest.raises(ValueError) as caught:
        load_vocoder(path, "v3")
    assert "\n" not in str(caught.value) and needle in str(caught.value), str(caught.value)


def test_v3_sample_is_the_generated_mel_through_bigvgan(tmp_path):
    """synthesize_cfm on a tiny v3 model: a third of the clip as the prompt, 32 steps, 256 samples per generated frame."""
    from trainer.loop.samples import synthesize_cfm
    from trainer.workloads.s2v3 import S2V3Workload

    workload = S2V3Workload(size="tiny", version="v3", lora_rank=4)
    torch.manual_seed(0)
    model = workload.build("cpu")["generator"].eval()
    batch = workload.synthetic_batch(1, 1.0, generator=torch.Generator().manual_seed(0))
    vocoder = load_vocoder(bigvgan_folder(tmp_path / "bigvgan"), "v3")
    wav, prompt = synthesize_cfm(model, batch, vocoder, "v3", seed=3)
    n = int(batch["mel_lens"][0])
    assert prompt == n // 3 and wav.shape == (256 * (n - prompt),) and torch.isfinite(wav).all()
    assert torch.equal(wav, synthesize_cfm(model, batch, vocoder, "v3", seed=3)[0])


def test_a_vocoder_gone_since_the_preflight_costs_the_samples_not_the_run(tmp_path):
    from types import SimpleNamespace

    from trainer.loop.sinks import _vocoder

    p = SimpleNamespace(cfg=SimpleNamespace(version="v4"))
    vocoder, why = _vocoder(str(tmp_path / "gone.pth"), SimpleNamespace(root=tmp_path), p)
    assert vocoder is None and why.startswith(f"no samples: validation.vocoder {tmp_path / 'gone.pth'}: no such file")
