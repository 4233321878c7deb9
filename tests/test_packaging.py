"""Packaging: every package ships, `tables/` is found, the CLI stays light."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("advisor", "probe", "trainer")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    assert "sovits_advisor_tables" in listed


def test_tables_is_not_a_python_package():
    # `tables` is PyTables' import name: ours must stay plain data.
    assert not (ROOT / "tables" / "__init__.py").exists()


def test_cli_import_does_not_pull_the_audio_libraries():
    code = (
        "import sys, advisor.cli, probe, trainer.workloads;"
        "advisor.cli.build_parser();"
        "print(sorted(m for m in ('torchaudio', 'soundfile', 'soxr') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _modules_after(argv: list[str], env: dict | None = None) -> tuple[int, set[str]]:
    """Run `advisor ARGV` in a fresh interpreter; (exit status, the heavy modules it imported)."""
    code = (
        "import contextlib, io, sys\n"
        "from advisor import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        rc = cli.main({argv!r})\n"
        "    except SystemExit as exc:\n"
        "        rc = exc.code\n"
        "print(rc, *sorted(m for m in ('torch', 'matplotlib', 'tensorboard', 'soundfile') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    rc, *modules = out.stdout.split()
    return int(rc), set(modules)


@pytest.mark.parametrize("argv", [["--help"], ["plan", "--help"], ["table", "--help"], ["dashboard", "--help"], ["doctor", "--help"]])
def test_help_does_not_import_torch(argv):
    assert _modules_after(argv) == (0, set())


def test_plan_from_a_table_and_table_list_do_not_import_torch(tmp_path):
    env = {**os.environ, "SOVITS_ADVISOR_TABLES": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}  # only the shipped tables
    plan = ["plan", "--vram", "8GiB", "--workload", "s2", "--slice-seconds", "10", "--precision", "fp16", "--device-name", "NVIDIA GeForce RTX 4060"]
    assert _modules_after(plan, env) == (0, set())
    assert _modules_after(["table", "list"], env) == (0, set())


def test_an_installed_wheel_finds_the_shipped_tables(tmp_path):
    # build the wheel and install only our code into a folder outside the checkout
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("sovits_advisor-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = "import probe.table as t; print(t.__file__); print(t.shipped_tables_dir())"
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    module_file, shipped = out.stdout.split()
    assert module_file.startswith(str(target)), "the installed copy, not the checkout, must be imported"
    assert Path(shipped) == target / "sovits_advisor_tables"
    assert {p.name for p in Path(shipped).glob("*.yaml")} >= {"community.yaml", "estimated.yaml"}
