"""The rest of elementwise math: inverse and hyperbolic trigonometry, log2/log10/log1p/expm1/trunc/atan2, bitwise
ops with a scalar, clamp with tensor bounds, floor division by a scalar, PReLU's kernel, dot/mv, cross products and
max/min along a dim — IUnaryLayer where TensorRT has the function, exact decompositions into ElementWise, Select,
Reduce and TopK otherwise."""

import math

import torch

from opmap.planning.strategy import accept, reject
from opmap.rules.common import bool_or_int_only, define, emit_unary, float_input, not_bool, out_dims, t
from opmap.rules.elementwise import _trunc

ns = globals()


def _centred(a):
    """Values in (-0.5, 0.5): inside every inverse function's domain and away from its poles."""
    return a.sigmoid() - 0.5


TRIG = [
    ("unary/asin", "aten.asin.default", "ASIN", lambda a: torch.asin(_centred(a))),
    ("unary/acos", "aten.acos.default", "ACOS", lambda a: torch.acos(_centred(a))),
    ("unary/atan", "aten.atan.default", "ATAN", torch.atan),
    ("unary/asinh", "aten.asinh.default", "ASINH", torch.asinh),
    ("unary/acosh", "aten.acosh.default", "ACOSH", lambda a: torch.acosh(a.abs() + 1)),
    ("unary/atanh", "aten.atanh.default", "ATANH", lambda a: torch.atanh(_centred(a))),
    ("unary/sinh", "aten.sinh.default", "SINH", torch.sinh),
    ("unary/cosh", "aten.cosh.default", "COSH", torch.cosh),
    ("unary/tan", "aten.tan.default", "TAN", lambda a: torch.tan(_centred(a))),
]
for id, op, unary, fn in TRIG:
    define(ns, id, op, "direct", layers=f"Unary {unary}", example=(fn, t(2, 3)), checks=[float_input], emit=emit_unary(unary))


def _float_in(ctx):
    return ctx.cast(ctx.input("self"), ctx.output_dtype())


def _scaled_log(scale):
    def emit(ctx, node):
        x = ctx.unary(_float_in(ctx), "LOG")
        return ctx.elementwise(x, ctx.const(scale, ctx.dtype(x)), "PROD")

    emit.__qualname__ = f"scaled_log({scale})"
    return emit


def _emit_log1p(ctx, node):
    x = _float_in(ctx)
    return ctx.unary(ctx.elementwise(x, ctx.const(1.0, ctx.dtype(x)), "SUM"), "LOG")


def _emit_expm1(ctx, node):
    x = ctx.unary(_float_in(ctx), "EXP")
    return ctx.elementwise(x, ctx.const(1.0, ctx.dtype(x)), "SUB")


define(ns, "unary/log2", "aten.log2.default", "decompose", layers="Unary LOG, then PROD by 1/ln 2",
       example=(lambda a: torch.log2(a.abs() + 0.1), t(2, 3)), checks=[float_input], emit=_scaled_log(1 / math.log(2)))
define(ns, "unary/log10", "aten.log10.default", "decompose", layers="Unary LOG, then PROD by 1/ln 10",
       example=(lambda a: torch.log10(a.abs() + 0.1), t(2, 3)), checks=[float_input], emit=_scaled_log(1 / math.log(10)))
define(ns, "unary/log1p", "aten.log1p.default", "decompose", layers="SUM 1 then Unary LOG",
       example=(lambda a: torch.log1p(a.abs()), t(2, 3)), checks=[float_input], emit=_emit_log1p)
define(ns, "unary/expm1", "aten.expm1.default", "decompose", layers="Unary EXP then SUB 1",
       example=(torch.expm1, t(2, 3)), checks=[float_input], emit=_emit_expm1)
define(ns, "unary/trunc", "aten.trunc.default", "decompose", layers="Unary FLOOR where >= 0, CEIL below, by Select (no layer for an integer)",
       example=(lambda a: torch.trunc(a * 3), t(2, 3)), examples=[(torch.trunc, t(2, 3, dtype=torch.int32))], checks=[not_bool],
       bad=(torch.trunc, t(2, 3, dtype=torch.bool)), match="bool kernel",
       emit=lambda ctx, node: _trunc(ctx, _float_in(ctx)))  # an integer is its own trunc (_trunc leaves it)


def _select(ctx, cond, a, b):
    return ctx.out(ctx.net.add_select(*ctx.broadcast(cond, a, b)), "select")


def _emit_atan2(ctx, node):
    """atan(y / x), moved by ±pi where x is negative (the sign of y picks which); at y = ±0 the signs of the zeros
    decide, as PyTorch's (IEEE's) atan2 does: atan2(±0, +0) = ±0, atan2(±0, -0) = ±pi. A zero's sign is read as the
    sign of its reciprocal (±inf)."""
    dtype = ctx.output_dtype()
    y, x = ctx.cast(ctx.input("self"), dtype), ctx.cast(ctx.input("other"), dtype)
    zero, one = ctx.const(0.0, dtype), ctx.const(1.0, dtype)

    def negative(t):  # t < 0, or t is -0
        return ctx.elementwise(ctx.elementwise(t, zero, "LESS"), ctx.elementwise(ctx.elementwise(one, t, "DIV"), zero, "LESS"), "OR")

    r = ctx.unary(ctx.elementwise(y, x, "DIV"), "ATAN")
    turn = _select(ctx, negative(y), ctx.const(-math.pi, dtype), ctx.const(math.pi, dtype))
    x_neg = negative(x)
    r = _select(ctx, x_neg, ctx.elementwise(r, turn, "SUM"), r)
    both_zero = ctx.elementwise(ctx.elementwise(x, zero, "EQUAL"), ctx.elementwise(y, zero, "EQUAL"), "AND")
    return _select(ctx, both_zero, _select(ctx, x_neg, turn, y), r)


define(ns, "ew/atan2", "aten.atan2.default", "decompose",
       layers="ElementWise DIV, Unary ATAN, Select by the signs of both operands (quadrants; signed zeros as IEEE)",
       example=(torch.atan2, t(2, 3), t(3)), checks=[float_input], emit=_emit_atan2)


def _emit_bitwise_scalar(op):
    def emit(ctx, node):
        tensor, scalar = ("self", "other") if node.meta("self") is not None else ("other", "self")
        return ctx.elementwise(ctx.cast(ctx.input(tensor), "bool"), ctx.const(bool(node.arg(scalar)), "bool"), op)

    emit.__qualname__ = f"bitwise_scalar({op})"
    return emit


for name, op, fn in (("and", "AND", lambda m: m & True), ("or", "OR", lambda m: m | False), ("xor", "XOR", lambda m: m ^ True)):
    define(ns, f"logic/{name}-scalar", [f"aten.bitwise_{name}.Scalar", f"aten.bitwise_{name}.Scalar_Tensor", f"aten.__{name}__.Scalar"],
           "direct", layers=f"ElementWise {op} with a bool constant", example=(fn, t(2, 3, dtype=torch.bool)),
           bad=(fn, t(2, 3, dtype=torch.int32)), match="bool tensors only", checks=[bool_or_int_only], emit=_emit_bitwise_scalar(op))


def _emit_clamp_any(ctx, node):
    """Bounds that are tensors (broadcast, promoted) or scalars: ElementWise MAX, then MIN (PyTorch's order)."""
    out = ctx.output_dtype()
    dtype = "int32" if out == "bool" else out  # MAX/MIN take numbers: bools as 0/1
    x = ctx.cast(ctx.input("self"), dtype)
    for name, op in (("min", "MAX"), ("max", "MIN")):
        if node.arg(name) is not None:
            x = ctx.elementwise(x, ctx.cast(ctx.operand(name, x), dtype), op)
    return ctx.cast(x, out)


define(ns, "act/clamp-tensor", ["aten.clamp.Tensor", "aten.clip.Tensor", "aten.clip.default"], "direct",
       layers="ElementWise MAX with the lower bound, MIN with the upper (tensors broadcast)",
       example=(lambda a, lo: a.clamp(lo, lo + 1), t(2, 3), t(3)), emit=_emit_clamp_any)
define(ns, "ew/floor-divide-scalar", "aten.floor_divide.Scalar", "direct", layers="ElementWise FLOOR_DIV by a constant",
       example=(lambda a: torch.ops.aten.floor_divide.Scalar(a, 3), t(2, 3) * 4),
       emit=lambda ctx, node: ctx.elementwise(ctx.cast(ctx.input("self"), ctx.output_dtype()),
                                              ctx.const(node.arg("other"), ctx.output_dtype()), "FLOOR_DIV"))


def _emit_prelu_kernel(ctx, node):
    x = ctx.input("self")
    w = ctx.cast(ctx.input("weight"), ctx.dtype(x))
    positive = ctx.elementwise(x, ctx.const(0.0, ctx.dtype(x)), "GREATER")
    return _select(ctx, positive, x, ctx.elementwise(x, w, "PROD"))


define(ns, "act/prelu-kernel", "aten._prelu_kernel.default", "decompose",
       layers="Select(x > 0, x, weight * x) with the weight broadcast",
       example=(lambda a, w: torch.ops.aten._prelu_kernel.default(a, w), t(2, 3, 4), t(3, 1)), checks=[float_input],
       emit=_emit_prelu_kernel)


def _emit_dot_mv(ctx, node):
    """dot: Reduce SUM of the product; mv: the vector broadcast over the matrix rows, Reduce SUM along them."""
    dtype = ctx.output_dtype()
    a = ctx.cast(ctx.input("self"), dtype)
    b = ctx.cast(ctx.input("tensor" if node.op == "aten.dot.default" else "vec"), dtype)
    prod = ctx.elementwise(a, b, "PROD")
    rank = ctx.rank(prod)
    return ctx.out(ctx.net.add_reduce(prod, ctx.trt.ReduceOperation.SUM, 1 << (rank - 1), False), "sum")


define(ns, "linalg/dot-mv", ["aten.dot.default", "aten.mv.default"], "decompose",
       layers="ElementWise PROD (the vector broadcast), Reduce SUM over the last dim",
       example=(torch.mv, t(4, 3), t(3)), emit=_emit_dot_mv)


def _emit_cross(ctx, node):
    """c = (a1 b2 - a2 b1, a2 b0 - a0 b2, a0 b1 - a1 b0) along ``dim``: one Slice per component, concatenated."""
    dtype = ctx.output_dtype()
    a, b = ctx.broadcast(ctx.cast(ctx.input("self"), dtype), ctx.cast(ctx.input("other"), dtype))
    rank = ctx.rank(a)
    dim = node.arg("dim", -1) % rank

    def part(x, i):
        dims = ctx.dims_of(x)
        return ctx.slice(x, [i if k == dim else 0 for k in range(rank)], [1 if k == dim else d for k, d in enumerate(dims)], [1] * rank)

    def term(i, j):
        return ctx.elementwise(ctx.elementwise(part(a, i), part(b, j), "PROD"), ctx.elementwise(part(a, j), part(b, i), "PROD"), "SUB")

    layer = ctx.net.add_concatenation([term(1, 2), term(2, 0), term(0, 1)])
    layer.axis = dim
    return ctx.out(layer, "cross")


def same_rank_operands(node, **_):
    """The component slices are taken from each operand: broadcasting across ranks is not decomposed."""
    a, b = node.meta("self"), node.meta("other")
    assert a.rank == b.rank, f"operands of ranks {a.rank} and {b.rank}; unsqueeze the smaller one in the model"


define(ns, "linalg/cross", "aten.linalg_cross.default", "decompose",
       layers="three Slices per operand, ElementWise PROD/SUB, Concatenation along dim",
       example=(lambda a, b: torch.linalg.cross(a, b), t(2, 3), t(1, 3)), checks=[same_rank_operands], emit=_emit_cross)


def _emit_max_min_dim(ctx, node):
    """Reduce MAX/MIN along ``dim`` for the value; its index is the first position holding it (PyTorch's choice
    among ties): Reduce MIN over Select(x == value, position, n)."""
    x = ctx.input("self")
    rank = ctx.rank(x)
    if rank == 0:  # a 0-d input is its own extreme, at index 0 (dim 0 or -1, keepdim or not)
        return [x, ctx.const(0, "int64")]
    dim = node.arg("dim") % rank
    op = "MAX" if node.op == "aten.max.dim" else "MIN"
    values = ctx.out(ctx.net.add_reduce(x, getattr(ctx.trt.ReduceOperation, op), 1 << dim, True), op.lower())
    n = ctx.dims_of(x)[dim]
    positions = ctx.reshape(ctx.arange(n, dtype="int32"), [1] * dim + [n] + [1] * (rank - dim - 1))
    length = ctx.cast(n, "int32") if not isinstance(n, int) else ctx.const(n, "int32")
    candidates = _select(ctx, ctx.elementwise(x, values, "EQUAL"), positions, length)
    indices = ctx.cast(ctx.out(ctx.net.add_reduce(candidates, ctx.trt.ReduceOperation.MIN, 1 << dim, True), "first"), "int64")
    if not node.arg("keepdim", False):
        values, indices = ctx.reshape(values, out_dims(node, 0)), ctx.reshape(indices, out_dims(node, 1))
    return [values, indices]


define(ns, "reduce/max-min-dim", ["aten.max.dim", "aten.min.dim"], "direct",
       layers="Reduce MAX/MIN (the value), Reduce MIN over Select(x == value, position, n) (its first index)",
       example=(lambda a: a.max(1), t(2, 5, 3)), checks=[float_input], emit=_emit_max_min_dim)


def more(rule, *examples):
    """Further accept examples, so every op a strategy lists is exercised by conformance."""
    rule.examples = rule.examples + tuple(examples)


A = torch.ops.aten
more(rule_max_min_dim, accept(lambda a: a.min(-1, keepdim=True), t(3, 4)),
     reject(lambda a: a.max(1), t(2, 5, dtype=torch.int32), match="promoted only where"))  # int in, int out: no promotion
more(rule_dot_mv, accept(torch.dot, t(5), t(5)))
more(rule_clamp_tensor, accept(lambda a, hi: torch.clip(a, max=hi), t(2, 3), t(2, 1)), accept(lambda a: torch.clip(a, -0.5, 0.5), t(2, 3)))
for name in ("and", "or", "xor"):
    more(ns[f"rule_{name}_scalar"], accept(lambda m, name=name: getattr(A, f"bitwise_{name}").Scalar(m, True), t(2, 3, dtype=torch.bool)),
         accept(lambda m, name=name: getattr(A, f"bitwise_{name}").Scalar_Tensor(False, m), t(2, 3, dtype=torch.bool)))
