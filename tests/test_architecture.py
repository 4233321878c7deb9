"""The import rules of docs/ARCHITECTURE.md, checked on the source so a break fails loudly.

Every `import` and `from ... import` statement of every module of the package
is read with `ast` (including imports inside functions and under
TYPE_CHECKING: a rule about layers holds for annotations too).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Sequence

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("advisor", "probe", "trainer")


def modules(root: Path = ROOT) -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py"))


def imported(path: Path, root: Path = ROOT) -> set[str]:
    """Top-level package names of everything a module imports (relative imports: its own package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add(path.relative_to(root).parts[0])
            elif node.module:
                names.add(node.module.split(".")[0])
    return names


# rule name -> (which modules it applies to, what they must not import)
RULES = {
    "trainer imports neither probe nor advisor": (lambda rel: rel.startswith("trainer/"), {"probe", "advisor"}),
    "probe never imports advisor": (lambda rel: rel.startswith("probe/"), {"advisor"}),
    "pynvml only in probe/device.py": (lambda rel: rel != "probe/device.py", {"pynvml"}),
    "rich only under advisor/": (lambda rel: not rel.startswith("advisor/"), {"rich"}),
    # the backend loads them by name through importlib, so no module imports them directly
    "audio libraries only through trainer/data/audio_backend.py": (lambda rel: True, {"soundfile", "soxr", "torchaudio"}),
}


def offenders(rule: str, root: Path = ROOT) -> list[str]:
    applies, banned = RULES[rule]
    out = []
    for path in modules(root):
        rel = path.relative_to(root).as_posix()
        if applies(rel) and (bad := imported(path, root) & banned):
            out.append(f"{rel}: {sorted(bad)}")
    return out


def test_the_package_has_modules_to_check():
    assert len(modules()) > 50


@pytest.mark.parametrize("rule", sorted(RULES))
def test_import_rule_holds(rule):
    assert offenders(rule) == [], rule


def test_a_broken_rule_is_caught(tmp_path):
    """The checker itself can fail: a lazy import inside a function is found too."""
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "bad.py").write_text("def f():\n    from advisor.errors import UserError\n    import soundfile\n")
    assert offenders("trainer imports neither probe nor advisor", tmp_path) == ["trainer/bad.py: ['advisor']"]
    assert offenders("audio libraries only through trainer/data/audio_backend.py", tmp_path) == ["trainer/bad.py: ['soundfile']"]


# --- the loop's modules: the folder trainer/loop/; no cycle, and nothing below the loop imports it ----

LOOP_DIR = "trainer/loop"
LOOP_MAIN = "trainer/loop/loop.py"  # `train`, re-exported by trainer/loop/__init__.py
LOOP_ENTRIES = ("advisor/child.py",)  # the one entry that runs a spec (tests and benchmarks call train too)


def loop_parts(root: Path = ROOT) -> list[str]:
    """The loop's own modules: every file in trainer/loop/ but its __init__ and the loop itself."""
    return sorted(p.relative_to(root).as_posix() for p in (root / LOOP_DIR).glob("*.py") if p.name not in ("__init__.py", "loop.py"))


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every module a file imports, anywhere in it (`from trainer import loop` -> trainer.loop)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def loop_importers(root: Path = ROOT) -> list[str]:
    """Modules that import the loop where they must not: outside trainer/loop/ (other than the
    entry points) any module of it; inside it, the loop itself (`trainer.loop` or `trainer.loop.loop`)."""
    found = []
    for path in modules(root):
        rel = path.relative_to(root).as_posix()
        names = imported_modules(path)
        if rel.startswith(LOOP_DIR + "/"):
            bad = rel not in (LOOP_MAIN, f"{LOOP_DIR}/__init__.py") and bool({"trainer.loop", "trainer.loop.loop"} & names)
        else:
            bad = rel not in LOOP_ENTRIES and any(n == "trainer.loop" or n.startswith("trainer.loop.") for n in names)
        if bad:
            found.append(rel)
    return found


def cycles(files: Sequence[str], root: Path = ROOT) -> list[list[str]]:
    """Import cycles among `files` (every import counted, TYPE_CHECKING and lazy ones too)."""
    name = {f: f[: -len(".py")].replace("/", ".") for f in files}
    edges = {f: [g for g in files if g != f and name[g] in imported_modules(root / f)] for f in files}
    found: list[list[str]] = []

    def walk(f: str, path: list[str]) -> None:
        for g in edges[f]:
            if g == path[0]:
                found.append(path + [g])
            elif g not in path and g > path[0]:  # each cycle once, from its smallest file
                walk(g, path + [g])

    for f in sorted(files):
        walk(f, [f])
    return found


def test_nothing_below_the_loop_imports_it():
    assert len(loop_parts()) >= 10  # step, parts, decisions, metrics, validation, checkpointing, ...
    assert loop_importers() == []


def test_the_loop_and_its_parts_import_no_cycle():
    assert cycles([LOOP_MAIN] + loop_parts()) == []


def test_the_top_of_trainer_holds_no_loop_module():
    """trainer/*.py are the contracts other packages import: each is imported from outside trainer/loop/."""
    outside = [p for p in modules() if not p.relative_to(ROOT).as_posix().startswith(LOOP_DIR + "/")]
    used = set().union(*(imported_modules(p) for p in outside))
    top = sorted(p.stem for p in (ROOT / "trainer").glob("*.py") if p.name != "__init__.py")
    assert [m for m in top if f"trainer.{m}" not in used] == []


def test_a_part_importing_the_loop_is_caught(tmp_path):
    """The checks themselves can fail: a part that imports the loop under TYPE_CHECKING is found,
    a module outside the loop importing one of its parts is found, and the cycle with it."""
    (tmp_path / "trainer" / "loop").mkdir(parents=True)
    (tmp_path / "trainer" / "loop" / "loop.py").write_text("from trainer.loop.checkpointing import save\n")
    (tmp_path / "trainer" / "loop" / "checkpointing.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from trainer.loop.loop import Parts\n")
    (tmp_path / "trainer" / "parts.py").write_text("def f():\n    from trainer.loop import step\n")
    assert loop_importers(tmp_path) == ["trainer/loop/checkpointing.py", "trainer/parts.py"]
    assert cycles(["trainer/loop/loop.py", "trainer/loop/checkpointing.py"], tmp_path) == [["trainer/loop/checkpointing.py", "trainer/loop/loop.py", "trainer/loop/checkpointing.py"]]
