"""The import rules of docs/ARCHITECTURE.md, checked on the source so a break fails loudly.

Every `import` and `from ... import` statement of every module of the package
is read with `ast` (including imports inside functions and under
TYPE_CHECKING: a rule about layers holds for annotations too).
"""

from __future__ import annotations

import ast
from pathlib import Path

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
