"""User-facing errors: one line, a non-zero exit code, never a traceback."""

from __future__ import annotations

import re


class OpmapError(Exception):
    """An error the user can act on. ``str(err)`` is the one line the CLI prints."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(" ".join(message.split()))  # always one line
        if exit_code is not None:
            self.exit_code = exit_code


class CaptureError(OpmapError):
    """The model file could not be turned into a graph."""


class CatalogError(OpmapError):
    """The catalog refused an operation (nothing was changed)."""


class RuleDefinitionError(OpmapError):
    """A rule file or rule pack is malformed; names the file and the rule."""


class BuildError(OpmapError):
    """A node could not be emitted or the network did not build; names the node and strategy."""


class EmitterBug(BuildError):
    """An emitter raised something other than a :class:`BuildError`: a bug in the strategy or in opmap, not a problem
    of the model. Exit 3 ("internal error"); the original exception is its ``__cause__`` (``OPMAP_DEBUG=1`` shows it)."""

    exit_code = 3


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (terminal colour codes removed), for wrapping third-party
    errors."""
    for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return type(exc).__name__


def load_failure(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a data file, in opmap's terms: torch's own message goes on to
    offer ``weights_only=False``, which opmap never uses for data files (unpickling arbitrary objects runs code)."""
    if "Weights only load failed" in str(exc):
        return "it holds Python objects other than tensors, and loading those would run code (opmap loads data files " \
               "with weights_only=True only)"
    return first_line(exc)
