"""TrainConfig: YAML load, one-line errors naming file/line/field, dump round trip, overrides."""

from __future__ import annotations

import dataclasses

import pytest

from trainer.config import TrainConfig, apply_overrides, dump_config, load_config, parse_assignment, parse_config


def error(text: str) -> str:
    with pytest.raises(ValueError) as info:
        parse_config(text, "run.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("epochs: three\n", "run.yaml:1: epochs: expected an integer, got 'three' (str)"),
        ("seed: 0\nbatch:\n  mikro: 2\n", "run.yaml:3: unknown key 'batch.mikro' (expected one of: micro, effective, source, table, buckets)"),
        ("wokload: s1\n", "run.yaml:1: unknown key 'wokload'"),
        ("batch:\n  micro: 0\n", "run.yaml:2: batch.micro: 0 is below the minimum 1"),
        ("optim:\n  grad_clip: yes\n", "run.yaml:2: optim.grad_clip: expected a number, got True (bool)"),
        ("optim:\n  lr: {gpt: -1}\n", "run.yaml:2: optim.lr.gpt: -1.0 must be a finite number > 0"),
        ("optim:\n  lr_scale: {text_encoder: 0.4}\n", "run.yaml:2: optim.lr_scale.text_encoder: expected a key 'optimiser/group'"),
        ("schedule:\n  eta_min: 2\n", "run.yaml:2: schedule.eta_min: 2.0 is outside [0, 1]"),
        ("schedule:\n  t_mult: 1.5\n", "run.yaml:2: schedule.t_mult: expected an integer, got 1.5 (float)"),
        ("schedule:\n  kind: linear\n", "run.yaml:2: schedule.kind: 'linear' is not one of cosine, constant"),
        ("workload: s2\ndpo: true\n", "run.yaml:2: dpo: DPO is an s1 mode"),
        ("precision: fp8\n", "run.yaml:1: precision: 'fp8' is not one of fp32, fp16, bf16"),
        ("slice_seconds: 90\n", "run.yaml:1: slice_seconds: slice seconds 90.0 is outside (0, 54]"),
        ("device: tpu\n", "run.yaml:1: device: 'tpu' is not one of auto, cpu, cuda, cuda:N"),
        ("checkpoint: 5\n", "run.yaml:1: checkpoint: expected a mapping of keys, got 5 (int)"),
        ("- a\n- b\n", "run.yaml: the file: expected a mapping of keys, got ['a', 'b'] (list)"),
        ("batch: {micro: 2\n", "run.yaml:2: not valid YAML"),
        ("workload: s1\nlora_rank: 8\n", "run.yaml:2: lora_rank: 8: only s2 v3/v4 trains LoRA adapters (this run is s1); leave it 32"),
        ("workload: s2\nversion: v2\ngrad_ckpt: true\n", "run.yaml:3: grad_ckpt: gradient checkpointing is an s2 v3/v4 option (this run is s2 v2)"),
        ("workload: s2\nversion: v4\nlora_rank: 0\n", "run.yaml:3: lora_rank: 0 is below the minimum 1"),
        ("lora_rank: 16.0\n", "run.yaml:1: lora_rank: expected an integer, got 16.0 (float)"),
        ("grad_ckpt: 1\n", "run.yaml:1: grad_ckpt: expected true or false, got 1 (int)"),
        ("workload: s2\nversion: v2\nvalidation:\n  vocoder: v.pth\n", "run.yaml:4: validation.vocoder: a vocoder voices s2 v3/v4's mel samples (this run is s2 v2"),
    ],
)
def test_bad_input_is_one_line_naming_file_line_and_field(text, expected):
    assert error(text).startswith(expected)


def test_every_field_has_a_default_and_a_meaning():
    def walk(cls):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
                walk(f.default_factory)

    walk(TrainConfig)
    assert TrainConfig().optim.grad_clip == 1.0  # the default


def test_dump_is_documented_and_loads_back_to_the_same_config(tmp_path):
    cfg = apply_overrides(TrainConfig(), {
        "workload": "s1", "dpo": True, "dataset": "/data/my ds: v2", "optim.lr.gpt": 2e-4,
        "optim.lr_scale.gpt/embeddings_head": 0.5, "schedule.t_0": 100, "schedule.t_mult": 2,
        "schedule.eta_min": 0.05, "batch.effective": 32, "max_steps": 1000,
    })
    text = dump_config(cfg)
    *fields, end = text.splitlines()[2:]
    assert end.startswith("# end of config")  # what tells a cut-short file from a whole one
    for line in fields:
        assert "  # " in line, f"undocumented line: {line}"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert load_config(path) == cfg


def test_numbers_written_without_a_dot_are_numbers():
    cfg = parse_config("optim:\n  lr: {gpt: 1e-4}\n  grad_clip: 5\n")
    assert cfg.optim.lr == {"gpt": 1e-4} and cfg.optim.grad_clip == 5.0


def test_overrides_replace_dotted_fields_and_are_validated():
    cfg = apply_overrides(TrainConfig(), {"epochs": 3, "batch.micro": 6, "optim.lr.generator": "3e-4"})
    assert (cfg.epochs, cfg.batch.micro, cfg.optim.lr) == (3, 6, {"generator": 3e-4})
    with pytest.raises(ValueError, match=r"^--set: unknown key 'batch.size' \(did you mean"):
        apply_overrides(cfg, {"batch.size": 2}, "--set")
    with pytest.raises(ValueError, match="batch.micro: expected an integer"):
        apply_overrides(cfg, {"batch.micro": "two"})


def test_assignments_read_their_value_as_yaml():
    assert parse_assignment("schedule.warmup_steps=100") == ("schedule.warmup_steps", 100)
    assert parse_assignment("optim.grad_clip=null") == ("optim.grad_clip", None)
    assert parse_assignment("dataset=/a=b") == ("dataset", "/a=b")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_assignment("epochs")


def test_lora_rank_and_grad_ckpt_reach_the_v3_v4_workload_only():
    from trainer.workloads import workload_for_config

    cfg = parse_config("workload: s2\nversion: v4\nsize: tiny\nlora_rank: 8\ngrad_ckpt: true\n")
    workload = workload_for_config(cfg)
    assert (workload.name, workload.lora_rank, workload.grad_ckpt) == ("s2-v4", 8, True)
    model = workload.build("meta")["generator"]
    assert model.cfm.base_model.model.estimator.checkpoint_blocks is True
    assert {p.shape[0] for n, p in model.named_parameters() if n.endswith("lora_A.default.weight")} == {8}
    assert TrainConfig().lora_rank == 32 and TrainConfig().grad_ckpt is False  # the webui's rank; no checkpointing
    plain = workload_for_config(parse_config("workload: s2\nversion: v2Pro\nsize: tiny\n"))
    assert not hasattr(plain, "lora_rank")  # the GAN workload takes neither
