"""GPT-SoVITS s1 interop: parameter names, recipe gpt-sovits losses by hand, ScaledAdam, weight files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainer.audio_constants import SEMANTIC_EOS
from trainer.loop.checkpoint import load_file, save_file
from trainer.gptsovits.s1_files import load_init, read_s1_file, upstream_config, write_gpt_weights
from trainer.scaled_adam import ScaledAdam
from trainer.workloads.s1 import S1Workload, attention_allowed, make_rejected_upstream, s1_losses

from gptsovits_data import write_s1_ckpt

MANIFEST = Path(__file__).parent / "data" / "gpt-sovits" / "s1_v2_state_dict.json"  # shipped test data
UPSTREAM_KEYS = [  # the first keys of upstream's s1 v2 state dict, in order (INTEROP.md)
    "bert_proj.weight", "bert_proj.bias", "ar_text_embedding.word_embeddings.weight", "ar_text_position.alpha",
    "ar_audio_embedding.word_embeddings.weight", "ar_audio_position.alpha", "h.layers.0.self_attn.in_proj_weight",
]


def test_state_dict_is_upstreams_keys_shapes_and_order():
    sd = S1Workload().build("meta")["gpt"].state_dict()
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sd.items()]
    assert len(ours) == 295 and [k for k, _, _ in ours[:7]] == UPSTREAM_KEYS and ours[-1] == ["ar_predict_layer.weight", [1025, 512], "float32"]
    assert ours == json.loads(MANIFEST.read_text())
    tiny = S1Workload(size="tiny").build("meta")["gpt"].state_dict()
    assert list(tiny) == [k for k in sd if not k.startswith("h.layers.") or int(k.split(".")[2]) < 2]  # same names, 2 layers


def fixed(recipe: str):
    w = S1Workload(size="tiny", recipe=recipe)
    torch.manual_seed(0)
    models = w.build("cpu").eval()  # no dropout: a fixed function
    g = torch.Generator().manual_seed(3)
    batch = {
        "phoneme_ids": torch.randint(1, 700, (3, 7), generator=g), "phoneme_lens": torch.tensor([7, 4, 2]),
        "bert_features": torch.randn(3, 1024, 7, generator=g),
        "semantic_ids": torch.randint(0, 1024, (3, 9), generator=g), "semantic_lens": torch.tensor([9, 5, 3]),
    }
    for b, (p, t) in enumerate(zip([7, 4, 2], [9, 5, 3])):
        batch["phoneme_ids"][b, p:] = 0
        batch["bert_features"][b, :, p:] = 0
        batch["semantic_ids"][b, t:] = SEMANTIC_EOS
    return w, models["gpt"], batch


def hand_targets(ids: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """INTEROP: the semantic tokens followed by EOS, T+1 per row, padded with EOS."""
    rows = [list(ids[b, : int(n)]) + [SEMANTIC_EOS] * (ids.shape[1] + 1 - int(n)) for b, n in enumerate(lens)]
    return torch.tensor(rows)


def test_gpt_sovits_recipe_ce_is_the_sum_over_all_b_times_t_plus_1_targets():
    _, gpt, batch = fixed("gpt-sovits")
    with torch.no_grad():
        logits = gpt(batch["phoneme_ids"], batch["phoneme_lens"], batch["bert_features"], batch["semantic_ids"], batch["semantic_lens"])
        assert logits.shape == (3, 10, 1025)  # T+1 predicted positions, from position P-1
        targets = hand_targets(batch["semantic_ids"], batch["semantic_lens"])
        logp = logits.log_softmax(-1)
        by_hand = -sum(float(logp[b, t, targets[b, t]]) for b in range(3) for t in range(10))  # 30 targets, padded EOS too
        assert float(s1_losses(gpt, batch)["ce"]) == pytest.approx(by_hand, rel=1e-5)


def test_gpt_sovits_recipe_masks_phonemes_as_upstream_left_padding():
    allowed = attention_allowed(torch.tensor([2]), torch.tensor([1]), P=3, T=1, left_padding_quirk=True)[0].int()
    # keys p0 p1 p2 s0: upstream hides p0 (left padding) though p2 is the padded one; no diagonal
    assert allowed.tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 1]]


def test_gpt_sovits_recipe_dpo_by_hand():
    _, gpt, batch = fixed("gpt-sovits")
    rejected, rlens = make_rejected_upstream(batch["semantic_ids"], torch.Generator().manual_seed(5))
    assert (rlens <= 2 * 9 - 1).all()
    batch = {**batch, "rejected_ids": rejected, "rejected_lens": rlens}
    with torch.no_grad():
        losses = s1_losses(gpt, batch)

        def logp_sum(ids, lens):
            inputs = torch.where(torch.arange(ids.shape[1])[None] < lens[:, None], ids, SEMANTIC_EOS)
            logits = gpt(batch["phoneme_ids"], batch["phoneme_lens"], batch["bert_features"], inputs, lens)
            t = hand_targets(inputs, lens)
            return logits.log_softmax(-1).gather(2, t[..., None])[..., 0].sum(1)  # over every position

        chosen, rej = logp_sum(batch["semantic_ids"], batch["semantic_lens"]), logp_sum(rejected, rlens)
        dpo = float((-F.logsigmoid(0.2 * (chosen - rej))).mean())
        assert float(losses["dpo"]) == pytest.approx(dpo, rel=1e-5, abs=1e-6)
        assert float(losses["total"]) == pytest.approx(float(-chosen.sum()) + dpo, rel=1e-5)


def test_advisor_recipe_means_over_valid_targets_and_right_padding():
    _, gpt, batch = fixed("advisor")
    with torch.no_grad():
        ce = float(s1_losses(gpt, batch)["ce"])
    assert 0 < ce < 20  # nats per token, not a sum
    allowed = attention_allowed(torch.tensor([2]), torch.tensor([1]), P=3, T=1)[0].int()
    assert allowed[3].tolist() == [1, 1, 0, 1]  # s0 sees p0 p1 (the real phonemes) and itself


def test_scaled_adam_first_step_moves_each_tensor_by_lr_times_its_rms():
    w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
    a = torch.nn.Parameter(torch.tensor([0.5]))
    opt = ScaledAdam([w, a], lr=0.002)
    rms = float(w.detach().pow(2).mean().sqrt())
    before_w, before_a = w.detach().clone(), a.detach().clone()
    (w.sum() * 3 - a.sum()).backward()
    opt.step()
    # v/(1-beta2) = g^2 on step 0, so g/sqrt(v) = sign(g): delta = -lr (1-beta1) rms sign(g)
    torch.testing.assert_close(w.detach() - before_w, torch.full((2, 2), -0.002 * 0.1 * rms), rtol=0, atol=1e-6)  # fp32 ulp at 4.0 is 5e-7
    torch.testing.assert_close(a.detach() - before_a, torch.tensor([0.002 * 0.1 * 0.1]), rtol=0, atol=1e-7)  # scalars: lr x 0.1
    state = opt.state_dict()
    again = ScaledAdam([w, a], lr=0.002)
    again.load_state_dict(state)
    assert again.state[w]["step"] == 1


def test_reads_upstream_s1_files_fp16_and_fp32_and_names_the_first_mismatch(tmp_path):
    gpt = S1Workload(size="tiny").build("cpu")["gpt"]
    for dtype in (torch.float16, torch.float32):
        path = tmp_path / f"s1-{dtype}.ckpt"
        weight = write_s1_ckpt(path, size="tiny", dtype=dtype)
        load_init(gpt, path)
        torch.testing.assert_close(gpt.bert_proj.weight, weight["model.bert_proj.weight"].float())
    v1 = tmp_path / "v1.ckpt"
    write_s1_ckpt(v1, size="tiny", phonemes=512)
    with pytest.raises(ValueError, match=r"v1.ckpt: a GPT-SoVITS v1 s1 file \(512-phoneme table\)"):
        load_init(gpt, v1)
    full = tmp_path / "full.ckpt"
    torch.save({"weight": {"model.bert_proj.weight": torch.zeros(512, 1024)}}, full)
    with pytest.raises(ValueError, match=r"full.ckpt: model.bert_proj.weight has shape \[512, 1024\], this model expects \[64, 1024\]"):
        load_init(gpt, full)
    import argparse

    torch.save({"weight": {}, "config": argparse.Namespace(a=1)}, tmp_path / "pickled.ckpt")  # an object, not plain data
    with pytest.raises(ValueError, match=r"pickled.ckpt: .*, not a GPT-SoVITS s1 GPT file \(it pickles objects beyond tensors and plain data"):
        read_s1_file(tmp_path / "pickled.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="junk.ckpt: not a readable torch file"):
        read_s1_file(tmp_path / "junk.ckpt")
    with pytest.raises(ValueError, match="lacks the 'model.' prefix"):
        torch.save({"weight": {"bert_proj.weight": torch.zeros(1)}}, tmp_path / "raw.ckpt")
        read_s1_file(tmp_path / "raw.ckpt")


def test_full_size_pretrained_file_loads_and_exports_as_gpt_weights(tmp_path):
    """Full size (77.6 M) without training: the load and the export are what is checked."""
    gpt = S1Workload().build("cpu")["gpt"]
    write_s1_ckpt(tmp_path / "s1v3.ckpt")
    load_init(gpt, tmp_path / "s1v3.ckpt")
    path = write_gpt_weights(tmp_path / "GPT_weights_v2Pro", "voice", 3, gpt.state_dict(), upstream_config(gpt.cfg))
    saved = torch.load(path, weights_only=True)
    assert path.name == "voice-e3.ckpt" and saved["info"] == "GPT-e3"
    assert saved["config"]["data"]["max_sec"] == 54
    assert {k: saved["config"]["model"][k] for k in ("hidden_dim", "embedding_dim", "head", "n_layer", "vocab_size", "phoneme_vocab_size", "EOS")} == {
        "hidden_dim": 512, "embedding_dim": 512, "head": 16, "n_layer": 24, "vocab_size": 1025, "phoneme_vocab_size": 732, "EOS": 1024}
    got = [[k.removeprefix("model."), list(v.shape)] for k, v in saved["weight"].items()]
    assert got == [[k, list(v.shape)] for k, v in gpt.state_dict().items()]
    assert all(k.startswith("model.") and v.dtype == torch.float16 for k, v in saved["weight"].items())


def test_old_run_checkpoints_are_refused_naming_the_format_version(tmp_path):
    path = tmp_path / "step_00000001.pt"
    save_file(path, {"format": "sovits-advisor-checkpoint", "version": 1, "models": {}})
    with pytest.raises(ValueError, match="checkpoint format version 1 is not supported"):
        load_file(path)
