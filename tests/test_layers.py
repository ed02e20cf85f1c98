"""Layers point down (docs/architecture.md, "Layers"): every import of every speechattn module, including
imports inside functions, goes to its own package or to one the table below allows."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "speechattn"

# package -> packages it may import (besides itself). The order: bin -> inference | training -> tasks ->
# metrics | plots | models | features -> data -> utils. inference and training never import each other.
ALLOWED: dict[str, set[str]] = {
    "utils": set(),
    "data": {"utils"},
    "models": {"utils"},
    "features": {"data", "models", "utils"},
    "metrics": {"data", "utils"},
    "plots": {"utils"},
    "tasks": {"metrics", "plots", "models", "features", "data", "utils"},
    "training": {"tasks", "metrics", "plots", "models", "features", "data", "utils"},
    "inference": {"tasks", "metrics", "plots", "models", "features", "data", "utils"},
    "bin": {"inference", "training", "tasks", "metrics", "plots", "models", "features", "data", "utils"},
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """``(line, top-level speechattn package)`` of every speechattn import in ``path`` (any nesting)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "speechattn" else [f"speechattn.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, name.split(".")[1]) for name in names
                  if name.startswith("speechattn.") and len(name.split(".")) > 1]
    return sorted(found)


def module_package(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None  # speechattn/__init__.py belongs to no layer


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages - {"conf"} == set(ALLOWED)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path):
    own = module_package(path)
    if own is None:
        return
    upward = [f"{path.relative_to(PACKAGE.parent)}:{line}: {own} imports speechattn.{pkg}"
              for line, pkg in imported_packages(path) if pkg != own and pkg not in ALLOWED[own]]
    assert not upward, "\n".join(upward)


def test_the_checker_sees_function_level_and_package_imports(tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text("import speechattn.data.audio\n"
                      "def f():\n    from speechattn.training.loop import Trainer\n"
                      "from speechattn import tasks\n")
    assert imported_packages(source) == [(1, "data"), (3, "training"), (4, "tasks")]


def test_architecture_doc_and_readme_list_the_tree():
    """docs/architecture.md names every module in its package's layout line; the README every package."""
    root = PACKAGE.parent
    doc = (root / "docs" / "architecture.md").read_text()
    layout = doc[doc.index("## Layout"):doc.index("## Layers")]
    missing = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name != "__init__.py" and p.name not in layout]
    assert not missing, f"docs/architecture.md, Layout: not described: {missing}"
    readme = (root / "README.md").read_text()
    readme_layout = readme[readme.index("## Layout"):]
    assert all(f"{pkg}/" in readme_layout for pkg in ALLOWED), "README.md, Layout: a package is missing"
    assert all(d.name in readme_layout for d in (root / "docs").glob("*.md")), "README.md, Layout: a doc is missing"
