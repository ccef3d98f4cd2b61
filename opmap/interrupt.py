"""Ctrl-C that cannot be lost: the CLI notes every SIGINT, so native code or a broad ``except`` cannot swallow it.

A SIGINT that reaches Python while TensorRT (or a pybind11 module's import) is calling back into it can come out as
a failed build or an ImportError. :func:`check` re-raises it at the points where that would otherwise turn into a
wrong result (a false probe row, "backend not installed") or a write (a catalog commit, an engine's rename); the
CLI exits 130 whenever a SIGINT arrived, whatever the command returned.
"""

from __future__ import annotations

import signal
import threading

_hit = threading.Event()


def _on_sigint(signum, frame) -> None:
    _hit.set()
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT through :func:`_on_sigint` (main thread only; elsewhere Python's default stays)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def interrupted() -> bool:
    return _hit.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived (even one something else caught)."""
    if _hit.is_set():
        raise KeyboardInterrupt
