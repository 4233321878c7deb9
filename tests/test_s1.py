"""S1Workload: real (tiny) models, no mocks; the full size only on the meta device."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.audio_constants import SEMANTIC_EOS
from trainer.workloads import get_workload
from trainer.workloads.s1 import S1Workload, attention_allowed, make_rejected, s1_losses, teacher_forcing

FULL_PARAMETERS = 77_606_402  # GPT-SoVITS v2 s1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(attention: str = "sdpa", seed: int = 0):
    w = S1Workload(size="tiny", attention=attention)
    torch.manual_seed(seed)
    return w, w.build("cpu")


def padded_batch(w: S1Workload, dpo: bool = False) -> dict[str, torch.Tensor]:
    """3 samples of 2 s, the last two shorter than the padded length."""
    b = w.synthetic_batch(3, 2.0, dpo=dpo, generator=gen(1))
    b["phoneme_lens"] = torch.tensor([24, 17, 9])
    b["semantic_lens"] = torch.tensor([50, 31, 12])
    b["bert_features"] = torch.randn(b["bert_features"].shape, generator=gen(2))
    return b


# --- description ------------------------------------------------------------------------


def test_full_size_parameter_count_and_modules():
    d = S1Workload().describe()
    assert d["name"] == "s1"
    assert d["parameters"]["total"] == FULL_PARAMETERS
    assert d["modules"] == {
        "bert_proj": 524_800,
        "ar_text_embedding": 374_784,
        "ar_text_position": 1,
        "ar_audio_embedding": 524_800,
        "ar_audio_position": 1,
        "h": 75_657_216,
        "ar_predict_layer": 524_800,
    }


def test_registry_builds_s1_with_attention_option():
    w = get_workload("s1", size="tiny", attention="gpt_sovits")
    assert isinstance(w, S1Workload) and w.metric_name == "val_ce"
    with pytest.raises(ValueError, match="'flash'"):
        S1Workload(attention="flash")


@pytest.mark.parametrize("attention", ["sdpa", "gpt_sovits"])
def test_full_size_forward_backward_traces_on_meta(attention):
    w = S1Workload(attention=attention)
    models = w.build("meta")
    batch = w.synthetic_batch(2, 10.0, dpo=True, device="meta", generator=gen())
    result = w.forward_backward(models, batch, "fp32")
    assert set(result.losses) == {"ce", "dpo", "total"} and result.samples == 2
    assert all(p.grad is not None and p.grad.is_meta for p in models.parameters())
    assert w.audio_seconds(batch) == pytest.approx(20.0)


# --- data -------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds,T,P", [(5, 125, 60), (10, 250, 120), (30, 750, 360)])
def test_synthetic_batch_shapes_scale_with_slice_length(seconds, T, P):
    b = S1Workload(size="tiny").synthetic_batch(2, seconds, generator=gen())
    assert b["phoneme_ids"].shape == (2, P) and b["phoneme_ids"].dtype == torch.int64
    assert b["bert_features"].shape == (2, 1024, P) and b["bert_features"].dtype == torch.float32
    assert b["semantic_ids"].shape == (2, T) and b["semantic_ids"].dtype == torch.int64
    assert b["phoneme_lens"].tolist() == [P, P] and b["semantic_lens"].tolist() == [T, T]
    assert b["semantic_ids"].max() < SEMANTIC_EOS and "rejected_ids" not in b
    assert S1Workload(size="tiny").audio_seconds(b) == pytest.approx(2 * seconds)


def test_dpo_batch_has_rejected_ids():
    b = S1Workload(size="tiny").synthetic_batch(4, 2.0, dpo=True, generator=gen())
    assert b["rejected_ids"].dtype == torch.int64 and b["rejected_lens"].shape == (4,)
    # padded to the worst case 2T (T = 50 tokens for 2 s) so DPO memory is deterministic
    assert b["rejected_ids"].shape[1] == 2 * 50 >= b["rejected_lens"].max()


@pytest.mark.parametrize("seed", range(5))
def test_rejected_sequences_are_longer_and_shorter(seed):
    ids = torch.randint(0, SEMANTIC_EOS, (4, 40), generator=gen(seed))
    lens = torch.tensor([40, 33, 20, 2])
    rejected, rlens = make_rejected(ids, lens, gen(seed))
    assert (rlens > lens).any() and (rlens < lens).any()
    assert (rlens >= 1).all() and (rlens <= 2 * lens).all()
    for i, n in enumerate(rlens.tolist()):
        assert (rejected[i, n:] == SEMANTIC_EOS).all()  # padded with EOS


def test_teacher_forcing_targets_end_with_eos():
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, SEMANTIC_EOS, SEMANTIC_EOS]])
    inputs, targets, valid = teacher_forcing(ids, torch.tensor([4, 2]))
    assert inputs.tolist() == ids.tolist()
    # T+1 targets: the last phoneme predicts the first token; EOS after the last one and at padding
    assert targets.tolist() == [[5, 6, 7, 8, 1024], [9, 10, 1024, 1024, 1024]]
    assert valid.tolist() == [[True] * 5, [True, True, True, False, False]]


def test_attention_mask_rules():
    allowed = attention_allowed(torch.tensor([2]), torch.tensor([2]), P=3, T=3)[0].int()
    # rows: queries p0 p1 p2(pad) s0 s1 s2(pad); columns: keys in the same order
    assert allowed.tolist() == [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],  # padded query: valid phonemes + itself
        [1, 1, 0, 1, 0, 0],
        [1, 1, 0, 1, 1, 0],
        [1, 1, 0, 1, 1, 1],  # padded query: as a semantic token, + itself
    ]


@pytest.mark.parametrize("bad", [dict(batch_size=0, slice_seconds=5), dict(batch_size=2, slice_seconds=0), dict(batch_size=2, slice_seconds=60)])
def test_bad_input_raises_naming_the_value(bad):
    value = bad["slice_seconds"] if bad["batch_size"] else bad["batch_size"]
    with pytest.raises(ValueError, match=rf"\b{value}\b"):
        S1Workload(size="tiny").synthetic_batch(**bad)


# --- steps ------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_step_changes_weights(precision):
    w, models = tiny()
    before = [p.detach().clone() for p in models.parameters()]
    out = w.train_step(models, w.make_optimizers(models), w.synthetic_batch(2, 2.0, generator=gen()), precision)
    assert math.isfinite(out["ce"]) and out["total"] == out["ce"]
    assert math.isfinite(out["grad_norm/gpt"])
    assert all(not torch.equal(a, p) for a, p in zip(before, models.parameters()))


def test_dpo_step_reports_dpo_and_total():
    w, models = tiny()
    out = w.train_step(models, w.make_optimizers(models), w.synthetic_batch(2, 2.0, dpo=True, generator=gen()), "fp32")
    assert math.isfinite(out["dpo"]) and out["total"] == pytest.approx(out["ce"] + out["dpo"])


def test_loss_scale_scales_gradients():
    w, models = tiny()
    models.eval()  # no dropout, so both passes are identical
    batch = w.synthetic_batch(2, 1.0, generator=gen())
    w.forward_backward(models, batch, "fp32")
    g1 = models["gpt"].ar_predict_layer.weight.grad.clone()
    models.zero_grad()
    w.forward_backward(models, batch, "fp32", loss_scale=0.25)
    torch.testing.assert_close(models["gpt"].ar_predict_layer.weight.grad, 0.25 * g1)


def test_fixed_batch_overfits():
    w, models = tiny()
    opt = w.make_optimizers(models, lr={"gpt": 3e-3})
    batch = w.synthetic_batch(2, 1.0, generator=gen())
    first = w.train_step(models, opt, batch, "fp32")["total"]
    for _ in range(40):
        last = w.train_step(models, opt, batch, "fp32")["total"]
    assert last < first / 2


def test_validation_returns_float_and_restores_train_mode():
    w, models = tiny()
    val = w.validation_step(models, padded_batch(w))
    assert isinstance(val, float) and math.isfinite(val)
    assert models.training


def test_padding_does_not_change_valid_logits():
    w, models = tiny()
    models.eval()
    b = padded_batch(w)
    gpt = models["gpt"]
    with torch.no_grad():
        full = gpt(b["phoneme_ids"], b["phoneme_lens"], b["bert_features"], b["semantic_ids"], b["semantic_lens"])
        P, T = int(b["phoneme_lens"][2]), int(b["semantic_lens"][2])
        alone = gpt(
            b["phoneme_ids"][2:, :P], b["phoneme_lens"][2:], b["bert_features"][2:, :, :P],
            b["semantic_ids"][2:, :T], b["semantic_lens"][2:],
        )
    torch.testing.assert_close(full[2, : T + 1], alone[0], atol=1e-4, rtol=1e-4)


def test_sdpa_and_gpt_sovits_attention_agree():
    w_sdpa, m_sdpa = tiny("sdpa")
    w_ref, m_ref = tiny("gpt_sovits")
    m_ref.load_state_dict(m_sdpa.state_dict())
    m_sdpa.eval(), m_ref.eval()
    batch = padded_batch(w_sdpa, dpo=True)
    with torch.no_grad():
        a = s1_losses(m_sdpa["gpt"], batch)
        b = s1_losses(m_ref["gpt"], batch)
    for key in ("ce", "dpo", "total"):
        assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5)
    assert w_sdpa.validation_step(m_sdpa, batch) == pytest.approx(w_ref.validation_step(m_ref, batch), abs=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("attention", ["sdpa", "gpt_sovits"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_mixed_precision_step(attention, precision):
    from trainer.workload import make_scaler

    w = S1Workload(size="tiny", attention=attention)
    models = w.build("cuda")
    batch = w.synthetic_batch(2, 2.0, dpo=True, device="cuda", generator=gen())
    out = w.train_step(models, w.make_optimizers(models), batch, precision, make_scaler(precision, "cuda"))
    assert all(math.isfinite(out[k]) for k in ("ce", "dpo", "total"))
