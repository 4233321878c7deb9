"""Where the weights came from (the start event's `init`) and went (the `export` event), as
(label, text) rows of the dashboard's figures panel."""

from __future__ import annotations

from advisor.dashboard.state import RunState


def provenance_rows(state: RunState, room: int = 80, packed: bool = False) -> list[tuple[str, str]]:
    """Where the weights came from (the start event's init) and went (the export event);
    run files too long for `room` columns lose leading folders, never the file name; the copies
    under --gpt-sovits-root are shown whole (folded), since which checkout is the point."""
    if packed:
        return _packed_provenance(state)
    out = [("init" if i == 0 else "", text) for i, text in enumerate(init_lines(state.run.get("init"), room))]
    export = state.export
    if export:
        copies = export.get("copied_to") or []
        files = [str(f) for f in export.get("files") or [] if not str(f).endswith(".json") and f not in copies]
        files.sort(key=lambda f: "_weights" not in f)  # GPT-SoVITS's own file first: what its webui loads
        where = [short_path(f, room) for f in files[:2]] or ["export/"]
        out += [("export" if i == 0 else "", text) for i, text in enumerate(where)]
        out += [("copied to" if i == 0 else "", str(c)) for i, c in enumerate(copies)]  # whole (folded): which checkout
    return out


def _packed_provenance(state: RunState) -> list[tuple[str, str]]:
    """The init file's name and digest, the export's GPT-SoVITS file and its copy: a line each (80x24)."""
    out = []
    init = state.run.get("init")
    if isinstance(init, dict) and init.get("path"):
        digest = f" · sha256 {str(init['sha256'])[:12]}" if init.get("sha256") else ""
        out.append(("init", f"{str(init['path']).rpartition('/')[2]}{digest}"))
    export = state.export
    if export:
        copies = [str(c) for c in export.get("copied_to") or []]
        files = sorted((str(f) for f in export.get("files") or [] if not str(f).endswith(".json") and f not in copies),
                       key=lambda f: "_weights" not in f)
        out.append(("export", " · ".join([files[0] if files else "export/", *(f"copied to {c}" for c in copies[:1])])))
    return out


def init_lines(init, room: int = 80) -> list[str]:
    """The start event's `init`: {path, sha256, kind} (or s2's older list of notes)."""
    if isinstance(init, dict) and init.get("path"):
        lines = [short_path(str(init["path"]), room), str(init.get("kind") or "")]
        return [x for x in lines if x] + ([f"sha256 {str(init['sha256'])[:16]}"] if init.get("sha256") else [])
    if isinstance(init, list):
        return [str(x) for x in init]
    return []


def short_path(path: str, room: int) -> str:
    """`path` in `room` columns: leading folders become "…" (the file name stays whole)."""
    if len(path) <= room:
        return path
    parts = path.split("/")
    tail = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + len(tail) + 3 > room:
            break
        tail = f"{part}/{tail}"
    return f"…/{tail}"
