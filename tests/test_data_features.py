"""Content features and semantic tokens: the built-in fallback and the real s2 modules."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from trainer.data.features import BertFeatures, BuiltinContent, HubertContent, SemanticTokenizer, deltas
from trainer.sovits.config import FULL_GENERATOR


def speechy(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 32000)) / 32000
    x = np.sin(2 * np.pi * (150 + 60 * np.sin(2 * np.pi * 0.7 * t)) * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    return (0.4 * x + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def test_builtin_content_is_768_at_50_hz_and_deterministic():
    wav = speechy(2.0)[: 99 * 640 + 17]
    a, b = BuiltinContent()(wav), BuiltinContent()(wav)
    assert a.shape == (768, 99) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert 0.8 < float(a.std()) < 1.2  # standardised inputs, variance-preserving projection
    assert not torch.allclose(a, BuiltinContent()(speechy(2.0, seed=1)[: 99 * 640 + 17]))


def test_deltas_of_a_ramp_are_its_slope():
    ramp = torch.arange(20, dtype=torch.float32).repeat(3, 1) * 2.0
    d = deltas(ramp)
    assert torch.allclose(d[:, 2:-2], torch.full((3, 16), 2.0))


def test_semantic_tokens_are_codes_of_the_s2_quantiser():
    ssl = BuiltinContent()(speechy(3.0))  # (768, 150)
    tok = SemanticTokenizer(seed=0)
    codes = tok(ssl)
    assert codes.shape == (75,) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < FULL_GENERATOR.codebook_size
    assert len(codes.unique()) > 5  # not collapsed onto one code
    assert torch.equal(codes, SemanticTokenizer(seed=0)(ssl))
    assert not torch.equal(codes, SemanticTokenizer(seed=1)(ssl))
    assert torch.equal(tok.module.quantizer.embed, SemanticTokenizer(seed=0).module.quantizer.embed)  # eval: no EMA drift


def test_s2_checkpoint_from_a_real_generator_is_loaded(tmp_path):
    from trainer.sovits.generator import Synthesizer

    torch.manual_seed(5)
    generator = Synthesizer(FULL_GENERATOR)
    torch.save({"weight": generator.state_dict(), "info": "epoch 8"}, tmp_path / "s2G.pth")
    tok = SemanticTokenizer(tmp_path / "s2G.pth")
    assert torch.equal(tok.module.ssl_proj.weight, generator.ssl_proj.weight)
    assert torch.equal(tok.module.quantizer.embed, generator.quantizer.embed)
    ssl = BuiltinContent()(speechy(1.0))
    _, expected, _ = generator.eval().quantizer(generator.ssl_proj(ssl[None]), torch.ones(1, 1, 25))
    assert torch.equal(tok(ssl), expected[0])
    assert tok.name.startswith("s2-checkpoint:") and "sha256:" in tok.name


def test_bad_s2_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        SemanticTokenizer(tmp_path / "none.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a torch zip file"):
        SemanticTokenizer(tmp_path / "junk.pth")
    torch.save({"weight": {"enc_p.x": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="missing quantizer.vq.layers.0._codebook.cluster_size"):
        SemanticTokenizer(tmp_path / "other.pth")


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="transformers is installed here")
@pytest.mark.parametrize("cls,flag", [(HubertContent, "--hubert"), (BertFeatures, "--bert")])
def test_optional_models_without_transformers_say_so(tmp_path, cls, flag):
    with pytest.raises(ValueError, match=f"{flag} needs the optional package `transformers`"):
        cls(tmp_path)
