"""Discovery: rule modules, rule files, catalog-stored sources and rule packs -> strategies.

Discovery is by naming, as in pytest: ``rule_*.py`` files in a directory, ``rule_*``
functions in a module, definition order kept. Built-in rules live in the modules
listed in ``opmap.rules.BUILTIN_MODULES``; third-party packs register a module in
the ``opmap.rules`` entry-point group.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
import types
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterable

from opmap.planning import rewrite
from opmap.planning.strategy import FixtureDef, Strategy, StrategyFamily
from opmap.errors import OpmapError, RuleDefinitionError, first_line

ENTRY_POINT_GROUP = "opmap.rules"


@dataclass
class RuleSet:
    strategies: dict[str, Strategy] = field(default_factory=dict)
    fixtures: dict[str, FixtureDef] = field(default_factory=dict)  # global (built-in) fixtures
    problems: list[str] = field(default_factory=list)  # packs or stored rules that failed to load

    def add(self, strats: Iterable[Strategy]) -> None:
        for s in strats:
            other = self.strategies.get(s.id)
            if other is not None:
                raise RuleDefinitionError(
                    f"strategy id {s.id} is defined twice: in {other.source_path or other.origin} and in {s.source_path or s.origin}"
                )
            self.strategies[s.id] = s

    def for_op(self, op: str) -> list[Strategy]:
        return [s for s in self.strategies.values() if s.matches(op)]

    def __len__(self) -> int:
        return len(self.strategies)


def collect_module(module: types.ModuleType, origin: str, source_path: str | None = None) -> list[Strategy]:
    """Strategies of a module in definition order; ``rule_*`` names without @strategy are errors."""
    path = source_path or getattr(module, "__file__", None) or module.__name__
    found: list[Strategy] = []
    for name, value in list(vars(module).items()):
        if not name.startswith("rule_"):
            continue
        if isinstance(value, Strategy):
            variants = [value]
        elif isinstance(value, StrategyFamily):
            variants = list(value)
        elif isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            raise RuleDefinitionError(
                f"{path}: {name} is named like a rule but has no @strategy(id, op=..., kind=...) decorator"
            )
        else:
            continue
        for s in variants:
            s.origin, s.source_path = origin, str(path)
            found.append(s)
    return found


def module_fixtures(module: types.ModuleType) -> dict[str, FixtureDef]:
    out: dict[str, FixtureDef] = {}
    for value in vars(module).values():
        fdef = getattr(value, "__opmap_fixture__", None)
        if isinstance(fdef, FixtureDef):
            out[fdef.name] = fdef
    return out


BUILTIN_PACK = "opmap.rules"  # the built-in strategies: one module per op family


def load_builtin() -> RuleSet:
    """The built-in rules and fixtures (always rewritten, so asserts carry evidence)."""
    rewrite.install()
    from opmap.planning import fixtures

    pkg = importlib.import_module(BUILTIN_PACK)  # a pack like any other, loaded by name: plan does not depend on it
    ruleset = RuleSet(fixtures=module_fixtures(fixtures))
    for name in pkg.BUILTIN_MODULES:
        module = importlib.import_module(f"{BUILTIN_PACK}.{name}")
        ruleset.add(collect_module(module, "builtin"))
    return ruleset


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def load_source(source: str, filename: str, origin: str = "user") -> list[Strategy]:
    """Strategies from rule source text (a user file, or its copy stored in the catalog)."""
    rewrite.install()
    safe = re.sub(r"\W", "_", Path(filename).stem)
    module_name = f"opmap_user_rules.{safe}_{source_hash(source + filename)}"
    try:
        module = _import_limited(source, filename, module_name)
    except OpmapError:
        raise
    except SyntaxError as exc:
        raise RuleDefinitionError(f"{filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    except BaseException as exc:  # SystemExit, a KeyboardInterrupt raised by the file itself, ...: refused, in one line
        detail = f": {first_line(exc)}" if str(exc) else ""
        raise RuleDefinitionError(f"{filename}: importing the rule file failed: {type(exc).__name__}{detail}") from None
    return collect_module(module, origin, filename)


IMPORT_TIMEOUT_ENV = "OPMAP_RULE_IMPORT_TIMEOUT"


def _import_limited(source: str, filename: str, module_name: str) -> types.ModuleType:
    """Run a rule file's top level in a daemon worker thread, with a time limit ($OPMAP_RULE_IMPORT_TIMEOUT seconds,
    default 30). A thread rather than a subprocess: the module must live in this process, and a subprocess pre-check
    would run the file's code twice. A file that hangs is abandoned (the daemon thread cannot keep opmap alive); one
    that leaves non-daemon threads running is refused, since those would keep the process from exiting."""
    import threading

    limit = float(os.environ.get(IMPORT_TIMEOUT_ENV) or 30)
    before = set(threading.enumerate())
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["module"] = rewrite.exec_rule_source(source, filename, module_name)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=work, name=f"opmap-import {Path(filename).name}", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        raise RuleDefinitionError(f"{filename}: importing the rule file did not finish within {limit:g}s (a rule module must not "
                                  f"block at import; the limit is ${IMPORT_TIMEOUT_ENV})")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    left = [t for t in set(threading.enumerate()) - before if t.is_alive() and not t.daemon]
    if left:
        sys.modules.pop(module_name, None)
        raise RuleDefinitionError(f"{filename}: importing the rule file started threads that are still running "
                                  f"({', '.join(t.name for t in left)}); a rule module must not leave non-daemon threads behind")
    return result["module"]  # type: ignore[return-value]


def rule_files(path: Path) -> list[Path]:
    """A file as given, or the ``rule_*.py`` files under a directory, sorted."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("rule_*.py") if p.is_file())
        if not files:
            raise RuleDefinitionError(f"{path}: no rule_*.py files found")
        return files
    if not path.exists():
        raise RuleDefinitionError(f"{path}: no such file")
    if path.suffix != ".py":
        raise RuleDefinitionError(f"{path}: rule files are Python files (rule_*.py)")
    return [path]


def load_packs(ruleset: RuleSet) -> None:
    """Third-party rule packs from the ``opmap.rules`` entry-point group; failures are recorded, not fatal."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        module_name = ep.value.split(":", 1)[0]
        rewrite.FINDER.prefixes.add(module_name)
        try:
            module = importlib.import_module(module_name)
            ruleset.add(collect_module(module, f"pack:{ep.name}"))
        except Exception as exc:
            ruleset.problems.append(
                f"rule pack {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {first_line(exc)}; "
                f"expected a module whose rule_* functions carry @strategy"
            )


# -- selection: -k and -m, pytest's grammar (and / or / not / parentheses; opmap.grammar parses it) -----------------


def select(strategies: Iterable[Strategy], k: str | None = None, m: str | None = None) -> list[Strategy]:
    """``-k`` matches substrings of id, function name and ops; ``-m`` matches tags, kind and origin."""
    from opmap.grammar import evaluate, parse_selection

    by_name = parse_selection(k, "-k") if k else None  # parsed once, before any strategy: a bad one fails alone
    by_mark = parse_selection(m, "-m") if m else None
    chosen = []
    for s in strategies:
        haystack = " ".join((s.id, s.name, *s.ops)).lower()
        marks = {*s.tags, s.kind, s.origin.split(":")[0]}
        if not evaluate(by_name, lambda t: t.lower() in haystack):
            continue
        if not evaluate(by_mark, lambda t: t in marks):
            continue
        chosen.append(s)
    return chosen
