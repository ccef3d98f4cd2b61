"""Elementwise arithmetic, comparisons, logic and unary math (trig, hyperbolic, log2/log10/log1p/expm1, trunc, atan2):
IElementWiseLayer, IUnaryLayer, ISelectLayer."""

import math

import torch

from opmap.planning.strategy import accept, strategy
from opmap.rules.common import bool_or_int_only, cases, not_bool, promoted_float_input, t, trt_checks
from opmap.rules.emitting import broadcast_select, emit_binary, emit_compare, emit_unary, promoting, truth

A = torch.ops.aten

# (id, ops, kind, layers, example)
BINARY = [
    ("ew/add", ["aten.add.Tensor", "aten.add.Scalar"], "direct", "ElementWise SUM (alpha folded in as a PROD)", (lambda a, b: a + 2 * b, t(2, 3), t(3)), emit_binary("SUM")),
    ("ew/sub", ["aten.sub.Tensor", "aten.sub.Scalar", "aten.rsub.Scalar"], "direct", "ElementWise SUB", (lambda a, b: a - b, t(2, 3), t(2, 1)), emit_binary("SUB")),
    ("ew/mul", ["aten.mul.Tensor", "aten.mul.Scalar"], "direct", "ElementWise PROD", (lambda a, b: a * b, t(4, 1, 3), t(2, 1)), emit_binary("PROD")),
    ("ew/div", ["aten.div.Tensor", "aten.div.Scalar"], "direct", "ElementWise DIV", (lambda a, b: a / b, t(2, 3), t(3)), emit_binary("DIV")),
    ("ew/pow", ["aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar"], "direct", "ElementWise POW", (lambda a: a.abs() ** 1.5, t(2, 3)), emit_binary("POW", "self", "exponent")),
    ("ew/maximum", ["aten.maximum.default", "aten.max.other"], "direct", "ElementWise MAX", (lambda a, b: torch.maximum(a, b), t(2, 3), t(3)), emit_binary("MAX")),
    ("ew/minimum", ["aten.minimum.default", "aten.min.other"], "direct", "ElementWise MIN", (lambda a, b: torch.minimum(a, b), t(2, 3), t(3)), emit_binary("MIN")),
    ("cmp/eq", ["aten.eq.Tensor", "aten.eq.Scalar"], "direct", "ElementWise EQUAL", (lambda a, b: a == b, t(2, 3), t(3)), emit_compare("EQUAL")),
    ("cmp/gt", ["aten.gt.Tensor", "aten.gt.Scalar"], "direct", "ElementWise GREATER", (lambda a: a > 0.5, t(2, 3)), emit_compare("GREATER")),
    ("cmp/lt", ["aten.lt.Tensor", "aten.lt.Scalar"], "direct", "ElementWise LESS", (lambda a: a < 0.5, t(2, 3)), emit_compare("LESS")),
    ("cmp/ne", ["aten.ne.Tensor", "aten.ne.Scalar"], "decompose", "ElementWise EQUAL then Unary NOT", (lambda a: a != 0, t(2, 3)), emit_compare("EQUAL", negate=True)),
    ("cmp/ge", ["aten.ge.Tensor", "aten.ge.Scalar"], "decompose", "ElementWise GREATER, EQUAL, OR (NaN-correct)", (lambda a, b: a >= b, t(2, 3), t(3)), emit_compare("GREATER", "EQUAL")),
    ("cmp/le", ["aten.le.Tensor", "aten.le.Scalar"], "decompose", "ElementWise LESS, EQUAL, OR (NaN-correct)", (lambda a, b: a <= b, t(2, 3), t(3)), emit_compare("LESS", "EQUAL")),
]

# more accept examples: every listed overload exercised (Scalar overloads, alpha, reversed operands)
MORE = {
    "ew/add": [(lambda a: A.add.Scalar(a, 2, 3), t(2, 3)), (lambda a: A.add.Scalar(a, 1.5), t(2, 3, dtype=torch.int32))],
    "ew/sub": [(lambda a: A.sub.Scalar(a, 2, 3), t(2, 3)), (lambda a: A.rsub.Scalar(a, 2, 3), t(2, 3)), (lambda a: 1 - a, t(2, 3))],
    "ew/mul": [(lambda a: A.mul.Scalar(a, 2.5), t(2, 3, dtype=torch.int32))],
    "ew/div": [(lambda a: A.div.Scalar(a, 2), t(2, 3, dtype=torch.int32))],
    "ew/pow": [(lambda a, b: torch.pow(a.abs() + 0.5, b), t(2, 3), t(3)), (lambda a: torch.pow(2.0, a), t(2, 3))],
    "ew/maximum": [(lambda a, b: torch.max(a, b), t(2, 3), t(3))],
    "ew/minimum": [(lambda a, b: torch.min(a, b), t(2, 3), t(3))],
    "cmp/eq": [(lambda a: a == 2, t(2, 3, dtype=torch.int32))],
    "cmp/gt": [(lambda a, b: a > b, t(2, 3), t(3))],
    "cmp/lt": [(lambda a, b: a < b, t(2, 3), t(3))],
    "cmp/ne": [(lambda a, b: a != b, t(2, 3, dtype=torch.int32), t(3, dtype=torch.int32))],
    "cmp/ge": [(lambda a: a >= 0.5, t(2, 3))],
    "cmp/le": [(lambda a: a <= 0.5, t(2, 3))],
}

rule_binary = [strategy(id, op=ops, kind=kind, layers=layers, checks=trt_checks(), emit=emit,
                        examples=cases(example, *MORE.get(id, ())))
               for id, ops, kind, layers, example, emit in BINARY]


def _trunc(ctx, q):
    """Round toward zero: FLOOR where q >= 0, CEIL below (TensorRT has no TRUNC)."""
    if ctx.dtype(q) not in ("float32", "float16", "bfloat16"):
        return q
    negative = ctx.elementwise(q, ctx.const(0, ctx.dtype(q), shape=[1] * ctx.rank(q)), "LESS")
    return ctx.out(ctx.net.add_select(negative, ctx.unary(q, "CEIL"), ctx.unary(q, "FLOOR")), "trunc")


def _rounded_div(ctx, node, mode):
    """a / b rounded per ``mode`` (None, "trunc", "floor") in the output dtype, with the operands it used."""
    dtype = ctx.output_dtype()
    a = ctx.cast(ctx.input("self") if node.meta("self") else ctx.const(node.arg("self"), dtype), dtype)
    b = ctx.cast(ctx.operand("other", a), dtype)
    if mode == "floor":
        return ctx.elementwise(a, b, "FLOOR_DIV"), a, b
    q = ctx.elementwise(a, b, "DIV")  # integer DIV truncates toward zero (pinned in tests/test_interpreter.py)
    return (_trunc(ctx, q) if mode == "trunc" else q), a, b


def _emit_div_mode(ctx, node):
    mode = "floor" if node.op == "aten.floor_divide.default" else node.arg("rounding_mode")
    return _rounded_div(ctx, node, mode)[0]


def _emit_mod(mode):
    def emit(ctx, node):
        q, a, b = _rounded_div(ctx, node, mode)
        return ctx.elementwise(a, ctx.elementwise(q, b, "PROD"), "SUB")

    emit.__qualname__ = f"emit_mod({mode})"
    return emit


rule_div_mode = strategy(
    "ew/div-mode", op=["aten.floor_divide.default", "aten.div.Tensor_mode", "aten.div.Scalar_mode"], kind="direct",
    layers="ElementWise FLOOR_DIV (floor), DIV then FLOOR/CEIL by sign (trunc on floats; integer DIV truncates)",
    checks=trt_checks(), emit=_emit_div_mode,
    examples=cases((lambda a, b: torch.div(a, b, rounding_mode="trunc"), t(2, 3), t(3)),
                   *[(lambda a: A.div.Scalar_mode(a, -2, rounding_mode=m), t(2, 3) * 5) for m in ("floor", "trunc")]))

rule_fmod = strategy(
    "ew/fmod", op=["aten.fmod.Tensor", "aten.fmod.Scalar"], kind="decompose",
    layers="a - trunc(a / b) * b: ElementWise DIV, FLOOR/CEIL by sign, PROD, SUB (the result has the dividend's sign)",
    checks=trt_checks(), emit=_emit_mod("trunc"),
    examples=cases((lambda a, b: torch.fmod(a, b), t(2, 3), t(3))))

rule_remainder = strategy(
    "ew/remainder", op=["aten.remainder.Tensor", "aten.remainder.Scalar"], kind="decompose",
    layers="a - floor(a / b) * b: ElementWise FLOOR_DIV, PROD, SUB (the result has the divisor's sign)",
    checks=trt_checks(), emit=_emit_mod("floor"),
    examples=cases((lambda a, b: torch.remainder(a, b), t(2, 3), t(3))))


def logical_or_bool(node, **_):
    """logical_* read any dtype as != 0; the bitwise forms (``&``, ``bitwise_and``) are logical on bool tensors only."""
    if ".logical_" in node.op:
        return
    for name, meta in node.tensor_args().items():
        assert meta.dtype == "bool", (f"{name} is {meta.dtype}: {node.op} is bitwise on integers; TensorRT's AND/OR/XOR take "
                                      "bool tensors only")


def _emit_logical(op):
    def emit(ctx, node):
        return ctx.elementwise(truth(ctx, ctx.input("self")), truth(ctx, ctx.input("other")), op)

    emit.__qualname__ = f"emit_logical({op})"
    return emit


LOGICAL = [
    ("logic/and", ["aten.logical_and.default", "aten.__and__.Tensor", "aten.bitwise_and.Tensor"], "ElementWise AND", lambda a, b: a & b,
     [torch.logical_and, torch.bitwise_and], "AND"),
    ("logic/or", ["aten.logical_or.default", "aten.__or__.Tensor", "aten.bitwise_or.Tensor"], "ElementWise OR", lambda a, b: a | b,
     [torch.logical_or, torch.bitwise_or], "OR"),
    ("logic/xor", ["aten.logical_xor.default", "aten.__xor__.Tensor", "aten.bitwise_xor.Tensor"], "ElementWise XOR", lambda a, b: a ^ b,
     [torch.logical_xor, torch.bitwise_xor], "XOR"),
]

rule_logical = [strategy(id, op=ops, kind="direct", layers=f"{layers} (a non-bool operand of a logical_* op read as != 0: EQUAL 0, NOT)",
                         checks=trt_checks(logical_or_bool), emit=_emit_logical(op),
                         examples=cases((fn, t(2, 3, dtype=torch.bool), t(3, dtype=torch.bool)),
                                        *[(f, t(2, 3, dtype=torch.bool), t(2, 1, dtype=torch.bool)) for f in more],
                                        (more[0], t(2, 3), t(3, dtype=torch.int32)),  # logical_*: any dtype, read as != 0
                                        (more[0], t(2, 3, dtype=torch.int64), t(2, 1, dtype=torch.bool)),
                                        bad=(fn, t(2, 3, dtype=torch.int32), t(3, dtype=torch.int32)), match="bitwise on integers"))
                for id, ops, layers, fn, more, op in LOGICAL]


def bitwise_not_integers(node, **_):
    """``~x`` on an integer is -1 - x (two's complement, exact and wrapping as PyTorch's); a float has no bitwise not."""
    meta = node.meta("self")
    assert ".logical_" in node.op or meta.dtype in ("bool", "int32", "int64", "int8", "uint8"), (
        f"bitwise_not of a {meta.dtype} tensor: PyTorch has no such kernel")
    assert meta.dtype != "uint8" or ".logical_" in node.op, "bitwise_not of uint8 wraps at 255, not decomposed"


def _emit_not(ctx, node):
    x = ctx.input("self")
    if node.op == "aten.logical_not.default" or ctx.dtype(x) == "bool":
        return truth(ctx, x, negate=True)
    return ctx.elementwise(ctx.const(-1, ctx.dtype(x), shape=[1] * ctx.rank(x)), x, "SUB")  # ~x == -1 - x


rule_not = strategy(
    "logic/not", op=["aten.logical_not.default", "aten.bitwise_not.default"], kind="direct",
    layers="Unary NOT on bool; EQUAL 0 for logical_not of a number; -1 - x for bitwise_not of an integer",
    checks=trt_checks(bitwise_not_integers), emit=_emit_not,
    examples=cases((lambda a: ~a, t(2, 3, dtype=torch.bool)), (torch.logical_not, t(2, 3, dtype=torch.bool)),
                   (torch.logical_not, t(2, 3)), (torch.logical_not, t(2, 3, dtype=torch.int32)),
                   (lambda a: ~a, t(2, 3, dtype=torch.int64) - 4), (torch.bitwise_not, t(3, dtype=torch.int32) - 4),
                   bad=(lambda a: ~a, t(2, 3, dtype=torch.uint8)), match="uint8"))


def _select(ctx, cond, a, b):
    dtype = ctx.output_dtype()
    cond, a, b = ctx.broadcast(ctx.cast(cond, "bool"), ctx.cast(a, dtype), ctx.cast(b, dtype))
    return ctx.out(ctx.net.add_select(cond, a, b), "select")


def _emit_where(ctx, node):
    dtype = ctx.output_dtype()
    a = ctx.input("self") if node.meta("self") else ctx.const(node.arg("self"), dtype)
    return _select(ctx, ctx.input("condition"), a, ctx.operand("other", a))


def _emit_masked_fill(ctx, node):
    x = ctx.input("self")
    return _select(ctx, ctx.input("mask"), ctx.operand("value", x), x)


rule_where = strategy(
    "select/where", op=["aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf", "aten.where.Scalar"],
    kind="direct",
    layers="Select (condition, then, else) with broadcasting", checks=trt_checks(), emit=_emit_where,
    examples=cases((lambda c, a: torch.where(c, a, 0.0), t(2, 3, dtype=torch.bool), t(3)),
                   (lambda c, b: torch.where(c, 1.5, b), t(2, 3, dtype=torch.bool), t(3)),
                   (lambda c: torch.where(c, 1.0, -2.0), t(2, 3, dtype=torch.bool))))

rule_masked_fill = strategy(
    "select/masked-fill", op=["aten.masked_fill.Scalar", "aten.masked_fill.Tensor"], kind="direct",
    layers="Select with a constant fill", checks=trt_checks(), emit=_emit_masked_fill,
    examples=cases((lambda a, m: a.masked_fill(m, -1e4), t(2, 3), t(2, 3, dtype=torch.bool)),
                   (lambda a, m, v: a.masked_fill(m, v), t(2, 3), t(3, dtype=torch.bool), t())))

# dtypes: "float" (promoted from int/bool where PyTorch promotes: emitting.promoting), "integral" (an integer input is its
# own floor/ceil/round: no layer; bool refused), "predicate" (any input: non-float ones are cast to float32, where
# every value is finite), "numeric" (int and float; bool refused), "any"
UNARY = [
    ("unary/abs", "aten.abs.default", "Unary ABS", torch.abs, "numeric"),
    ("unary/neg", "aten.neg.default", "Unary NEG", torch.neg, "numeric"),
    ("unary/exp", "aten.exp.default", "Unary EXP", torch.exp, "float"),
    ("unary/log", "aten.log.default", "Unary LOG", lambda a: torch.log(a.abs() + 1), "float"),
    ("unary/sqrt", "aten.sqrt.default", "Unary SQRT", lambda a: torch.sqrt(a.abs()), "float"),
    ("unary/reciprocal", "aten.reciprocal.default", "Unary RECIP", torch.reciprocal, "float"),
    ("unary/sin", "aten.sin.default", "Unary SIN", torch.sin, "float"),
    ("unary/cos", "aten.cos.default", "Unary COS", torch.cos, "float"),
    ("unary/erf", "aten.erf.default", "Unary ERF", torch.erf, "float"),
    ("unary/floor", "aten.floor.default", "Unary FLOOR (no layer for an integer: its own floor)", torch.floor, "integral"),
    ("unary/ceil", "aten.ceil.default", "Unary CEIL (no layer for an integer: its own ceil)", torch.ceil, "integral"),
    ("unary/round", "aten.round.default", "Unary ROUND (half to even, as PyTorch; no layer for an integer)", torch.round, "integral"),
    ("unary/sign", "aten.sign.default", "Unary SIGN (no layer for a bool: its own sign)", torch.sign, "any"),
    ("unary/isnan", "aten.isnan.default", "Unary ISNAN", torch.isnan, "predicate"),
    ("unary/isinf", "aten.isinf.default", "Unary ISINF", torch.isinf, "predicate"),
]

CHECKS = {"float": [promoted_float_input], "integral": [not_bool], "numeric": [not_bool], "predicate": [], "any": []}


def _unary(id, op, layers, fn, dtypes):
    bad = (fn, t(2, 3, dtype=torch.bool)) if dtypes in ("integral", "numeric") and id != "unary/neg" else True  # -bool: export refuses
    emit = emit_unary(layers.split()[1])
    return strategy(id, op=op, kind="direct", layers=layers, checks=trt_checks(*CHECKS[dtypes]),
                    emit=promoting(emit) if dtypes == "float" else emit,
                    examples=cases((fn, t(2, 3)), (fn, t(2, 3, dtype=torch.int64 if dtypes == "numeric" else torch.int32)),
                                   bad=bad, match="bool kernel" if bad is not True else "float64"))


rule_unary = [_unary(*row) for row in UNARY]

rule_rsqrt = strategy(
    "unary/rsqrt", op="aten.rsqrt.default", kind="decompose",
    layers="Unary SQRT then Unary RECIP (TensorRT has no RSQRT)", checks=trt_checks(promoted_float_input),
    emit=promoting(lambda ctx, node: ctx.unary(ctx.unary(ctx.input("self"), "SQRT"), "RECIP")),
    examples=cases((lambda a: torch.rsqrt(a.abs() + 1), t(2, 3))))


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

rule_trig = [strategy(id, op=op, kind="direct", layers=f"Unary {unary}", checks=trt_checks(promoted_float_input),
                      emit=promoting(emit_unary(unary)), examples=cases((fn, t(2, 3))))
             for id, op, unary, fn in TRIG]


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


rule_log2 = strategy(
    "unary/log2", op="aten.log2.default", kind="decompose",
    layers="Unary LOG, then PROD by 1/ln 2", checks=trt_checks(promoted_float_input),
    emit=promoting(_scaled_log(1 / math.log(2))),
    examples=cases((lambda a: torch.log2(a.abs() + 0.1), t(2, 3))))

rule_log10 = strategy(
    "unary/log10", op="aten.log10.default", kind="decompose",
    layers="Unary LOG, then PROD by 1/ln 10", checks=trt_checks(promoted_float_input),
    emit=promoting(_scaled_log(1 / math.log(10))),
    examples=cases((lambda a: torch.log10(a.abs() + 0.1), t(2, 3))))

rule_log1p = strategy(
    "unary/log1p", op="aten.log1p.default", kind="decompose",
    layers="SUM 1 then Unary LOG", checks=trt_checks(promoted_float_input), emit=promoting(_emit_log1p),
    examples=cases((lambda a: torch.log1p(a.abs()), t(2, 3))))

rule_expm1 = strategy(
    "unary/expm1", op="aten.expm1.default", kind="decompose",
    layers="Unary EXP then SUB 1", checks=trt_checks(promoted_float_input), emit=promoting(_emit_expm1),
    examples=cases((torch.expm1, t(2, 3))))

rule_trunc = strategy(
    "unary/trunc", op="aten.trunc.default", kind="decompose",
    layers="Unary FLOOR where >= 0, CEIL below, by Select (no layer for an integer)", checks=trt_checks(not_bool),
    emit=lambda ctx, node: _trunc(ctx, _float_in(ctx)),
    examples=cases((lambda a: torch.trunc(a * 3), t(2, 3)), (torch.trunc, t(2, 3, dtype=torch.int32)),
                   bad=(torch.trunc, t(2, 3, dtype=torch.bool)), match="bool kernel"))  # an integer is its own trunc (_trunc leaves it)


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
    turn = broadcast_select(ctx, negative(y), ctx.const(-math.pi, dtype), ctx.const(math.pi, dtype))
    x_neg = negative(x)
    r = broadcast_select(ctx, x_neg, ctx.elementwise(r, turn, "SUM"), r)
    both_zero = ctx.elementwise(ctx.elementwise(x, zero, "EQUAL"), ctx.elementwise(y, zero, "EQUAL"), "AND")
    return broadcast_select(ctx, both_zero, broadcast_select(ctx, x_neg, turn, y), r)


rule_atan2 = strategy(
    "ew/atan2", op="aten.atan2.default", kind="decompose",
    layers="ElementWise DIV, Unary ATAN, Select by the signs of both operands (quadrants; signed zeros as IEEE)",
    checks=trt_checks(promoted_float_input), emit=promoting(_emit_atan2),
    examples=cases((torch.atan2, t(2, 3), t(3))))


def _emit_bitwise_scalar(op):
    def emit(ctx, node):
        tensor, scalar = ("self", "other") if node.meta("self") is not None else ("other", "self")
        return ctx.elementwise(ctx.cast(ctx.input(tensor), "bool"), ctx.const(bool(node.arg(scalar)), "bool"), op)

    emit.__qualname__ = f"bitwise_scalar({op})"
    return emit


def _bitwise_scalar(name, op, fn):
    bitwise = getattr(torch.ops.aten, f"bitwise_{name}")
    return strategy(f"logic/{name}-scalar", op=[f"aten.bitwise_{name}.Scalar", f"aten.bitwise_{name}.Scalar_Tensor", f"aten.__{name}__.Scalar"],
                    kind="direct", layers=f"ElementWise {op} with a bool constant", checks=trt_checks(bool_or_int_only),
                    emit=_emit_bitwise_scalar(op),
                    examples=cases((fn, t(2, 3, dtype=torch.bool)), bad=(fn, t(2, 3, dtype=torch.int32)), match="bool tensors only")
                    + [accept(lambda m: bitwise.Scalar(m, True), t(2, 3, dtype=torch.bool)),
                       accept(lambda m: bitwise.Scalar_Tensor(False, m), t(2, 3, dtype=torch.bool))])


rule_bitwise_scalar = [_bitwise_scalar(name, op, fn) for name, op, fn in
                       (("and", "AND", lambda m: m & True), ("or", "OR", lambda m: m | False), ("xor", "XOR", lambda m: m ^ True))]

rule_floor_divide_scalar = strategy(
    "ew/floor-divide-scalar", op="aten.floor_divide.Scalar", kind="direct",
    layers="ElementWise FLOOR_DIV by a constant", checks=trt_checks(),
    emit=lambda ctx, node: ctx.elementwise(ctx.cast(ctx.input("self"), ctx.output_dtype()),
                                           ctx.const(node.arg("other"), ctx.output_dtype()), "FLOOR_DIV"),
    examples=cases((lambda a: torch.ops.aten.floor_divide.Scalar(a, 3), t(2, 3) * 4)))
