"""What a strategy's functions reach inside opmap: the source text its hash covers.

A strategy's measurements are keyed by its source hash, so the hash must change whenever anything its rule, emit or
expand function runs inside opmap changes; otherwise an edited shared helper leaves stale measurements that still look
current. From each function the walk follows, transitively:

- the global names its code (and the code of functions nested in it) uses, resolved in its module: functions and
  classes defined in opmap or in the user's rule file, and attributes of opmap modules it names (``symexpr.parse``);
- the values its closure holds: functions (a factory's inner emit function calls what the factory was given) and
  plain constants (``emit_binary("SUM")`` and ``emit_binary("PROD")`` share their text, not their operation);
- the **API a rule and an emitter are handed**: ``node``/``graph`` (:mod:`opmap.loading.graph`), the built-in fixtures
  (:mod:`opmap.planning.fixtures`), the backend profile and the emit context (``opmap/building/backend.py``,
  ``opmap/building/builder.py``). Their methods are reached by name (``ctx.cast`` reaches every API method called
  ``cast``), read from those files' text (planning never imports building), and followed in turn.

Matching methods by name over-approximates (a ``.dtype`` on a torch tensor also reaches ``EmitContext.dtype``): a
hash changes more often than strictly needed, never less.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

from opmap.planning.sourcetext import code_text

OPMAP = Path(__file__).resolve().parent.parent
API_FILES = ("loading/graph.py", "planning/fixtures.py", "building/backend.py", "building/builder.py")
_PLAIN = (str, int, float, bool, type(None))


def _ours(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "opmap" or module.startswith(("opmap.", "opmap_"))  # opmap, or a user rule file's module


_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL"})


@lru_cache(maxsize=None)
def _code_names(code: types.CodeType) -> tuple[frozenset[str], frozenset[str]]:
    """(global names, all names) the code and the code nested in it use; all names include attributes
    (``ctx.cast``) and the parameters (a rule's fixtures by name)."""
    import dis

    names = set(code.co_names) | set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
    globals_ = {i.argval for i in dis.get_instructions(code) if i.opname in _GLOBAL_OPS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner_globals, inner = _code_names(const)
            globals_ |= inner_globals
            names |= inner
    return frozenset(globals_), frozenset(names)


class _Api:
    """The methods and module functions of the API files: name -> [(key, text, names it uses)]."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[tuple[str, str, frozenset[str]]]] = {}
        for rel in API_FILES:
            lines = (OPMAP / rel).read_text().splitlines(keepends=True)
            for top in ast.parse("".join(lines)).body:
                if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self._add(Path(rel).stem, top, lines)
                elif isinstance(top, ast.ClassDef):
                    for item in top.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            self._add(top.name, item, lines)

    def _add(self, where: str, node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> None:
        text, used = _segment(node, lines)
        self.by_name.setdefault(node.name, []).append((f"{where}.{node.name}", text, used))


def _segment(node: ast.AST, lines: list[str]) -> tuple[str, frozenset[str]]:
    """A definition's text (decorators included) and the names and attributes it uses."""
    used = frozenset(n.id if isinstance(n, ast.Name) else n.attr
                     for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute)))
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return "".join(lines[first - 1: node.end_lineno]), used


@lru_cache(maxsize=None)
def _classes(filename: str, size: int, mtime: float) -> dict[str, tuple[str, frozenset[str]]]:
    """Top-level classes of a file: name -> (text, names used in it)."""
    lines = Path(filename).read_text().splitlines(keepends=True)
    return {top.name: _segment(top, lines) for top in ast.parse("".join(lines)).body if isinstance(top, ast.ClassDef)}


def _class_text(cls: type) -> tuple[str, frozenset[str]]:
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    if filename:
        stat = os.stat(filename)
        hit = _classes(filename, stat.st_size, stat.st_mtime).get(cls.__qualname__)
        if hit is not None:
            return hit
    return cls.__qualname__, frozenset()


@lru_cache(maxsize=1)
def _api() -> _Api:
    return _Api()


def _function_text(fn: Callable) -> str:
    try:
        return code_text(fn.__code__)  # its own text: a wrapper is not its wrapped function (that one is walked too)
    except (OSError, TypeError):
        return getattr(fn, "__qualname__", repr(fn))


def _key(obj: Any, text: str) -> str:
    """A name for a reached text that does not depend on where it sits: moving a helper to another module or line
    keeps the hash; changing its text does not."""
    return f"{getattr(obj, '__qualname__', '?')}#{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def reached(roots: Iterable[Callable | None]) -> list[tuple[str, str]]:
    """(key, text) of everything the functions ``roots`` reach, sorted by key: the roots' own text included."""
    api = _api()
    out: dict[str, str] = {}
    names_seen: set[str] = set()
    seen: set[int] = set()  # ids of the functions and classes walked (all alive: the roots and modules hold them)
    todo: list[Any] = [r for r in roots if r is not None]

    def follow_names(names: Iterable[str]) -> None:
        for name in names:
            if name in names_seen:
                continue
            names_seen.add(name)
            for key, text, used in api.by_name.get(name, ()):
                out[key] = text
                follow_names(used)

    def follow_code(fn: Any, code: types.CodeType) -> None:
        global_names, names = _code_names(code)
        follow_names(names)
        module_globals = getattr(fn, "__globals__", {})
        for name in global_names:  # a name the code loads as a global, not an attribute that happens to match one
            value = module_globals.get(name)
            if isinstance(value, types.ModuleType):
                if value.__name__.split(".")[0] == "opmap":
                    todo.extend(a for a in (getattr(value, n, None) for n in names) if _walkable(a))
            elif _walkable(value):
                todo.append(value)
        for i, cell in enumerate(getattr(fn, "__closure__", None) or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            held = value if isinstance(value, (tuple, list)) else (value,)  # a table row's checks sit in a tuple
            for v in held:
                if isinstance(v, _PLAIN):
                    out[f"{fn.__qualname__}#cell{i}={v!r}"] = ""
                elif _walkable(v):
                    todo.append(v)
        wrapped = getattr(fn, "__wrapped__", None)  # promoting(emit): the wrapper's text and the emitter's
        if _walkable(wrapped):
            todo.append(wrapped)

    while todo:
        obj = todo.pop()
        if hasattr(obj, "rule") and hasattr(obj, "emit_fn"):  # a Strategy another rule names: its functions
            todo += [f for f in (obj.rule, obj.emit_fn, obj.expand_fn) if f is not None]
            continue
        if hasattr(obj, "variants"):  # a StrategyFamily
            todo += list(obj.variants)
            continue
        fn = obj
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if isinstance(fn, type):
            text, used = _class_text(fn)
            out[_key(fn, text)] = text
            follow_names(used)
            for method in vars(fn).values():  # their text is the class's; what they call is followed
                if isinstance(method, types.FunctionType) and id(method) not in seen:
                    seen.add(id(method))
                    follow_code(method, method.__code__)
            continue
        code = getattr(fn, "__code__", None)
        if code is None:
            continue
        text = _function_text(fn)
        out[_key(fn, text)] = text
        follow_code(fn, code)
    return sorted(out.items())


def _walkable(value: Any) -> bool:
    return value is not None and _ours(value) and (callable(value) or isinstance(value, type))


def digest(roots: Iterable[Callable | None]) -> str:
    """sha256 over :func:`reached`'s texts."""
    h = hashlib.sha256()
    for key, text in reached(roots):
        h.update(f"{key}\n{text}\n".encode())
    return h.hexdigest()


KIND = "reach"  # the disk cache's kind for built-in digests
_BUILTIN: dict[str, Any] = {}  # {"name": cache entry name, "digests": {strategy id: digest}}


def builtin(roots: Iterable[Callable | None]) -> bool:
    """Whether every root is defined in the built-in rule pack (``opmap.rules``): its text is in opmap's files."""
    return all((getattr(r, "__module__", "") or "").startswith("opmap.rules.") for r in roots if r is not None)


def builtin_digest(strategy_id: str, roots: Iterable[Callable | None]) -> str:
    """:func:`digest` of a built-in strategy, cached on disk under the text of every opmap source file (plus Python's
    and torch's versions, which the rule modules may compute constants from): the walk reads a few hundred functions,
    and ``suggest`` should not pay for it on every start."""
    from opmap.planning import diskcache

    if not diskcache.enabled():
        return digest(roots)
    if not _BUILTIN:
        import torch

        h = hashlib.sha256(f"{sys.version}|{torch.__version__}".encode())
        for path in sorted(OPMAP.rglob("*.py")):
            h.update(str(path.relative_to(OPMAP)).encode() + b"\0" + path.read_bytes() + b"\0")
        _BUILTIN["name"] = diskcache.key(KIND, h.hexdigest())
        payload = diskcache.load(KIND, _BUILTIN["name"])
        try:
            _BUILTIN["digests"] = json.loads(payload) if payload else {}
        except ValueError:
            _BUILTIN["digests"] = {}
    digests = _BUILTIN["digests"]
    if not isinstance(digests.get(strategy_id), str):
        digests[strategy_id] = digest(roots)
        diskcache.store(KIND, _BUILTIN["name"], json.dumps(digests).encode())
    return digests[strategy_id]
