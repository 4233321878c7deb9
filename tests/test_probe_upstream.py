"""GPT-SoVITS's own trainers (probe.upstream): figures against INTEROP.md, and the CLI's two answers."""

import json

import pytest

from advisor.cli import main
from probe.upstream import UpstreamEstimator, upstream_workload, weight_norm_cache_shapes
from probe.plan import webui_batch

MIB = 2**20
# INTEROP.md, "Upstream's own training memory": live bytes of upstream's classes, fp32, 10 s, CUDA-emulated
S1_PER_SAMPLE, S1_DPO_PER_SAMPLE = 526.5, 1630.7
S2_PEAKS = {1: 2820.6, 2: 3481.6, 4: 4803.6}
S2_PER_SAMPLE = 661.0


def per_sample(est, dpo):
    return (est.trace(8, 10.0, dpo).raw_bytes - est.trace(4, 10.0, dpo).raw_bytes) / 4 / MIB


def test_full_size_s1_per_sample_is_within_5_percent_of_upstreams_measurement():
    est = UpstreamEstimator(upstream_workload("s1", "full"), "fp32")
    assert per_sample(est, False) == pytest.approx(S1_PER_SAMPLE, rel=0.05)
    assert per_sample(est, True) == pytest.approx(S1_DPO_PER_SAMPLE, rel=0.05)


def test_full_size_s2_peaks_are_within_5_percent_of_upstreams_measurement():
    # INTEROP.md's s2 figures are plain CPU live bytes (its s2 "ours" equals the estimator
    # of that time, which counted the CPU's fp32 dropout noise): the same kernel assumption here.
    est = UpstreamEstimator(upstream_workload("s2-v2", "full"), "fp32", cuda_dropout=False)
    peaks = {batch: est.trace(batch, 10.0).raw_bytes / MIB for batch in S2_PEAKS}
    for batch, upstream in S2_PEAKS.items():
        assert peaks[batch] == pytest.approx(upstream, rel=0.05), batch
    assert (peaks[4] - peaks[2]) / 2 == pytest.approx(S2_PER_SAMPLE, rel=0.05)


def test_weight_norm_caches_of_full_s2_are_upstreams_308_mib():
    models = upstream_workload("s2-v2", "full").build("meta")
    shapes = [s for name in ("generator", "discriminator") for s in weight_norm_cache_shapes(models[name])]
    total = sum(4 * s.numel() for s in shapes)  # fp32
    assert total / MIB == pytest.approx(308, rel=0.02)


def test_the_webui_number_undoes_its_halvings():
    assert webui_batch("s1", 10, False, "fp16")[0] == 10
    assert webui_batch("s1", 10, False, "fp32")[0] == 20
    assert webui_batch("s1", 3, True, "fp32")[0] == 12
    assert webui_batch("s2", 4, False, "fp32")[0] == 8
    assert "every 4 batches" in webui_batch("s1", 3, True, "fp16")[1]


def test_plan_for_gpt_sovits_and_for_advisor_differ_and_say_why(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # no user tables: the shipped ones only
    common = ["plan", "--vram", "8GiB", "--workload", "s1", "--slice-seconds", "10", "--precision", "fp32", "--json"]
    assert main(common + ["--for", "advisor"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert main(common + ["--for", "gpt-sovits"]) == 0
    theirs = json.loads(capsys.readouterr().out)
    assert theirs["trainer"] == "gpt-sovits" and ours["trainer"] == "advisor"
    assert theirs["attention"] == "gpt_sovits" and ours["attention"] == "sdpa"
    assert theirs["max_batch_size"] < ours["max_batch_size"]
    assert theirs["webui_batch_size"] == 2 * theirs["recommended_batch_size"]  # fp32 card: the webui halves it
    assert ours["webui_batch_size"] is None


def test_a_gpt_sovits_probe_writes_its_own_tables_beside_ours(tmp_path):
    from probe.runner import Probe, ProbeConfig
    from probe.table import read_table

    path = tmp_path / "t.yaml"
    common = dict(precision="fp32", backend="estimated", slice_seconds=(2.0,), tiers_bytes=(700 * MIB,), size="tiny", dpo_modes=(False,))
    Probe(ProbeConfig(**common), path).run()
    Probe(ProbeConfig(**common, trainer="gpt-sovits"), path).run()
    tf = read_table(path)
    for workload, attention in (("s1", "gpt_sovits"), ("s2", None)):
        ours = tf.table(workload, "fp32", "sdpa" if workload == "s1" else None, "tiny").rows[0]
        theirs = tf.table(workload, "fp32", attention, "tiny", trainer="gpt-sovits").rows[0]
        assert theirs.max_batch_size <= ours.max_batch_size
        assert theirs.max_batch_size == 0 or theirs.peak_bytes > 0


def test_gpt_sovits_tables_are_estimates_only():
    from probe.runner import ProbeConfig

    with pytest.raises(ValueError, match="--backend estimated with --for gpt-sovits"):
        ProbeConfig(precision="fp16", backend="measured", trainer="gpt-sovits")
    with pytest.raises(ValueError, match="unknown trainer 'upstream'"):
        ProbeConfig(precision="fp16", backend="estimated", trainer="upstream")
