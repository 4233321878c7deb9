"""`advisor` console script: a thin dispatcher over `advisor/commands/*`.

Each command module exposes HELP (one line), DESCRIPTION (for --help),
`add_arguments(parser)` and `run(args) -> int`. Modules import torch and
friends inside `run` so `advisor --help` starts fast. ValueError and
UserError become one-line errors with exit code 2 (ADVISOR_DEBUG=1 shows the
traceback instead); Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from advisor import __version__
from advisor.errors import UserError
from trainer import exits

# command name -> module under advisor.commands (order = order in --help)
COMMANDS = {
    "doctor": "doctor",
    "workloads": "workloads",
    "probe": "probe",
    "plan": "plan",
    "table": "table",
    "slice": "slice",
    "check": "check",
    "prepare": "prepare",
    "demo-data": "demo_data",
    "train": "train",
    "stop": "stop",
    "dashboard": "dashboard",
    "report": "report",
    "export-tb": "export_tb",
}


def _load(module: str):
    return importlib.import_module(f"advisor.commands.{module}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advisor",
        description="GPU-profiling advisor and auto-tuner for GPT-SoVITS fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"sovits-advisor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = _load(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != f"advisor.commands.{module_name}":
                raise
            continue  # command not built yet
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


NEGATIVE_LOOKING = re.compile(r"^-\.?\d")  # "-3GiB", "-3", "-.5": a value (no option starts with a digit)


def join_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--vram -3GiB` -> `--vram=-3GiB`: argparse takes a negative-looking value that is not a
    plain number for an option and answers "expected one argument"; joined, the command's own
    check names the value and what is allowed. Only options of the chosen command that take
    exactly one value are joined."""
    commands = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    command = commands.get(argv[0]) if argv else None
    if command is None:
        return argv
    takes_one = {s for a in command._actions if a.nargs is None and a.option_strings for s in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in takes_one and i + 1 < len(argv) and NEGATIVE_LOOKING.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(join_negative_values(parser, argv))
    args._argv = argv  # commands that re-launch themselves (train --detach) need it
    if not getattr(args, "_run", None):
        parser.print_help()
        return exits.BAD_INPUT
    try:
        return int(args._run(args) or 0)
    except (UserError, ValueError) as exc:
        if os.environ.get("ADVISOR_DEBUG"):
            raise  # full traceback for developers
        print(f"advisor {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"advisor {args.command}: interrupted", file=sys.stderr)
        return exits.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
