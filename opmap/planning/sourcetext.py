"""Function source text, cached on disk per file content.

Every strategy's source hash covers its rule's (and emit function's) text, and ``inspect.getsource`` finds that
text by tokenizing the file: about half a second per start for the built-in rules. The text of a function is a
function of its file's content and its first line, so it is stored under the hash of the whole file (as linecache
reads it), one entry per file holding ``first line:name -> text``. A file that changed is a new entry; what is not
in linecache (no file, no registered source) goes to ``inspect`` as before, as does every miss.
"""

from __future__ import annotations

import inspect
import json
import linecache
import sys
from types import CodeType
from typing import Any, Callable

from opmap.planning import diskcache

KIND = "source"
_FILES: dict[str, tuple[list[str], str, dict[str, str]]] = {}  # filename -> (linecache's lines, entry name, entries)


def code_source(code: CodeType) -> str:
    """``inspect.getsource(code)``, from the disk cache when the file's content was seen before."""
    filename = code.co_filename
    linecache.checkcache(filename)  # as inspect does: a file edited on disk is read again
    lines = linecache.getlines(filename)
    if not lines or not diskcache.enabled():
        return inspect.getsource(code)
    known = _FILES.get(filename)
    if known is None or known[0] is not lines:  # linecache hands out a new list when it reads the file again
        name = diskcache.key(KIND, sys.version, filename, "".join(lines))
        known = _FILES[filename] = (lines, name, _entries(diskcache.load(KIND, name)))
    _, name, entries = known
    slot = f"{code.co_firstlineno}:{code.co_name}"
    text = entries.get(slot)
    if text is None:
        text = entries[slot] = inspect.getsource(code)
        diskcache.store(KIND, name, json.dumps(entries).encode())
    return text


def _entries(payload: bytes | None) -> dict[str, str]:
    try:
        entries = json.loads(payload) if payload else {}
    except ValueError:
        return {}
    return entries if isinstance(entries, dict) and all(isinstance(v, str) for v in entries.values()) else {}


def function_source(fn: Callable) -> str:
    """``inspect.getsource``, once per code object: the closures a rule factory makes share their text."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    return _code_source(code) if code is not None else inspect.getsource(fn)


_CODE_SOURCES: dict[int, tuple[Any, str]] = {}


def _code_source(code) -> str:
    """Cached by the code object's identity, not its value: two texts that differ only in comments compile to equal
    code objects, and a rule edited that way must still get its new source (and hash)."""
    hit = _CODE_SOURCES.get(id(code))
    if hit is None or hit[0] is not code:
        hit = _CODE_SOURCES[id(code)] = (code, code_source(code))  # the entry keeps the code alive: its id stays its own
    return hit[1]
