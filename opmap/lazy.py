"""Attributes of a package that load their module on first access (so that importing the package stays light)."""

from __future__ import annotations

from typing import Any, Callable


def lazy_attributes(package: str, table: dict[str, tuple[str, ...]], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: a name listed under a module in ``table`` (module -> names) is
    imported from it on first access and kept in ``namespace`` (the package's globals)."""

    def __getattr__(name: str) -> Any:
        for module, names in table.items():
            if name in names:
                import importlib

                value = getattr(importlib.import_module(module), name)
                namespace[name] = value
                return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
