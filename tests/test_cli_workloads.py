"""`advisor workloads` and the argument checks every command shares."""

import json
import subprocess
import sys

import pytest


def advisor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True)


def test_workloads_json_parameter_counts_match_gpt_sovits():
    out = advisor("workloads", "--json")
    assert out.returncode == 0, out.stderr
    by_name = {w["name"]: w for w in json.loads(out.stdout)}
    assert set(by_name) == {"s1", "s2"}
    s1, s2 = by_name["s1"], by_name["s2"]
    assert s1["parameters"]["total"] == pytest.approx(77_606_402, rel=0.01)
    assert s1["parameters"]["trainable"] == s1["parameters"]["total"]
    assert s2["modules"]["generator"] == pytest.approx(51.31e6, rel=0.01)
    assert s2["modules"]["discriminator"] == pytest.approx(46.75e6, rel=0.01)
    assert s2["parameters"]["total"] == s2["modules"]["generator"] + s2["modules"]["discriminator"]


def test_workloads_table_renders():
    out = advisor("workloads")
    assert out.returncode == 0, out.stderr
    assert "s1" in out.stdout and "discriminator" in out.stdout


def test_shapes_scale_with_slice_length():
    def shapes(seconds: str) -> dict:
        out = advisor("workloads", "--shapes", "--json", "--workload", "s2", "--batch-size", "3", "--slice-seconds", seconds)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["tensors"]

    five, ten = shapes("5"), shapes("10")
    assert five["spec"]["shape"] == [3, 1025, 250] and ten["spec"]["shape"] == [3, 1025, 500]
    assert ten["wav"]["shape"] == [3, 1, 500 * 640]


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
