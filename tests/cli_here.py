"""`advisor` run in the test's own process: the real argv through `advisor.cli.main`, its
stdout and stderr captured, its exit status returned as a CompletedProcess.

For commands that end before any trainer starts (`--print-config`, a refused resume, `advisor
workloads`): a subprocess would spend most of its ~5 s importing torch and torch._dynamo
(which the first optimiser or meta tensor pulls in), already imported here. Anything that
trains, supervises or handles signals still runs as a real subprocess in its test."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

from advisor.cli import main


def advisor_here(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse's usage errors
                rc = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["advisor", *argv], rc, out.getvalue(), err.getvalue())
