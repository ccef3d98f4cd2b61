"""The house plan (README, "Architecture"): loading -> planning -> building -> checking, imports only downward, no circles.

Every ``import`` statement counts, at module level or inside a function (a lazy import is still a dependency); only
imports under ``if TYPE_CHECKING:`` (annotations, never executed) are exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "opmap"
LAYERS = ("loading", "planning", "building", "checking")  # each may import the ones before it
SHARED = ("errors", "atomic", "nonfinite", "grammar", "native", "interrupt", "version")  # small modules every layer may import


def opmap_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of an opmap module in ``path``; ``from opmap.loading import graph`` is
    ``opmap.loading.graph``."""
    found: list[tuple[int, str]] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module == "opmap" or child.module.startswith("opmap."):
                    for alias in child.names:
                        whole = f"{child.module}.{alias.name}"
                        found.append((child.lineno, whole if _is_module(whole) else child.module))
            elif isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names if a.name.split(".")[0] == "opmap")
            walk(child)

    walk(ast.parse(path.read_text()))
    return found


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _layer_modules() -> dict[str, Path]:
    return {f"opmap.{layer}.{p.stem}": p for layer in LAYERS for p in sorted((ROOT / layer).glob("*.py"))}


def _target(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_four_packages_exist_and_say_what_they_own():
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((ROOT / layer / "__init__.py").read_text()))
        assert doc and "Imports:" in doc, f"opmap/{layer}/__init__.py must say what it owns and what it may import"
    assert not (ROOT / "engine").exists(), "opmap/engine was split into loading/planning/building/checking"


@pytest.mark.parametrize("module", sorted(_layer_modules()))
def test_imports_only_downward(module):
    layer = module.split(".")[1]
    allowed = set(LAYERS[: LAYERS.index(layer) + 1]) | set(SHARED)
    for line, imported in opmap_imports(_layer_modules()[module]):
        target = _target(imported)
        assert target in allowed, (
            f"{module} (line {line}) imports {imported}: the {layer} layer may import only "
            f"{', '.join(sorted(allowed))}"
        )


def test_shared_modules_import_no_layer():
    for name in SHARED:
        for line, imported in opmap_imports(ROOT / f"{name}.py"):
            assert _target(imported) in SHARED, f"opmap/{name}.py (line {line}) imports {imported}"


def test_no_circle_between_modules():
    modules = _layer_modules()
    edges = {
        m: {".".join(i.split(".")[:3]) for _, i in opmap_imports(p) if _target(i) in LAYERS and i.count(".") >= 2}
        for m, p in modules.items()
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges.get(m, ())):
            assert state.get(n) != 1, "import circle: " + " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_lazy_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from opmap.checking.verify import draw_inputs\n    return draw_inputs\n"
                   "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from opmap.checking import interpreter\n")
    assert opmap_imports(bad) == [(2, "opmap.checking.verify")]
