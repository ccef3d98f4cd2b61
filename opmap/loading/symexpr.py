"""A restricted parser for symbolic size expressions (``s0``, ``2*s0``, ``FloorDiv(Symbol('s0'), Integer(2))``).

Model files carry sizes as text, which ``sympy.sympify`` would ``eval``. This parser
reads the same text with Python's ``ast`` and builds the sympy objects itself from a
small grammar: identifiers (symbols), integer and float literals, ``+ - * / // % **``,
comparisons, ``& | ~``, and calls to a fixed set of sympy/torch constructors (the ones
``torch.export`` writes through ``sympy.srepr`` and prints through ``str``). Anything
else raises :class:`ValueError` naming the offending token; nothing is ever evaluated.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from typing import Any, Mapping

MAX_CHARS = 20_000  # longer than any size expression torch.export writes
MAX_NODES = 2_000
MAX_INT_BITS = 256  # literal magnitude; sizes are int64, so this leaves plenty of room
MAX_RESULT_BITS = 4_096  # bound on integer powers and shifts computed while building

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_ASSUMPTIONS = frozenset({
    "integer", "positive", "nonnegative", "negative", "nonpositive", "real", "finite", "zero", "nonzero", "even", "odd",
    "rational", "extended_real", "commutative",
})


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, Any], dict[str, Any]]:
    """(callables by name, constants by name): what an expression may name besides symbols."""
    import sympy
    from torch.utils._sympy import functions as tf
    from torch.utils._sympy.numbers import int_oo

    calls: dict[str, Any] = {
        "Integer": sympy.Integer, "Rational": sympy.Rational, "Float": sympy.Float,
        "Add": sympy.Add, "Mul": sympy.Mul, "Pow": sympy.Pow, "Max": sympy.Max, "Min": sympy.Min, "Abs": sympy.Abs,
        "floor": sympy.floor, "ceiling": sympy.ceiling,
        "Eq": sympy.Eq, "Ne": sympy.Ne, "Lt": sympy.Lt, "Le": sympy.Le, "Gt": sympy.Gt, "Ge": sympy.Ge,
        "Equality": sympy.Eq, "Unequality": sympy.Ne, "StrictLessThan": sympy.Lt, "LessThan": sympy.Le,
        "StrictGreaterThan": sympy.Gt, "GreaterThan": sympy.Ge,
        "And": sympy.And, "Or": sympy.Or, "Not": sympy.Not,
    }
    # torch's own size functions: the set its deserializer hands to sympify, where present in this torch.
    for name in ("FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
                 "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
                 "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
                 "ToFloat", "Identity"):
        if hasattr(tf, name):
            calls[name] = getattr(tf, name)
    consts = {"oo": sympy.oo, "zoo": sympy.zoo, "nan": sympy.nan, "int_oo": int_oo, "true": sympy.true,
              "false": sympy.false, "pi": sympy.pi, "E": sympy.E}
    return calls, consts


def _refuse(text: str, what: str) -> ValueError:
    return ValueError(f"symbolic expression {text[:80]!r}: {what} is not allowed")


def parse(text: str, names: Mapping[str, Any] | None = None) -> Any:
    """The sympy expression ``text`` denotes; ``names`` maps identifiers to existing sympy objects.

    An identifier not in ``names`` becomes ``Symbol(name, integer=True)`` (sizes are integers).
    """
    if not isinstance(text, str):
        raise ValueError(f"symbolic expression must be text, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise ValueError(f"symbolic expression of {len(text)} characters is longer than {MAX_CHARS}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"symbolic expression {text[:80]!r} does not parse: {type(exc).__name__}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ValueError(f"symbolic expression has more than {MAX_NODES} parts")
    return _Builder(text, names or {}).build(tree.body)


def check(text: str) -> None:
    """Raise ValueError if ``text`` is not a size expression this parser accepts."""
    parse(text)


class _Builder:
    def __init__(self, text: str, names: Mapping[str, Any]) -> None:
        import sympy

        self.sympy = sympy
        self.text = text
        self.names = names
        self.calls, self.consts = _tables()

    def build(self, node: ast.AST) -> Any:
        sympy = self.sympy
        if isinstance(node, ast.Constant):
            return self._literal(node.value)
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.UnaryOp):
            operand = self.build(node.operand)
            if isinstance(node.op, ast.USub):
                return -operand
            if isinstance(node.op, ast.UAdd):
                return operand
            if isinstance(node.op, (ast.Invert, ast.Not)):
                return sympy.Not(operand)
            raise _refuse(self.text, f"operator {type(node.op).__name__}")
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise _refuse(self.text, f"{type(node).__name__} {ast.unparse(node)[:40]!r}")

    def _literal(self, value: Any) -> Any:
        sympy = self.sympy
        if isinstance(value, bool):
            return sympy.true if value else sympy.false
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise _refuse(self.text, f"an integer of {value.bit_length()} bits")
            return sympy.Integer(value)
        if isinstance(value, float):
            return sympy.Float(value)
        raise _refuse(self.text, f"literal {value!r}"[:60])

    def _name(self, name: str) -> Any:
        if not _NAME.match(name) or name.startswith("__"):
            raise _refuse(self.text, f"name {name!r}")
        if name in self.consts:
            return self.consts[name]
        if name in ("True", "False"):
            return self._literal(name == "True")
        found = self.names.get(name)
        if found is not None:
            if not isinstance(found, self.sympy.Basic):
                raise _refuse(self.text, f"name {name!r}")
            return found
        if name in self.calls:
            raise _refuse(self.text, f"bare function name {name!r}")
        return self.sympy.Symbol(name, integer=True)

    def _binop(self, node: ast.BinOp) -> Any:
        from torch.utils._sympy.functions import FloorDiv

        left, right = self.build(node.left), self.build(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div):
            return left / right
        if isinstance(op, ast.FloorDiv):
            return FloorDiv(left, right)
        if isinstance(op, ast.Mod):
            return self.sympy.Mod(left, right)
        if isinstance(op, ast.Pow):
            self._bounded_power(left, right)
            return self.sympy.Pow(left, right)
        if isinstance(op, ast.BitAnd):
            return self.sympy.And(left, right)
        if isinstance(op, ast.BitOr):
            return self.sympy.Or(left, right)
        raise _refuse(self.text, f"operator {type(op).__name__}")

    def _compare(self, node: ast.Compare) -> Any:
        sympy = self.sympy
        ops = {ast.Eq: sympy.Eq, ast.NotEq: sympy.Ne, ast.Lt: sympy.Lt, ast.LtE: sympy.Le, ast.Gt: sympy.Gt, ast.GtE: sympy.Ge}
        parts = [self.build(node.left)] + [self.build(c) for c in node.comparators]
        out = []
        for op, a, b in zip(node.ops, parts, parts[1:]):
            fn = ops.get(type(op))
            if fn is None:
                raise _refuse(self.text, f"comparison {type(op).__name__}")
            out.append(fn(a, b))
        return out[0] if len(out) == 1 else sympy.And(*out)

    def _call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise _refuse(self.text, f"calling {ast.unparse(node.func)[:40]!r}")
        name = node.func.id
        if name == "Symbol":
            return self._symbol(node)
        if name == "Float" and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            return self._float(node)
        fn = self.calls.get(name)
        if fn is None:
            raise _refuse(self.text, f"function {name!r}")
        if node.keywords:
            raise _refuse(self.text, f"keyword {node.keywords[0].arg!r} in {name}()")
        args = [self.build(a) for a in node.args]
        if name in ("Pow", "PowByNatural", "FloatPow"):
            if len(args) == 2:
                self._bounded_power(*args)
        if name == "LShift" and len(args) == 2:
            self._bounded_shift(args[0], args[1])
        try:
            return fn(*args)
        except (TypeError, ValueError, ArithmeticError, AttributeError) as exc:
            raise ValueError(f"symbolic expression {self.text[:80]!r}: {name}() failed: {type(exc).__name__}") from None

    def _symbol(self, node: ast.Call) -> Any:
        if len(node.args) != 1 or not isinstance(node.args[0], ast.Constant) or not isinstance(node.args[0].value, str):
            raise _refuse(self.text, "Symbol() without one name")
        name = node.args[0].value
        if not _NAME.match(name) or name.startswith("__"):
            raise _refuse(self.text, f"symbol name {name!r}")
        kwargs = {}
        for kw in node.keywords:
            if kw.arg not in _ASSUMPTIONS or not isinstance(kw.value, ast.Constant) or not isinstance(kw.value.value, bool):
                raise _refuse(self.text, f"Symbol() keyword {kw.arg!r}")
            kwargs[kw.arg] = kw.value.value
        return self.sympy.Symbol(name, **kwargs)

    def _float(self, node: ast.Call) -> Any:
        text = node.args[0].value
        if len(node.args) != 1 or not _FLOAT_TEXT.match(text) or len(text) > 64:
            raise _refuse(self.text, f"Float({text!r})"[:60])
        precision = 53
        for kw in node.keywords:
            if kw.arg != "precision" or not isinstance(kw.value, ast.Constant) or type(kw.value.value) is not int \
                    or not 1 <= kw.value.value <= 1024:
                raise _refuse(self.text, f"Float() keyword {kw.arg!r}")
            precision = kw.value.value
        return self.sympy.Float(text, precision=precision)

    def _bounded_power(self, base: Any, exp: Any) -> None:
        if getattr(base, "is_Integer", False) and getattr(exp, "is_Integer", False):
            bits = max(int(abs(base)).bit_length(), 1) * abs(int(exp))
            if bits > MAX_RESULT_BITS:
                raise _refuse(self.text, f"a power of about {bits} bits")

    def _bounded_shift(self, value: Any, shift: Any) -> None:
        if getattr(shift, "is_Integer", False) and abs(int(shift)) > MAX_RESULT_BITS:
            raise _refuse(self.text, f"a shift by {int(shift)}")
