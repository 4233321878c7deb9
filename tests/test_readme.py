"""The README's cheap commands, run as it writes them, leave the files it names (CPU, no training).

The commands are read from README.md itself ("A whole run, on CPU" and the
slice sentence), so a README that drifts from the program fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CHEAP = ("advisor demo-data", "advisor prepare", "advisor plan", "advisor table", "advisor slice")


def readme_commands() -> list[str]:
    """The cheap commands of the quick-start block, then the slice sentence's, in README order."""
    block = README.split("## A whole run, on CPU", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    commands = [line for line in lines if line.startswith(CHEAP)]
    commands += re.findall(r"`(advisor slice [^`]+)`", README)
    return commands


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "160"}
    argv = [sys.executable, "-m", "advisor", *command.split()[1:]]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_readme_quick_commands_run_and_the_files_it_names_exist(tmp_path):
    commands = readme_commands()
    assert [c.split()[1] for c in commands] == ["plan", "demo-data", "prepare", "slice"], commands
    for command in commands:
        command = command.replace("raw/", "demo/wavs/")  # the slice sentence's recordings: the demo's
        done = run(command, tmp_path)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert not done.stderr.startswith("\n"), f"{command}: blank first line on stderr"
    table = run("advisor table", tmp_path)  # the plain command lists the tables
    assert table.returncode == 0 and "estimated.yaml" in table.stdout, table.stderr
    named = set(re.findall(r"`((?:ds|demo|sliced)/[\w./-]+)`", README)) | {"demo/demo.list", "ds/manifest.json"}
    assert {"ds/report.json", "sliced/slices.list"} <= named
    missing = [name for name in sorted(named) if not (tmp_path / name).exists()]
    assert not missing, f"the README names files the commands did not write: {missing}"
