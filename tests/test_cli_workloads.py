"""`advisor workloads` and the argument checks every command shares."""

import json

import pytest
from cli_here import advisor_here as advisor


def test_workloads_json_parameter_counts_match_gpt_sovits():
    out = advisor("workloads", "--json")
    assert out.returncode == 0, out.stderr
    by_name = {(w["name"], w.get("version")): w for w in json.loads(out.stdout)}
    assert set(by_name) == {("s1", None), ("s2", "v2"), ("s2", "v2Pro"), ("s2", "v2ProPlus"), ("s2", "v3"), ("s2", "v4")}
    s1 = by_name["s1", None]
    assert s1["parameters"]["total"] == pytest.approx(77_606_402, rel=0.01)
    assert s1["parameters"]["trainable"] == s1["parameters"]["total"]
    counts = {"v2": (51_310_080, 46_747_132), "v2Pro": (79_428_096, 63_189_440), "v2ProPlus": (98_338_432, 63_189_440)}
    for version, (g, d) in counts.items():
        s2 = by_name["s2", version]
        assert (s2["modules"]["generator"], s2["modules"]["discriminator"]) == (g, d)
        assert s2["parameters"]["total"] == g + d
    for version in ("v3", "v4"):  # SynthesizerTrnV3 + rank-32 LoRA (INTEROP-v3v4.md section 2)
        s2 = by_name["s2", version]
        assert s2["parameters"]["total"] == 388_588_232 and s2["modules"]["lora"] == 5_767_168
        assert s2["parameters"]["trainable"] == 36_155_748 - 618_340  # advisor recipe: ref_enc, linear_mel frozen


def test_workloads_table_renders():
    out = advisor("workloads")
    assert out.returncode == 0, out.stderr
    assert "s1" in out.stdout and "discriminator" in out.stdout and "s2 v2ProPlus" in out.stdout


def test_shapes_scale_with_slice_length():
    def shapes(seconds: str) -> dict:
        out = advisor("workloads", "--shapes", "--json", "--workload", "s2", "--batch-size", "3", "--slice-seconds", seconds)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["tensors"]

    five, ten = shapes("5"), shapes("10")
    assert five["spec"]["shape"] == [3, 1025, 250] and ten["spec"]["shape"] == [3, 1025, 500]
    assert ten["wav"]["shape"] == [3, 1, 500 * 640]
    assert ten["sv_emb"]["shape"] == [3, 20480]  # v2Pro (the default) takes the speaker embedding


@pytest.mark.parametrize(
    "args, value",
    [
        (["--workload", "s3"], "'s3'"),
        (["--slice-seconds", "0"], "0"),
        (["--slice-seconds", "55"], "55"),
        (["--batch-size", "0"], "0"),
        (["--precision", "fp8"], "'fp8'"),
    ],
)
def test_bad_input_is_one_line_error(args, value):
    out = advisor("workloads", "--shapes", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert value in lines[0], lines[0]
    assert "expected" in lines[0] or "outside" in lines[0], lines[0]
