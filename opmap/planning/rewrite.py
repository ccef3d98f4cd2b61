"""Assertion rewriting for rule modules, in the manner of pytest.

A rule rejects a strategy with ``assert cond, "reason"``. To make the audit record
useful, each ``assert`` in a rule module is rewritten at import so that, when it
fails, the raised :class:`RuleAssertion` carries the failing expression's source
and the value of every sub-expression that was evaluated (calls included, each
evaluated exactly once, short-circuiting preserved). Nothing is evaluated twice,
so rules with costly or stateful helpers stay correct.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import marshal
import sys
import types
from typing import Any

from opmap.loading.graph import Graph, Node

_REC = "__opmap_rec__"
_FAIL = "__opmap_fail__"
_VALS = "__opmap_vals__"
_MAX_REPR = 160


class RuleAssertion(AssertionError):
    """A failed ``assert`` in a rule: the reason, the expression and the values seen."""

    def __init__(self, reason: str | None, expression: str, evidence: dict[str, str]) -> None:
        super().__init__(reason if reason is not None else f"assert {expression}")
        self.reason = reason
        self.expression = expression
        self.evidence = evidence


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not hide the verdict
        text = f"<repr failed: {type(exc).__name__}>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def __opmap_rec__(values: dict, source: str, value: Any) -> Any:
    values[source] = value
    return value


def __opmap_fail__(values: dict, expression: str, message: Any) -> RuleAssertion:
    evidence: dict[str, str] = {}
    for source, value in values.items():
        if source == expression or isinstance(value, (types.ModuleType, types.FunctionType, type, Node, Graph)):
            continue  # the node and graph themselves: the audit record names them already (and their names are per node)
        if source == _short_repr(value):  # a literal tells nothing new
            continue
        evidence[source] = _short_repr(value)
    return RuleAssertion(None if message is None else str(message), expression, evidence)


class _Recorder(ast.NodeTransformer):
    """Wraps each interesting sub-expression ``e`` as ``__opmap_rec__(vals, "src", e)``."""

    def __init__(self, values_name: str) -> None:
        self.values_name = values_name

    def _wrap(self, node: ast.expr, original: ast.expr) -> ast.expr:
        call = ast.Call(
            func=ast.Name(_REC, ast.Load()),
            args=[ast.Name(self.values_name, ast.Load()), ast.Constant(ast.unparse(original)), node],
            keywords=[],
        )
        return ast.copy_location(call, original)

    # Scoped constructs keep their own semantics: never rewrite inside them.
    def visit_Lambda(self, node):
        return node

    def visit_ListComp(self, node):
        return self._wrap(node, node)

    visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_ListComp

    def visit_Constant(self, node):
        return node

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load) and node.id not in ("True", "False", "None"):
            return self._wrap(node, node)
        return node

    def visit_Call(self, node):
        original = ast.parse(ast.unparse(node), mode="eval").body
        # Record the arguments and the call's result, not the bound method itself.
        node.args = [self.visit(a) for a in node.args]
        for kw in node.keywords:
            kw.value = self.visit(kw.value)
        if isinstance(node.func, ast.Attribute):
            node.func.value = self.visit(node.func.value)
        return self._wrap(node, original)

    def generic_visit_expr(self, node):
        original = ast.parse(ast.unparse(node), mode="eval").body
        super().generic_visit(node)
        return self._wrap(node, original)

    visit_Attribute = visit_Subscript = visit_Compare = visit_BinOp = visit_UnaryOp = generic_visit_expr

    def visit_BoolOp(self, node):
        original = ast.parse(ast.unparse(node), mode="eval").body
        node.values = [self.visit(v) for v in node.values]
        return self._wrap(node, original)


class _AssertRewriter(ast.NodeTransformer):
    def __init__(self) -> None:
        self.count = 0

    def visit_Assert(self, node: ast.Assert):
        self.count += 1
        values_name = f"{_VALS}{self.count}"
        expression = ast.unparse(node.test)
        test = _Recorder(values_name).visit(ast.parse(expression, mode="eval").body)
        msg = node.msg if node.msg is not None else ast.Constant(None)
        raise_fail = ast.Raise(
            exc=ast.Call(
                func=ast.Name(_FAIL, ast.Load()),
                args=[ast.Name(values_name, ast.Load()), ast.Constant(expression), msg],
                keywords=[],
            ),
            cause=None,
        )
        init = ast.Assign(targets=[ast.Name(values_name, ast.Store())], value=ast.Dict(keys=[], values=[]))
        check = ast.If(test=ast.UnaryOp(ast.Not(), test), body=[raise_fail], orelse=[])
        out = [init, check]
        for stmt in out:
            ast.copy_location(stmt, node)
            ast.fix_missing_locations(stmt)
        for sub in ast.walk(check):
            if hasattr(sub, "lineno"):
                sub.lineno, sub.end_lineno = node.lineno, node.end_lineno
        return out


def compile_rule_source(source: str, filename: str) -> types.CodeType:
    """Parse, rewrite asserts, compile. Registers the source with linecache for inspect.

    The rewritten bytecode is cached on disk (see :mod:`opmap.planning.diskcache`), keyed by the source, the file
    name, this rewriter's own source, opmap's version and Python's, the way pytest caches rewritten test modules."""
    from opmap.planning import diskcache

    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    name = diskcache.key(source, filename, _rewriter_hash(), sys.version, _opmap_version())
    cached = diskcache.load("rules", name)
    if cached is not None:
        try:
            code = marshal.loads(cached)
            if isinstance(code, types.CodeType):
                return code
        except (ValueError, EOFError, TypeError):
            pass  # a corrupt entry is ignored, then rewritten
    tree = ast.parse(source, filename=filename)
    tree = _AssertRewriter().visit(tree)
    ast.fix_missing_locations(tree)
    code = compile(tree, filename, "exec", dont_inherit=True)
    diskcache.store("rules", name, marshal.dumps(code))
    return code


@functools.lru_cache(maxsize=1)
def _rewriter_hash() -> str:
    """This module's source: a change to the rewriting invalidates the cached bytecode."""
    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _opmap_version() -> str:
    from opmap.version import __version__

    return __version__


def exec_rule_source(source: str, filename: str, module_name: str) -> types.ModuleType:
    """Create a module from rule source (a user file or catalog-stored text)."""
    module = types.ModuleType(module_name)
    module.__file__ = filename
    module.__dict__[_REC] = __opmap_rec__
    module.__dict__[_FAIL] = __opmap_fail__
    sys.modules[module_name] = module
    try:
        exec(compile_rule_source(source, filename), module.__dict__)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


class _RewritingLoader(importlib.machinery.SourceFileLoader):
    def source_to_code(self, data, path, *, _optimize=-1):  # type: ignore[override]
        return compile_rule_source(importlib.util.decode_source(data), str(path))

    def exec_module(self, module):
        module.__dict__[_REC] = __opmap_rec__
        module.__dict__[_FAIL] = __opmap_fail__
        super().exec_module(module)

    def get_code(self, fullname):  # never use or write cached bytecode for rewritten modules
        source = self.get_data(self.get_filename(fullname))
        return self.source_to_code(source, self.get_filename(fullname))


class RewritingFinder(importlib.abc.MetaPathFinder):
    """Rewrites asserts in ``opmap.rules.*`` and in registered rule-pack modules."""

    def __init__(self) -> None:
        self.prefixes: set[str] = {"opmap.rules"}

    def wants(self, fullname: str) -> bool:
        return any(fullname == p or fullname.startswith(p + ".") for p in self.prefixes)

    def find_spec(self, fullname, path, target=None):
        if not self.wants(fullname):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _RewritingLoader(fullname, spec.origin)
        return spec


FINDER = RewritingFinder()


def install() -> RewritingFinder:
    if FINDER not in sys.meta_path:
        sys.meta_path.insert(0, FINDER)
    return FINDER
