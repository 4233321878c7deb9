"""GPT-SoVITS's vocoders (trainer/sovits/vocoder.py) and CFM sampling (trainer/sovits/cfm.py `CFM.sample`).

The files are written in upstream's exact formats: v4's vocoder.pth is a bare state dict of
plain weight / bias tensors (upstream removes the weight norm, then loads strictly), here
at width 32 instead of 512 to stay cheap; every key name is upstream's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.gptsovits.mel_v3 import normalize
from trainer.sovits.cfm import CFM
from trainer.sovits.config import v3_config
from trainer.sovits.vocoder import HOPS, SAMPLE_RATES, build_v4, load_vocoder

WIDTH = 32  # the narrowest v4 vocoder: 5 halvings leave 1 channel


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
