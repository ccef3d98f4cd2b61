"""Custom TensorRT plugins (IPluginV3) used by ``plugin`` strategies.

A plugin strategy applies only where its plugin library is registered here (and the
backend can add plugin layers at all; TensorRT-RTX cannot). Rule packs are found
through the ``opmap.rules`` entry-point group (see ``opmap.planning.collect``).
"""

from __future__ import annotations

_REGISTRY: dict[str, str] = {}  # plugin name -> library path


def register_plugin(name: str, library: str) -> None:
    """Declare that a compiled IPluginV3 library provides ``name`` (e.g. "opmap::NonZero")."""
    _REGISTRY[name] = library


def plugin_available(name: str) -> bool:
    return name in _REGISTRY


def registered_plugins() -> dict[str, str]:
    return dict(_REGISTRY)
