"""GPT-SoVITS v3 / v4 s2: SynthesizerTrnV3 key for key, peft LoRA as upstream, the flow-matching
step of both recipes, the deterministic validation metric, and the files in and out.

Full size only on the meta device (382.8 M parameters are never allocated here)."""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path

import pytest
import torch

from train_data import one_thread  # noqa: F401
from trainer.gptsovits import s2v3_files
from trainer.sovits import lora
from trainer.sovits.config import v3_config
from trainer.sovits.v3 import PARTS, SynthesizerTrnV3
from trainer.workloads import get_workload
from trainer.workloads.s2v3 import S2V3Workload

REFERENCE = Path(__file__).parent / "data" / "gpt-sovits"  # shipped copies of upstream's manifests
COUNTS = json.loads((REFERENCE / "s2_v3v4_lora_counts.json").read_text())
NEVER_GET_GRAD = 618_340  # ref_enc + linear_mel (INTEROP-v3v4.md section 2)


def lora_export(workload, state, export_dir, run, epoch, step):
    """What the loop's export (trainer/loop/export.py `sovits_export`) writes for a v3/v4 run."""
    return s2v3_files.write_lora_export(export_dir, run, epoch, step, state, workload.version, workload.config, workload.lora_rank, workload.base,
                                        workload.grad_ckpt)


def manifest(name: str) -> list:
    return json.loads((REFERENCE / name).read_text())


def rows(state: dict, dtype: str | None = None) -> list:
    return [[k, list(t.shape), dtype or str(t.dtype).removeprefix("torch.")] for k, t in state.items()]


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_full_size_model_is_gpt_sovits_key_for_key(version):
    with torch.device("meta"):
        model = SynthesizerTrnV3(v3_config(version))
    assert rows(model.state_dict()) == manifest(f"s2G_{version}_state_dict.json")  # names, shapes, dtypes, order
    assert sum(p.numel() for p in model.parameters()) == COUNTS["model"]["parameters"]
    for part, count in COUNTS["model"]["per_module_parameters"].items():
        assert sum(p.numel() for p in getattr(model, part).parameters()) == count, part


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_rank_32_export_holds_upstream_trainable_tensors_under_peft_names(version):
    workload = S2V3Workload("full", version=version, recipe="gpt-sovits")
    model = workload.build("meta")["generator"]
    state = model.state_dict()
    wrapped = COUNTS["lora_r32_after_peft_wrap"]
    assert len(state) == wrapped["state_dict_keys"] and sum(p.numel() for p in model.parameters()) == wrapped["parameters"]
    export = {k: v for k, v in state.items() if s2v3_files.exported(k)}
    assert rows(export, "float16") == manifest(f"s2_{version}_lora_r32_trainable.json")
    # upstream's rule (every key that is not a frozen parameter) gives the same set
    frozen = lora.frozen_parameter_names(model)
    assert list(export) == [k for k in state if k not in frozen]
    for part, counts in wrapped["per_module"].items():
        params = list(getattr(model, part).parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        assert (sum(p.numel() for p in params), trainable) == (counts["total"], counts["trainable"]), part


@pytest.mark.parametrize("rank", [16, 32, 64, 128])
def test_counts_per_rank_and_recipe(rank):
    expected = COUNTS["per_rank"][str(rank)]
    for recipe, never in (("gpt-sovits", 0), ("advisor", NEVER_GET_GRAD)):
        d = S2V3Workload("full", version="v4", recipe=recipe, lora_rank=rank).describe()
        assert d["modules"]["lora"] == expected["lora"] == lora.lora_count(rank)
        assert d["parameters"]["trainable"] == expected["trainable"] - never  # advisor: ref_enc, linear_mel frozen
        assert d["parameters"]["total"] - d["parameters"]["trainable"] == expected["frozen"] + never


def test_registry_names_and_synthetic_shapes_follow_upstream_collate():
    assert isinstance(get_workload("s2-v3", "tiny"), S2V3Workload) and get_workload("s2", "tiny", version="v4").version == "v4"
    for version, mel in (("v4", (1004, 1000)), ("v3", (945, 937))):  # INTEROP-v3v4.md section 4, 10 s clips
        batch = S2V3Workload("full", version=version).synthetic_batch(1, 10.0, device="meta")
        assert batch["spec"].shape[-1] == 502 and batch["ssl"].shape[-1] == 502
        assert batch["mel"].shape[-1] == mel[0] and batch["mel_lens"].shape == (1,)
    assert S2V3Workload("tiny", version="v3").synthetic_batch(1, 10.0)["mel_lens"].item() == 937


def tiny(version="v4", recipe="advisor", seed=0, rank=4) -> tuple[S2V3Workload, torch.nn.ModuleDict, dict]:
    torch.manual_seed(seed)
    workload = S2V3Workload("tiny", version=version, recipe=recipe, lora_rank=rank)
    models = workload.build("cpu")
    batch = workload.synthetic_batch(2, 0.6, generator=torch.Generator().manual_seed(seed))
    batch["mel_lens"][1] -= 7  # one shorter clip: padding excluded from the loss
    return workload, models, batch


@pytest.mark.parametrize("recipe", ["gpt-sovits", "advisor"])
def test_one_step_trains_exactly_the_upstream_parts(recipe, monkeypatch, one_thread):  # noqa: F811
    workload, models, batch = tiny("v3", recipe)
    g = models["generator"]
    frozen = {n: p.clone() for n, p in g.named_parameters() if not p.requires_grad}
    monkeypatch.setattr(random, "random", lambda: 0.0)  # take the extra passes
    grad_modes = []
    g.cfm.base_model.model.estimator.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    optimizers = workload.make_optimizers(models)
    seen = []  # the gradients at the optimiser step (OptimizerSet's step drops them after it)
    optimizers["generator"].register_step_pre_hook(lambda *_: seen.append({n: p.grad for n, p in g.named_parameters() if p.requires_grad}))
    result = workload.train_step(models, optimizers, batch, "fp32", max_grad_norm=1.0)
    assert math.isfinite(result["total"]) and result["grad_norm/generator"] > 0
    # upstream builds the two extra graphs and drops them; ours runs them under no_grad
    assert grad_modes == ([True, True, True] if recipe == "gpt-sovits" else [False, False, True])
    (grads,) = seen
    no_grad = {n.split(".")[0] for n, grad in grads.items() if grad is None}
    assert no_grad == ({"ref_enc", "linear_mel"} if recipe == "gpt-sovits" else set())  # never reached upstream
    lora_a = [grad for n, grad in grads.items() if n.endswith("lora_A.default.weight")]
    assert lora_a and all(a is not None and not a.any() for a in lora_a)  # B starts at zero: A's first gradient is 0
    assert all(torch.equal(p, frozen[n]) for n, p in g.named_parameters() if n in frozen)
    group = optimizers["generator"].param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-4, (0.8, 0.99), 1e-9, 0.01)


def test_the_extra_passes_change_the_target_only_with_probability_0_3(monkeypatch, one_thread):  # noqa: F811
    workload, models, batch = tiny("v4")
    models.eval()  # no dropout: the loss depends on the draws only
    torch.manual_seed(5)
    monkeypatch.setattr(random, "random", lambda: 0.5)  # 0.5 >= 0.3: no extra passes
    plain = workload.loss(models, batch, "fp32").item()
    torch.manual_seed(5)
    monkeypatch.setattr(random, "random", lambda: 0.1)
    extra = workload.loss(models, batch, "fp32").item()
    assert math.isfinite(extra) and extra != plain


def test_validation_metric_is_deterministic_and_tracks_the_weights(one_thread):  # noqa: F811
    workload, models, batch = tiny("v3")
    first = workload.validation_step(models, batch)
    assert workload.validation_step(models, batch) == first and models["generator"].training
    _, again, _ = tiny("v3")  # a second build from the same seed: the same value
    assert workload.validation_step(again, batch) == first
    workload.train_step(models, workload.make_optimizers(models), batch, "fp32")
    assert workload.validation_step(models, batch) != first


def test_loss_excludes_the_prompt_and_the_padding():
    from trainer.sovits.cfm import masked_mse

    predicted = torch.zeros(2, 3, 6)
    target = torch.ones(2, 3, 6)
    target[0, :, :2] = 100.0  # prompt frames of sample 0
    target[1, :, 4:] = 100.0  # padding of sample 1
    frames = torch.arange(6)[None]
    scored = ((frames >= torch.tensor([[2], [0]])) & (frames < torch.tensor([[6], [4]])))[:, None]
    assert masked_mse(predicted, target, scored).item() == 1.0


# --- files --------------------------------------------------------------------------------
def save(obj, path: Path, header: bytes | None = None) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + data[2:] if header else data)
    return path


def plain_state(version="v4", seed=3) -> dict:
    torch.manual_seed(seed)
    return SynthesizerTrnV3(v3_config(version, "tiny")).state_dict()


def read_export(path: Path) -> dict:
    """A v3/v4 LoRA export's dict (its 2-byte header 03/04 put back to the zip's "PK")."""
    return torch.load(io.BytesIO(b"PK" + Path(path).read_bytes()[2:]), map_location="cpu", weights_only=True)


def load_as_upstream_inference(base_path: Path, export_path: Path, version: str, size: str = "tiny") -> tuple[SynthesizerTrnV3, dict]:
    """GPT-SoVITS's inference: plain model, base strict=False, peft wrap at the file's rank, the
    export strict=False with no trainable key missing or unexpected, merge. (merged model, the
    wrapped state before the merge)."""
    obj = read_export(export_path)
    model = SynthesizerTrnV3(v3_config(version, size))
    model.load_state_dict(torch.load(base_path, weights_only=True)["weight"], strict=False)
    lora.add_lora(model, obj["lora_rank"])
    result = model.load_state_dict(obj["weight"], strict=False)
    assert result.unexpected_keys == []
    assert set(result.missing_keys) == lora.frozen_parameter_names(model)  # exactly the frozen base parameters
    wrapped = {k: v.clone() for k, v in model.state_dict().items()}
    lora.merge_lora(model)
    return model, wrapped


def test_export_loads_back_as_upstream_inference_loads_it(tmp_path, one_thread):  # noqa: F811
    """Done-when: base + the export, strict=False with no trainable key missing or unexpected, LoRA merged."""
    root = tmp_path / "GPT-SoVITS"
    base = plain_state("v4")
    base_path = save({"weight": {k: v.half() for k, v in base.items()}, "config": {"model": {"version": "v4"}}}, root / s2v3_files.PRETRAINED_PATH["v4"])
    workload, models, batch = tiny("v4", "gpt-sovits", rank=8)
    notes = workload.load_init(models, str(base_path))
    assert any("config model.version" in n for n in notes)
    for _ in range(2):
        workload.train_step(models, workload.make_optimizers(models), batch, "fp32")
    trained = models["generator"].state_dict()
    out = Path(lora_export(workload, trained, root, "voice", 3, 9))  # as --gpt-sovits-root gets it
    assert out == root / "SoVITS_weights_v4" / "voice_e3_s9_l8.pth"
    data = out.read_bytes()
    assert data[:4] == b"04\x03\x04" and not list(out.parent.glob("*.tmp*"))
    obj = read_export(out)  # weights_only: config is plain data
    assert list(obj) == ["weight", "config", "info", "lora_rank"] and obj["lora_rank"] == 8 and obj["info"] == "3epoch_9iteration"
    assert {v.dtype for v in obj["weight"].values()} == {torch.float16}
    assert obj["config"]["model"]["gin_channels"] == 32 and obj["config"]["data"]["filter_length"] == 2048
    assert obj["config"]["train"]["segment_size"] == 20480 and obj["config"]["model"]["version"] == "v4"

    model, wrapped = load_as_upstream_inference(base_path, out, "v4")
    merged = model.state_dict()
    assert list(merged) == list(base)  # the plain names again
    adapted = [k for k in merged if k.endswith(tuple(f"attn.{t}.weight" for t in lora.TARGETS))]
    assert len(adapted) == 4 * 2
    for key in adapted:
        expected = wrapped[lora.WRAPPED_PREFIX + key.removeprefix("cfm.").replace(".weight", ".base_layer.weight")] + lora.merged_delta(wrapped, key)
        assert torch.allclose(merged[key], expected, atol=1e-6), key
        assert torch.equal(wrapped[key.replace("cfm.", lora.WRAPPED_PREFIX).replace(".weight", ".base_layer.weight")], base[key].half().float())
        assert not torch.equal(merged[key], base[key].half().float())  # the adapter did something
    assert torch.equal(merged["wns1.pre.weight"], trained["wns1.pre.weight"].half().float())

    # and our own --init takes the export over the base found in the GPT-SoVITS folder
    _, again, _ = tiny("v4", rank=8, seed=1)
    notes = get_workload("s2-v4", "tiny", lora_rank=8).load_init(again, str(out))
    assert any("header 04" in n for n in notes) and any(str(base_path) in n for n in notes)
    reloaded = again["generator"].state_dict()
    assert all(torch.equal(reloaded[k], v.float()) for k, v in obj["weight"].items())


@pytest.mark.parametrize("name, obj, source", [
    ("s2Gv3.pth", "bare", "file name s2Gv3.pth"),
    ("weights.pth", "config", "config model.version"),
])
def test_pretrained_files_are_read_and_their_version_named(tmp_path, name, obj, source):
    state = plain_state("v3")
    payload = state if obj == "bare" else {"weight": state, "config": {"model": {"version": "v3"}}}
    path = save(payload, tmp_path / name)
    file = s2v3_files.read_v3_file(path)
    assert (file.kind, file.version, file.version_source) == ("pretrained", "v3", source)
    _, models, _ = tiny("v3")
    s2v3_files.load_init(models["generator"], path, "v3")
    own = models["generator"].state_dict()
    assert torch.equal(own["cfm.base_model.model.estimator.proj_out.weight"], state["cfm.estimator.proj_out.weight"])
    with pytest.raises(ValueError, match=r"a GPT-SoVITS v3 file .*this run trains v4"):
        s2v3_files.load_init(tiny("v4")[1]["generator"], path, "v4")


def test_bad_init_files_are_one_line_errors(tmp_path):
    from trainer.workloads.s2 import S2Workload

    _, models, _ = tiny("v4", rank=4)
    v2 = save({"weight": S2Workload("tiny", version="v2").build("cpu")["generator"].state_dict()}, tmp_path / "s2G488k.pth")
    lora_file = tmp_path / "GPT-SoVITS" / "SoVITS_weights_v4" / "x_e1_s2_l16.pth"
    save({"weight": {"cfm.base_model.model.estimator.transformer_blocks.0.attn.to_q.lora_A.default.weight": torch.zeros(16, 64)},
          "config": {}, "info": "1epoch_2iteration", "lora_rank": 16}, lora_file, b"04")
    cases = [
        (v2, "not a GPT-SoVITS v3 / v4 SynthesizerTrnV3 file"),
        (save({"weight": {}}, tmp_path / "empty.pth"), "empty"),
        (lora_file, "LoRA rank 16, but this run trains rank 4"),
        (save(plain_state("v4"), tmp_path / "s2Gv4.pth", b"06"), "a GPT-SoVITS v2ProPlus file"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            s2v3_files.load_init(models["generator"], path, "v4")
        assert str(path.name) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="holds no base weights"):
        s2v3_files.load_init(tiny("v4", rank=16)[1]["generator"], lora_file, "v4")


def test_meta_estimator_traces_the_step_at_tiny_size():
    from probe.memory import MetaEstimator

    for name in ("s2-v3", "s2-v4"):
        estimator = MetaEstimator(get_workload(name, "tiny"), "fp16")
        one, two = estimator.trace(1, 2.0), estimator.trace(2, 2.0)
        assert 0 < one.raw_bytes < two.raw_bytes


def test_parts_are_listed_for_advisor_workloads():
    d = get_workload("s2-v4", "tiny").describe()
    assert set(PARTS) <= set(d["modules"]) and d["version"] == "v4" and d["lora_rank"] == 32


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_upstream_estimate_is_within_5_percent_of_the_cpu_anchor(version):
    """INTEROP-v3v4.md section 11: live bytes of upstream's own step, fp32, 10 s clips, steady state."""
    from probe.memory import CardOverhead
    from probe.upstream import UpstreamEstimator, upstream_workload

    mib = 2**20
    anchor = COUNTS["memory_cpu_fp32"]
    b1 = next(m for m in anchor.values() if (m["version"], m["B"], m["grad_ckpt"], m["seconds"]) == (version, 1, False, 10.0))
    per_sample = COUNTS["memory_per_extra_10s_sample_MiB"][version]
    # fp32, CUDA's attention kernel choice (it saves what the CPU's flash kernel saves), the CPU's dropout noise
    est = UpstreamEstimator(upstream_workload(f"s2-{version}", "full"), "fp32", overhead=CardOverhead(0, 0), cuda_dropout=False)
    one, two = est.trace(1, 10.0).raw_bytes / mib, est.trace(2, 10.0).raw_bytes / mib
    assert one == pytest.approx(b1["steady_state_peak_MiB"], rel=0.05)
    assert two - one == pytest.approx(per_sample, rel=0.05)


def test_upstream_resume_files_and_an_explicit_base(tmp_path):
    from trainer.gptsovits.s2_files import read_s2_file

    _, trained, _ = tiny("v3", rank=4, seed=2)
    state = trained["generator"].state_dict()
    resume = save({"model": state, "iteration": 2, "optimizer": {}, "learning_rate": 1e-4}, tmp_path / "logs_s2_v3_lora_4" / "G_233333333333.pth")
    file = s2v3_files.read_v3_file(resume)
    assert (file.kind, file.version, file.lora_rank) == ("resume", "v3", 4) and file.version_source.startswith("folder name")
    _, models, _ = tiny("v3", rank=4)
    s2v3_files.load_init(models["generator"], resume, "v3")
    assert all(torch.equal(models["generator"].state_dict()[k], v) for k, v in state.items())
    # a LoRA export with its base given explicitly, anywhere
    base = save({"weight": plain_state("v3")}, tmp_path / "elsewhere" / "base.pth")
    export = lora_export(S2V3Workload("tiny", version="v3", lora_rank=4), state, tmp_path / "out", "run", 1, 2)
    notes = S2V3Workload("tiny", version="v3", lora_rank=4).load_init(tiny("v3", rank=4)[1], export, base=str(base))
    assert any("does not say v3 or v4" in n for n in notes)  # the base: no header, hash, config or telling name
    # a run started from that base names it in its export (train.pretrained_s2G): a later --init finds it there
    workload, models, _ = tiny("v3", rank=4)
    workload.load_init(models, str(base))
    export = lora_export(workload, models["generator"].state_dict(), tmp_path / "runs" / "export", "run", 1, 2)
    assert s2v3_files.read_v3_file(export).config["train"]["pretrained_s2G"] == str(base.resolve())
    notes = S2V3Workload("tiny", version="v3", lora_rank=4).load_init(tiny("v3", rank=4)[1], export)
    assert any(f"generator from {base.resolve()} (pretrained) + " in n for n in notes)
    with pytest.raises(ValueError, match="a GPT-SoVITS v3 / v4 file"):  # the v2-family reader names it too
        read_s2_file(base)


def test_gradient_checkpointing_traces_and_matches_the_cpu_anchor():
    """The DiT's checkpointed blocks recompute in backward under the trace's CUDA modelling
    (probe.meta `recompute_contexts`); upstream's grad_ckpt step, v4 10 s B=1: 2352.3 MiB."""
    from probe.memory import CardOverhead
    from probe.upstream import UpstreamEstimator

    cell = COUNTS["memory_cpu_fp32"]["v4_B1_gc1_never_10s"]
    workload = S2V3Workload("full", version="v4", recipe="gpt-sovits", grad_ckpt=True)
    est = UpstreamEstimator(workload, "fp32", overhead=CardOverhead(0, 0), cuda_dropout=False)
    assert est.trace(1, 10.0).raw_bytes / 2**20 == pytest.approx(cell["steady_state_peak_MiB"], rel=0.05)
    from probe.memory import MetaEstimator

    plain, checkpointed = (MetaEstimator(S2V3Workload("tiny", version="v4", grad_ckpt=g), "fp16").trace(2, 2.0) for g in (False, True))
    assert 0 < checkpointed.raw_bytes < plain.raw_bytes  # autocast casts recomputed too: fewer bytes kept, no error


def test_the_export_records_how_the_run_trained_gradient_checkpointing():
    """config.train.grad_ckpt says how the adapter was trained, as upstream's webui records it."""
    assert s2v3_files.inference_config("v4", v3_config("v4", "tiny"), "voice", 8)["train"]["grad_ckpt"] is False
    assert s2v3_files.inference_config("v4", v3_config("v4", "tiny"), "voice", 8, grad_ckpt=True)["train"]["grad_ckpt"] is True
