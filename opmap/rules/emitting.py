"""Emit helpers shared by the built-in rule families: PyTorch's type promotion, elementwise/unary/activation emitters,
truth values, and :func:`promoting` (the integer -> float cast in front of a float layer)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from opmap.loading.graph import Ref
from opmap.planning.fixtures import FLOAT_DTYPES
from opmap.rules.common import _promoted_name


class _Promoted:
    """An emit context whose promoted argument reads as the cast tensor; everything else is the real context's."""

    def __init__(self, ctx, name: str, tensor) -> None:
        self._ctx, self._name, self._tensor = ctx, name, tensor

    def __getattr__(self, attr: str):
        return getattr(self._ctx, attr)

    def input(self, name: str):
        return self._tensor if name == self._name else self._ctx.input(name)


def promoting(emit: Callable) -> Callable:
    """``emit`` behind PyTorch's integer -> float promotion: an int/bool ``self``/``input`` whose node outputs float is
    cast to the output dtype (under the node's precision) once, and the emitter sees the float tensor."""

    def promoted(ctx, node):
        name = _promoted_name(node)
        if name is None:
            return emit(ctx, node)
        return emit(_Promoted(ctx, name, ctx.cast(ctx.input(name), ctx.output_dtype())), node)

    promoted.__qualname__ = f"promoting({getattr(emit, '__qualname__', emit)})"
    promoted.__wrapped__ = emit
    return promoted


HALF = ("float16", "bfloat16")


def in_float32(ctx, x) -> tuple[Any, str]:
    """(x in float32, its own dtype) for a float16/bfloat16 x, else (x, its dtype): for the ops PyTorch computes in
    float32 for a half input and rounds once (sum/mean/prod, normalizations, norms, var/std, cumsum) — step by step in half the mean
    rounds (the bf16 variance of [256, 258] came out 4, not 2), squares overflow fp16 and running sums drift. The
    emitter casts its result back to the returned dtype."""
    dtype = ctx.dtype(x)
    return (ctx.cast(x, "float32") if dtype in HALF else x), dtype


def scalar_kind(value: Any) -> str:
    return "float32" if isinstance(value, float) else "bool" if isinstance(value, bool) else "int64"


def compute_dtype(node, *names: str) -> str:
    """PyTorch's type promotion over the named arguments (tensors and Python scalars)."""
    tensor_types = [node.meta(n).dtype for n in names if node.meta(n) is not None]
    scalars = [node.arg(n) for n in names if node.meta(n) is None and node.arg(n) is not None]
    result = tensor_types[0] if tensor_types else scalar_kind(scalars[0])
    for dt in tensor_types[1:]:
        result = str(torch.promote_types(getattr(torch, result), getattr(torch, dt))).removeprefix("torch.")
    for value in scalars:
        if isinstance(value, float) and not getattr(torch, result).is_floating_point:
            result = "float32"
    return result


def emit_binary(op: str, first: str = "self", second: str = "other"):
    """ElementWise ``op`` on two arguments in PyTorch's promoted dtype; ``alpha`` folded in."""

    def emit(ctx, node):
        # PyTorch computes arithmetic in the result dtype (int / int is a float division)
        dtype = ctx.output_dtype() if node.out is not None and node.out.dtype != "bool" else ctx.compute(compute_dtype(node, first, second))
        if dtype == "bool":  # bool + bool is OR, bool * bool AND: computed in int32 (no arithmetic on bool), then != 0
            dtype = "int32"
        a = ctx.cast(ctx.input(first) if node.meta(first) else ctx.const(node.arg(first), dtype), dtype)
        b = ctx.cast(ctx.operand(second, a), dtype)
        if node.op == "aten.rsub.Scalar":  # other - alpha * self: alpha scales self
            a, b = b, a
        alpha = node.arg("alpha", 1)
        if alpha not in (1, None):
            b = ctx.elementwise(b, ctx.const(alpha, dtype), "PROD")
        return ctx.cast(ctx.elementwise(a, b, op), ctx.output_dtype())

    emit.__qualname__ = f"emit_binary({op})"
    return emit


def emit_compare(*ops: str, negate: bool = False):
    """Comparisons: OR of ElementWise comparisons (NaN-correct), optionally negated (for ``ne``)."""

    def emit(ctx, node):
        dtype = ctx.compute(compute_dtype(node, "self", "other"))
        if dtype == "bool":  # PyTorch orders False < True; TensorRT compares numbers only
            dtype = "int32"
        a = ctx.cast(ctx.input("self"), dtype)
        b = ctx.cast(ctx.operand("other", a), dtype)
        out = None
        for op in ops:
            r = ctx.elementwise(a, b, op)
            out = r if out is None else ctx.elementwise(out, r, "OR")
        return ctx.unary(out, "NOT") if negate else out

    emit.__qualname__ = f"emit_compare({ops}, negate={negate})"
    return emit


def emit_unary(op: str):
    def emit(ctx, node):
        x = ctx.input("self")
        dtype = ctx.output_dtype()
        if ctx.dtype(x) not in FLOAT_DTYPES:
            if op in ("FLOOR", "CEIL", "ROUND") or (op == "SIGN" and ctx.dtype(x) == "bool"):
                return x  # an integer is its own floor/ceil/round; a bool its own sign
            if op in ("ISNAN", "ISINF"):
                x = ctx.cast(x, "float32")  # every integer is finite (and the layer takes floats only)
        if op not in ("ABS", "NEG", "SIGN", "NOT") and dtype in FLOAT_DTYPES:
            x = ctx.cast(x, dtype)
        return ctx.cast(ctx.unary(x, op), dtype)

    emit.__qualname__ = f"emit_unary({op})"
    return emit


def emit_activation(kind: str, alpha: Callable | None = None, beta: Callable | None = None):
    def emit(ctx, node):
        return ctx.activation(ctx.input("self"), kind, alpha(node) if alpha else None, beta(node) if beta else None)

    emit.__qualname__ = f"emit_activation({kind})"
    return emit


def broadcast_select(ctx, cond, a, b):
    """Select ``a`` where ``cond``, else ``b``, all three broadcast to one shape (no casts)."""
    return ctx.out(ctx.net.add_select(*ctx.broadcast(cond, a, b)), "select")


def truth(ctx, x, negate=False):
    """A tensor as bool the way PyTorch's logical ops read it: x != 0 (NaN is true; a float cast to int would truncate
    0.5 to 0), or x == 0 with ``negate``. A bool stays itself (NOT with ``negate``)."""
    if ctx.dtype(x) == "bool":
        return ctx.unary(x, "NOT") if negate else x
    zero = ctx.elementwise(x, ctx.const(0, ctx.dtype(x), shape=[1] * ctx.rank(x)), "EQUAL")
    return zero if negate else ctx.unary(zero, "NOT")


def emit_identity(ctx, node):
    """No layer: the node's value is its input's tensor."""
    first = next(iter(node.args.values()))
    return ctx.tensor(first) if isinstance(first, Ref) else ctx.input("self")
