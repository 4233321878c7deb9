"""`advisor table`: list the VRAM tables this machine can use, or show one."""

from __future__ import annotations

import argparse
import json

from trainer.checks import DEFAULT_VERSION, split_table_name

HELP = "list the VRAM-to-batch tables found, or show one as a table"
DESCRIPTION = """\
advisor table [list]        every table file in the folders `advisor plan` reads:
                            $SOVITS_ADVISOR_TABLES, the per-user data folder
                            (~/.local/share/sovits-advisor/tables or under
                            $XDG_DATA_HOME) and the tables shipped with sovits-advisor
advisor table show FILE     render one table file (a path, or a file name in
                            those folders, with or without .yaml)

A file that is not a valid sovits-advisor table is named with the reason
(list) or rejected with a one-line error and status 2 (show).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="table_command", metavar="{list,show}")  # none: list
    p_list = sub.add_parser("list", help="list table files and what they hold")
    p_list.add_argument("--json", action="store_true", help="print as JSON")
    p_show = sub.add_parser("show", help="render one table file")
    p_show.add_argument("file", metavar="FILE", help="path, or a file name in the table folders")
    p_show.add_argument("--json", action="store_true", help="print the validated table as JSON")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.table_command in ("list", None):
        return _list(Console(), getattr(args, "json", False))
    return _show(Console(), args.file, args.json)


def shown(name: str) -> str:
    """A table's workload name as the flags say it: "s2-v2" -> "s2 v2", "s2" -> "s2 v2Pro"."""
    workload, version = split_table_name(name)
    return f"s2 {version or DEFAULT_VERSION}" if workload == "s2" else workload


def _list(console, as_json: bool) -> int:
    from probe.table import load_tables, table_dirs

    tables, problems = load_tables()
    if as_json:
        entries = [
            {
                "path": str(tf.path),
                "source": tf.source,
                "device": tf.device.name,
                "torch": tf.software.get("torch"),
                "tables": [{"workload": t.workload, "version": split_table_name(t.workload)[1] or (DEFAULT_VERSION if t.workload == "s2" else None), "precision": t.precision, "attention": t.attention, "rows": len(t.rows)} for t in tf.tables],
            }
            for tf in tables
        ]
        print(json.dumps({"folders": [str(d) for d in table_dirs()], "tables": entries, "problems": problems}, indent=2))
        return 0
    from rich.table import Table as RichTable

    view = RichTable(title="VRAM tables", show_lines=False)
    view.add_column("file", overflow="fold")  # the whole path: it is what `table show` takes
    for column in ("source", "device", "torch", "tables (workload precision attention: rows)"):
        view.add_column(column)
    for tf in tables:
        held = ", ".join(f"{shown(t.workload)} {t.precision}{' ' + t.attention if t.attention else ''}: {len(t.rows)}" for t in tf.tables)
        view.add_row(str(tf.path), tf.source, tf.device.name, tf.software.get("torch") or "-", held or "(empty)")
    console.print(view)
    console.print("folders searched: " + ", ".join(str(d) for d in table_dirs()))
    for problem in problems:
        console.print(f"[red]not usable[/red]: {problem}", markup=True, highlight=False)
    return 0


def _show(console, name: str, as_json: bool) -> int:
    from probe.table import read_table, to_data

    table_file = read_table(resolve(name))
    if as_json:
        print(json.dumps(to_data(table_file), indent=2))
        return 0
    render_table_file(console, table_file)
    return 0


def resolve(name: str):
    """A path as given, else a file of that name in the table folders."""
    from pathlib import Path

    from probe.table import table_dirs

    path = Path(name)
    if path.exists() or path.is_absolute() or len(path.parts) > 1:
        return path
    for folder in table_dirs():
        for candidate in (folder / name, folder / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    return path


def render_table_file(console, table_file) -> None:
    """One rich table per (workload, precision, attention) in the file."""
    from rich.table import Table as RichTable

    from probe.sizes import format_size, tier_label

    tf = table_file
    console.print(f"[bold]{tf.path or ''}[/bold]  {tf.source} - {tf.device.name} - torch {tf.software.get('torch') or '-'}", highlight=False)
    if tf.provenance:
        console.print(tf.provenance, style="dim", highlight=False)
    for t in tf.tables:
        title = f"{shown(t.workload)} {t.precision}" + (f" ({t.attention})" if t.attention else "") + (f", margin {t.margin:g}" if t.margin is not None else "")
        view = RichTable(title=title)
        for column, justify in (("card", "right"), ("slice", "right"), ("dpo", "center"), ("max", "right"), ("rec.", "right"), ("peak", "right"), ("samples/s", "right"), ("audio s/s", "right"), ("source", "left")):
            view.add_column(column, justify=justify, no_wrap=True)
        view.add_column("note", overflow="fold")
        for r in t.rows:
            view.add_row(
                tier_label(r.vram_bytes),
                f"{r.slice_seconds:g} s",
                "yes" if r.dpo else "",
                str(r.max_batch_size),
                str(r.recommended_batch_size),
                format_size(r.peak_bytes),
                "-" if r.samples_per_second is None else f"{r.samples_per_second:.2f}",
                "-" if r.audio_seconds_per_second is None else f"{r.audio_seconds_per_second:.1f}",
                r.source,
                r.note or "",
            )
        console.print(view)
