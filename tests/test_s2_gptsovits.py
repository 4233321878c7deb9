"""GPT-SoVITS's own s2 files in and out: state-dict layout per version, pretrained / resume /
exported files (with and without the 05/06 header) -> fine-tune -> SoVITS_weights export."""

from __future__ import annotations

import io
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from train_data import demo_dataset, kinds, one_thread, read_events, tiny_config  # noqa: F401
from trainer.gptsovits.s2_files import read_s2_file, restore_header
from trainer.loop import train
from trainer.rundir import RunDir
from trainer.workloads.s2 import S2Workload

REFERENCE = Path(__file__).parent / "data" / "gpt-sovits"  # shipped test data: upstream's state-dict manifests
COUNTS = {"v2": (51_310_080, 46_747_132), "v2Pro": (79_428_096, 63_189_440), "v2ProPlus": (98_338_432, 63_189_440)}
VERSIONS = tuple(COUNTS)


def manifest(name: str) -> list:
    return json.loads((REFERENCE / name).read_text())


@pytest.mark.parametrize("version", VERSIONS)
def test_full_size_state_dicts_are_gpt_sovits_key_for_key(version):
    workload = S2Workload("full", version=version)
    models = workload.build("meta")
    g_params, d_params = COUNTS[version]
    assert sum(p.numel() for p in models["generator"].parameters()) == g_params
    assert sum(p.numel() for p in models["discriminator"].parameters()) == d_params
    for part, name in (("generator", f"s2G_{version}_state_dict.json"), ("discriminator", f"s2D_{version}_state_dict.json")):
        ours = [[k, list(t.shape), str(t.dtype).removeprefix("torch.")] for k, t in models[part].state_dict().items()]
        assert ours == manifest(name), part  # keys, shapes, dtypes and order


@pytest.mark.parametrize("version", VERSIONS)
def test_one_tiny_training_step_per_version(version):
    torch.manual_seed(0)
    workload = S2Workload("tiny", version=version)
    models = workload.build("cpu")
    batch = workload.synthetic_batch(1, 0.8, generator=torch.Generator().manual_seed(0))
    assert ("sv_emb" in batch) == (version != "v2")
    result = workload.train_step(models, workload.make_optimizers(models), batch, "fp32")
    assert all(math.isfinite(v) for v in result.values()), result


def test_gpt_sovits_recipe_freezes_the_quantizer():
    torch.manual_seed(0)
    workload = S2Workload("tiny", version="v2Pro", recipe="gpt-sovits")
    models = workload.build("cpu")
    g = models["generator"]
    codebook = g.quantizer.embed.clone()
    batch = workload.synthetic_batch(1, 0.8, generator=torch.Generator().manual_seed(0))
    result = workload.train_step(models, workload.make_optimizers(models), batch, "fp32")
    assert result["commit"] == 0.0 and torch.equal(codebook, g.quantizer.embed)
    assert not any(p.requires_grad for p in g.ssl_proj.parameters())


# --- files in GPT-SoVITS's formats ---------------------------------------------------------
def tiny_states(version: str, seed: int = 3) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    models = S2Workload("tiny", version=version).build("cpu")
    return models["generator"].state_dict(), models["discriminator"].state_dict()


def save(obj, path: Path, header: bytes | None = None) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    path.write_bytes(header + data[2:] if header else data)
    return path


def exported(g: dict) -> dict:
    return {"weight": {k: v.half() for k, v in g.items() if "enc_q" not in k}, "config": {"model": {}}, "info": "3epoch_9iteration"}


def fine_tune(dataset: Path, run: Path, version: str, init: Path, init_d: Path | None = None, root: Path | None = None) -> list[dict]:
    cfg = tiny_config(dataset, workload="s2", version=version, init=str(init), init_d=str(init_d) if init_d else None,
                      gpt_sovits_root=str(root) if root else None, max_steps=2, **{"batch.micro": 2, "validation.every_epochs": 0})
    assert train(cfg, RunDir(run)) == "max_steps"
    return read_events(run)


def check_export(run: Path, version: str, expected_keys: list[str]) -> Path:
    files = list((run / "export" / f"SoVITS_weights_{version}").glob("*.pth"))
    assert len(files) == 1 and files[0].name.startswith(f"{run.name}_e")
    data = files[0].read_bytes()
    assert data[:2] == {"v2": b"PK", "v2Pro": b"05", "v2ProPlus": b"06"}[version]
    obj = torch.load(io.BytesIO(restore_header(data)), map_location="cpu", weights_only=True)
    assert list(obj["weight"]) == [k for k in expected_keys if "enc_q" not in k]
    assert {v.dtype for v in obj["weight"].values()} == {torch.float16}
    assert obj["config"]["model"]["version"] == version and obj["config"]["data"]["hop_length"] == 640
    assert obj["info"].endswith("iteration") and "epoch_" in obj["info"]
    return files[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return demo_dataset(tmp_path_factory)


def test_pretrained_files_beside_each_other_fine_tune_and_export(dataset, tmp_path, one_thread):  # noqa: F811
    g, d = tiny_states("v2Pro")
    init = save({"weight": g, "info": "pretrained"}, tmp_path / "s2Gv2Pro.pth")
    save({"weight": d}, tmp_path / "s2Dv2Pro.pth")
    events = fine_tune(dataset, tmp_path / "run", "v2Pro", init, root=tmp_path / "GPT-SoVITS")
    start = kinds(events, "start")[0]["init"]
    notes = start["kind"].split("; ")
    assert start["path"] == str(init) and start["sha256"] is None  # `advisor train` computes it; the bare loop does not
    assert any("generator from" in n and "pretrained" in n for n in notes) and any("discriminator from" in n for n in notes)
    out = check_export(tmp_path / "run", "v2Pro", list(g))
    copied = tmp_path / "GPT-SoVITS" / "SoVITS_weights_v2Pro" / out.name
    assert copied.read_bytes() == out.read_bytes()  # --gpt-sovits-root: the user's folder gets the same file
    assert kinds(events, "export")[-1]["copied_to"] == [str(copied)]  # and the export event says where


def test_resume_files_fine_tune(dataset, tmp_path, one_thread):  # noqa: F811
    g, d = tiny_states("v2")
    init = save({"model": g, "iteration": 4, "optimizer": {}, "learning_rate": 1e-4}, tmp_path / "G_120.pth")
    save({"model": d, "iteration": 4, "optimizer": {}, "learning_rate": 1e-4}, tmp_path / "D_120.pth")
    fine_tune(dataset, tmp_path / "run", "v2", init)
    check_export(tmp_path / "run", "v2", list(g))


@pytest.mark.parametrize("version, header", [("v2ProPlus", b"06"), ("v2", None)])
def test_exported_files_fine_tune_with_a_fresh_enc_q(dataset, tmp_path, one_thread, version, header):  # noqa: F811
    g, d = tiny_states(version)
    init = save(exported(g), tmp_path / "voice_e3_s9.pth", header)
    events = fine_tune(dataset, tmp_path / "run", version, init, init_d=save({"weight": d}, tmp_path / "s2D.pth"))
    assert "enc_q starts from" in kinds(events, "start")[0]["init"]["kind"]
    out = check_export(tmp_path / "run", version, list(g))
    again = read_s2_file(out)  # our export reads back as GPT-SoVITS's exported kind
    assert (again.kind, again.version, again.header) == ("exported", version, None if version == "v2" else version)


def test_a_pickled_config_class_loads_without_importing_it(tmp_path):
    g, _ = tiny_states("v2Pro")
    module = types.ModuleType("gptsovits_fake_utils")

    class HParams:
        def __init__(self, **kw):
            for k, v in kw.items():
                setattr(self, k, HParams(**v) if isinstance(v, dict) else v)

    HParams.__module__, HParams.__qualname__ = module.__name__, "HParams"
    module.HParams = HParams
    sys.modules[module.__name__] = module
    try:
        obj = {**exported(g), "config": HParams(model={"version": "v2Pro"}, data={"hop_length": 640})}
        path = save(obj, tmp_path / "x.pth", b"05")
    finally:
        del sys.modules[module.__name__]
    file = read_s2_file(path)
    assert file.config == {"model": {"version": "v2Pro"}, "data": {"hop_length": 640}}
    assert (file.kind, file.version) == ("exported", "v2Pro")


# --- damage and mismatches: one line naming the file ---------------------------------------
def test_damaged_and_foreign_files_are_one_line_errors(tmp_path):
    g, d = tiny_states("v2Pro")
    good = save({"weight": g}, tmp_path / "s2G.pth", b"05").read_bytes()
    cases = {
        "truncated.pth": good[: len(good) // 2],
        "nul.pth": b"\0" * 4096,
        "text.pth": b"not a model at all\n",
        "empty.pth": b"",
        "holed.pth": good[:2000] + b"\0" * 4000 + good[6000:],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError) as err:
            read_s2_file(tmp_path / name, "init")
        message = str(err.value)
        assert str(tmp_path / name) in message and "\n" not in message, message
    save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds a list"):
        read_s2_file(tmp_path / "list.pth")


def test_version_mismatches_name_both_versions(tmp_path):
    g2, _ = tiny_states("v2")
    workload = S2Workload("tiny", version="v2Pro")
    models = workload.build("meta")
    with pytest.raises(ValueError, match=r"v2 generator, but this run trains v2Pro"):
        workload.load_init(models, str(save({"weight": g2}, tmp_path / "s2G.pth")))
    with pytest.raises(ValueError, match=r"header says v2ProPlus but the weights are a v2 generator"):
        read_s2_file(save({"weight": g2}, tmp_path / "h.pth", b"06"))
    full = S2Workload("full", version="v2Pro").build("meta")
    gp, _ = tiny_states("v2Pro")
    with pytest.raises(ValueError, match="size"):  # tiny file, full model
        S2Workload("full", version="v2Pro").load_init(full, str(save({"weight": gp}, tmp_path / "s2Gp.pth")))


def test_s2_checkpoint_for_prepare_accepts_exported_headed_files(tmp_path):
    from trainer.data.features import SemanticTokenizer

    torch.manual_seed(1)
    g = S2Workload("full", version="v2Pro").build("cpu")["generator"].state_dict()
    path = save(exported(g), tmp_path / "voice_e8_s100.pth", b"05")
    tok = SemanticTokenizer(path)
    assert torch.equal(tok.module.quantizer.embed, g["quantizer.vq.layers.0._codebook.embed"].half().float())


def test_gpt_sovits_recipe_steps_d_first_in_the_loop(dataset, tmp_path, one_thread):  # noqa: F811
    cfg = tiny_config(dataset, workload="s2", version="v2", recipe="gpt-sovits", max_steps=2,
                      **{"batch.micro": 2, "validation.every_epochs": 0})
    assert train(cfg, RunDir(tmp_path / "run")) == "max_steps"
    events = read_events(tmp_path / "run")
    start = kinds(events, "start")[0]
    assert start["discriminator_first"] is True and start["schedule"]["kind"] == "exponential_per_epoch"
    steps = kinds(events, "step")
    assert steps and all(math.isfinite(s["grad_norm"]["discriminator"]) and s["losses"]["commit"] == 0.0 for s in steps)
    assert {lr for s in steps for lr in s["lr"].values()} <= {1e-4 * 0.999875, 0.4e-4 * 0.999875}  # epoch 0: gamma^1


def test_load_init_copies_every_tensor_and_leaves_enc_q_of_an_export(tmp_path):
    g, d = tiny_states("v2ProPlus", seed=7)
    workload = S2Workload("tiny", version="v2ProPlus")
    torch.manual_seed(0)
    models = workload.build("cpu")
    fresh_enc_q = {k: v.clone() for k, v in models["generator"].state_dict().items() if "enc_q" in k}
    save({"weight": d}, tmp_path / "D_5.pth")
    workload.load_init(models, str(save({"model": g, "iteration": 5}, tmp_path / "G_5.pth")))
    assert all(torch.equal(v, g[k]) for k, v in models["generator"].state_dict().items())
    assert all(torch.equal(v, d[k]) for k, v in models["discriminator"].state_dict().items())
    torch.manual_seed(0)
    models = workload.build("cpu")
    notes = workload.load_init(models, str(save(exported(g), tmp_path / "v_e1_s2.pth", b"06")))
    state = models["generator"].state_dict()
    assert all(torch.equal(state[k], v) for k, v in fresh_enc_q.items())
    assert all(torch.equal(state[k], g[k].half().float()) for k in g if "enc_q" not in k)
    assert any("enc_q starts" in n for n in notes) and any("discriminator starts" in n for n in notes)


def test_checkpoints_of_the_old_layout_are_refused_naming_the_format_version(tmp_path):
    from trainer.loop.checkpoint import Checkpointer, load_file

    torch.save({"format": "sovits-advisor-checkpoint", "version": 1, "models": {}}, tmp_path / "step_00000001.pt")
    with pytest.raises(ValueError, match=r"step_00000001.pt: checkpoint format version 1 is not supported \(expected 2"):
        load_file(tmp_path / "step_00000001.pt")
    run = RunDir(tmp_path / "run")
    run.make()
    run.manifest.write_text(json.dumps({"format": "sovits-advisor-run", "version": 1, "checkpoints": []}))
    with pytest.raises(ValueError, match="version 1"):
        Checkpointer(run, 3, "val_mel_l1")
