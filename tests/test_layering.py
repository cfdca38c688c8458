"""Imports go one way: the siblings (gallery, reward_models, annotation_app) import only itercomp's core; the
core and the stages never import a sibling; only itercomp.loop and itercomp.commands (and the CLI) may."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIBLINGS = ("gallery", "reward_models", "annotation_app")
ORCHESTRATION = ("itercomp.loop", "itercomp.commands", "itercomp.cli")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _within(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _violations(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if _within(module, ORCHESTRATION):
            continue
        # A sibling may import itself and the core; the core and the stages no sibling.
        forbidden = [*ORCHESTRATION, *(s for s in SIBLINGS if s != package)]
        out += [
            f"{path.relative_to(ROOT)} imports {name}" for name in sorted(_imports(path)) if _within(name, forbidden)
        ]
    return out


@pytest.mark.parametrize("package", ["itercomp", *SIBLINGS])
def test_imports_go_one_way(package):
    assert _violations(package) == []


def test_the_walk_sees_imports_inside_functions(tmp_path):
    (tmp_path / "m.py").write_text("import gallery.run\n\n\ndef f():\n    from reward_models.data import load_image\n")
    assert _imports(tmp_path / "m.py") == {"gallery.run", "reward_models.data"}
