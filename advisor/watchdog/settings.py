"""The watchdog's settings file, RUN_DIR/watchdog.yaml, and the `watchdog:` section of a config.

    watchdog_text(WatchdogConfig.to_dict())    the file's text: header, YAML, "# end of watchdog settings"
    load_watchdog(RUN_DIR)                     WatchdogConfig (defaults if the file is absent)
    build_watchdog(raw, lines, source, sets)   from a `watchdog:` mapping plus `--set watchdog.a.b=v`
    watchdog_yaml(config)                      what `advisor train --print-config` shows

Errors name the file and the line of the field (`file:line: watchdog.oom.mode: ...`); a
file that starts with the header but lacks the last line was cut short. The run spec
(advisor/launch.py) writes and reads the file through this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advisor.errors import UserError

WATCHDOG_FILE = "watchdog.yaml"
WATCHDOG_HEADER = "# watchdog policies of this run (written by advisor train; null turns a policy off)"
WATCHDOG_END = "# end of watchdog settings"  # a file with the header but without this line was cut short


def watchdog_text(data: dict) -> str:
    """RUN_DIR/watchdog.yaml's contents for `WatchdogConfig.to_dict()` data."""
    import yaml

    return f"{WATCHDOG_HEADER}\n{yaml.safe_dump(data, sort_keys=False)}{WATCHDOG_END}\n"


def read_watchdog_file(path: Path) -> tuple[object, dict[str, int]]:
    """(raw data, "watchdog.<section>.<field>" -> line) of a watchdog.yaml; ValueError naming
    the file (and line) if it is damaged: not UTF-8, NUL bytes, bad YAML, cut short."""
    from trainer.config import parse_yaml, read_text_file, written_by_us

    text = read_text_file(path, "watchdog settings")
    if (not text or written_by_us(text, WATCHDOG_HEADER)) and WATCHDOG_END not in text:
        raise ValueError(f"{path}: cut short (written by advisor train, but its last line {WATCHDOG_END!r} is missing)")
    raw, lines = parse_yaml(text, str(path))
    return raw, {f"watchdog.{key}": line for key, line in lines.items()}


def read_watchdog_raw(root: Path) -> tuple[Any, dict[str, int], str]:
    """RUN_DIR/watchdog.yaml as (raw data, field lines, file name); (None, {}, name) if absent."""
    path = root / WATCHDOG_FILE
    return (*read_watchdog_file(path), str(path)) if path.is_file() else (None, {}, str(path))


def watchdog_config(raw, lines: dict[str, int], source: str):
    """WatchdogConfig.from_dict(raw), its errors prefixed "source:line:" of the field they name."""
    from advisor.watchdog import WatchdogConfig

    try:
        return WatchdogConfig.from_dict(raw)
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]  # "watchdog.oom.mode: expected ..." names its dotted field first
        while field and field not in lines:
            field = field.rpartition(".")[0]
        where = f"{source}:{lines[field]}" if field else source
        raise ValueError(f"{where}: {exc}") from None


def build_watchdog(raw: Any, lines: dict[str, int], source: str, sets: dict[str, Any]):
    """WatchdogConfig from a `watchdog:` mapping (checked first, so its errors name
    source:line of the field) plus `watchdog.a.b=value` assignments."""
    from advisor.watchdog import WatchdogConfig

    watchdog_config(raw, lines, source)
    data = dict(raw or {}) if isinstance(raw, dict) or raw is None else raw
    for key, value in sets.items():
        parts = key.split(".")[1:]
        if len(parts) == 1 and value is None:  # watchdog.<policy>=null turns a policy off
            data[parts[0]] = None
            continue
        if len(parts) != 2:
            raise UserError(f"--set {key}: expected watchdog.<policy>.<field>=VALUE or watchdog.<policy>=null "
                            "(e.g. watchdog.early_stop.patience=3)")
        section, name = parts
        if data.get(section) is None:
            data[section] = {}
        data[section] = {**data[section], name: value}
    return WatchdogConfig.from_dict(data)


def watchdog_yaml(watchdog) -> str:
    import yaml

    return "# watchdog policies (advisor/watchdog; null turns a policy off)\n" + yaml.safe_dump(
        {"watchdog": watchdog.to_dict()}, sort_keys=False
    )


def load_watchdog(root: Path):
    """RUN_DIR/watchdog.yaml (defaults if absent); errors name the file and line."""
    return watchdog_config(*read_watchdog_raw(root))
