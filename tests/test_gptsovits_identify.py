"""Saying what a weights file is (trainer/gptsovits/identify.py), on files in GPT-SoVITS's formats."""

from __future__ import annotations

import pickle
import sys
import types

import pytest
import torch
from gptsovits_data import write_s1_ckpt
from test_s2_gptsovits import exported, save, tiny_states

from trainer.gptsovits.identify import expect, identify


def test_gpt_sovits_files_by_kind_and_version(tmp_path):
    write_s1_ckpt(tmp_path / "s1v3.ckpt", size="tiny")
    assert identify(tmp_path / "s1v3.ckpt").describe() == "an s1 GPT file (GPT-SoVITS pretrained .ckpt)"
    gpt = torch.load(tmp_path / "s1v3.ckpt", weights_only=True)
    save({**gpt, "config": {"model": {}}, "info": "GPT-e3"}, tmp_path / "voice-e3.ckpt")
    assert identify(tmp_path / "voice-e3.ckpt").detail == "GPT_weights, GPT-e3"
    for version, header in (("v2", None), ("v2Pro", b"05"), ("v2ProPlus", b"06")):
        g, d = tiny_states(version)
        found = identify(save({"weight": g}, tmp_path / f"s2G{version}.pth", header))
        assert (found.kind, found.version, found.detail) == ("s2G", version, "GPT-SoVITS pretrained")
        found = identify(save(exported(g), tmp_path / f"{version}_e3_s9.pth", header))
        assert (found.kind, found.version, found.detail) == ("s2G", version, "SoVITS_weights export")
        found = identify(save({"model": d, "iteration": 3}, tmp_path / f"D_{version}.pth"))
        assert found.kind == "s2D" and found.version == ("v2" if version == "v2" else "v2Pro/v2ProPlus") and found.detail == "GPT-SoVITS resume file"


def test_v3_v4_generators_and_lora_exports_are_named(tmp_path):
    v3 = {"enc_p.text_embedding.weight": torch.zeros(732, 4), "cfm.estimator.proj_out.weight": torch.zeros(4, 4), "wns1.pre.weight": torch.zeros(2)}
    assert identify(save({"weight": v3}, tmp_path / "s2Gv3.pth")).describe() == "a v3/v4 SoVITS G file (SoVITS_weights export)"
    lora = {"cfm.base_model.model.estimator.transformer_blocks.0.attn.to_q.lora_A.default.weight": torch.zeros(2, 4).half()}
    found = identify(save({"weight": lora, "info": "2epoch_8iteration", "lora_rank": 32}, tmp_path / "x_e2_s8_l32.pth", b"04"))
    assert (found.kind, found.version) == ("lora", "v4") and found.describe() == "a v4 SoVITS LoRA export (rank 32)"


def test_our_files_and_anything_else(tmp_path):
    save({"models": {}, "optimizers": {}, "position": {}, "workload": "s2", "size": "tiny"}, tmp_path / "step_00000004.pt")
    assert identify(tmp_path / "step_00000004.pt").describe() == "a sovits-advisor training checkpoint (workload s2, size tiny)"
    from trainer.workloads.s1 import S1Workload

    save(S1Workload(size="tiny").build("cpu")["gpt"].state_dict(), tmp_path / "gpt.pt")
    assert identify(tmp_path / "gpt.pt").kind == "export"
    (tmp_path / "train.py").write_text("print('hi')\n")
    assert identify(tmp_path / "train.py").detail.startswith("not a torch file")
    save([1, 2], tmp_path / "list.pt")
    assert identify(tmp_path / "list.pt").describe() == "not a weights file this trainer reads (a torch file holding a list)"
    with pytest.raises(ValueError, match="no such file"):
        identify(tmp_path / "missing.pth")


def test_a_pickled_class_is_read_as_data_never_run(tmp_path, capsys):
    """GPT-SoVITS pickles its HParams; a class with a __reduce__ that would run code must not run."""
    module = types.ModuleType("utils")

    class HParams:
        def __reduce__(self):
            return (print, ("pwned",))

    HParams.__module__ = "utils"
    module.HParams = HParams
    sys.modules["utils"] = module
    try:
        g, _ = tiny_states("v2")
        save({"weight": g, "config": HParams()}, tmp_path / "s2G.pth")
    finally:
        del sys.modules["utils"]
    found = identify(tmp_path / "s2G.pth")
    assert (found.kind, found.version) == ("s2G", "v2")
    assert "pwned" not in capsys.readouterr().out  # the pickled call was never made
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "s2G.pth", weights_only=True)  # what plain loading refuses


def test_expect_names_what_was_found_and_what_the_workload_needs(tmp_path):
    write_s1_ckpt(tmp_path / "s1v3.ckpt", size="tiny")
    with pytest.raises(ValueError, match=r"s1v3.ckpt: an s1 GPT file \(GPT-SoVITS pretrained .ckpt\); --workload s2 needs a SoVITS G file"):
        expect(tmp_path / "s1v3.ckpt", "s2G", "s2")
    assert expect(tmp_path / "s1v3.ckpt", "s1", "s1").kind == "s1"


def test_the_s1_reader_names_a_sovits_file_for_what_it_is(tmp_path):
    from trainer.gptsovits.s1_files import read_s1_file

    g, _ = tiny_states("v2Pro")
    for header in (None, b"05"):  # plain zip, and the v2Pro header (not even a zip for torch.load)
        path = save({"weight": g}, tmp_path / "s2Gv2Pro.pth", header)
        with pytest.raises(ValueError, match=r"s2Gv2Pro.pth: a v2Pro SoVITS G file \(GPT-SoVITS pretrained\), not a GPT-SoVITS s1 GPT file"):
            read_s1_file(path)
