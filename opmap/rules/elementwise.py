"""Elementwise arithmetic, comparisons, logic and unary math: IElementWiseLayer, IUnaryLayer, ISelectLayer."""

import torch

from opmap.rules.common import bool_or_int_only, define, float_input, not_mutating_inputs, t

ns = globals()

# (id, ops, kind, layers, example)
BINARY = [
    ("ew/add", ["aten.add.Tensor", "aten.add.Scalar"], "direct", "ElementWise SUM (alpha folded in as a PROD)", (lambda a, b: a + 2 * b, t(2, 3), t(3))),
    ("ew/sub", ["aten.sub.Tensor", "aten.sub.Scalar", "aten.rsub.Scalar"], "direct", "ElementWise SUB", (lambda a, b: a - b, t(2, 3), t(2, 1))),
    ("ew/mul", ["aten.mul.Tensor", "aten.mul.Scalar"], "direct", "ElementWise PROD", (lambda a, b: a * b, t(4, 1, 3), t(2, 1))),
    ("ew/div", ["aten.div.Tensor", "aten.div.Scalar"], "direct", "ElementWise DIV", (lambda a, b: a / b, t(2, 3), t(3))),
    ("ew/floor-div", ["aten.floor_divide.default", "aten.div.Tensor_mode"], "direct", "ElementWise FLOOR_DIV", (lambda a, b: torch.div(a, b, rounding_mode="floor"), t(2, 3), t(3))),
    ("ew/pow", ["aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar"], "direct", "ElementWise POW", (lambda a: a.abs() ** 1.5, t(2, 3))),
    ("ew/maximum", ["aten.maximum.default", "aten.max.other"], "direct", "ElementWise MAX", (lambda a, b: torch.maximum(a, b), t(2, 3), t(3))),
    ("ew/minimum", ["aten.minimum.default", "aten.min.other"], "direct", "ElementWise MIN", (lambda a, b: torch.minimum(a, b), t(2, 3), t(3))),
    ("cmp/eq", ["aten.eq.Tensor", "aten.eq.Scalar"], "direct", "ElementWise EQUAL", (lambda a, b: a == b, t(2, 3), t(3))),
    ("cmp/gt", ["aten.gt.Tensor", "aten.gt.Scalar"], "direct", "ElementWise GREATER", (lambda a: a > 0.5, t(2, 3))),
    ("cmp/lt", ["aten.lt.Tensor", "aten.lt.Scalar"], "direct", "ElementWise LESS", (lambda a: a < 0.5, t(2, 3))),
    ("cmp/ne", ["aten.ne.Tensor", "aten.ne.Scalar"], "decompose", "ElementWise EQUAL then Unary NOT", (lambda a: a != 0, t(2, 3))),
    ("cmp/ge", ["aten.ge.Tensor", "aten.ge.Scalar"], "decompose", "ElementWise LESS then Unary NOT", (lambda a, b: a >= b, t(2, 3), t(3))),
    ("cmp/le", ["aten.le.Tensor", "aten.le.Scalar"], "decompose", "ElementWise GREATER then Unary NOT", (lambda a, b: a <= b, t(2, 3), t(3))),
]
for id, ops, kind, layers, example in BINARY:
    define(ns, id, ops, kind, layers=layers, example=example)

define(ns, "ew/add-inplace", ["aten.add_.Tensor", "aten.mul_.Tensor"], "direct", layers="ElementWise SUM/PROD on a fresh tensor",
       example=(lambda a: (a * 1).add_(a), t(2, 3)),
       bad=(lambda a: a.add_(1.0), t(2, 3)), match="mutates", checks=[not_mutating_inputs],
       doc="direct: an in-place add/mul on an intermediate becomes a plain ElementWise layer; never on a graph input.")

LOGICAL = [
    ("logic/and", ["aten.logical_and.default", "aten.__and__.Tensor", "aten.bitwise_and.Tensor"], "ElementWise AND", lambda a, b: a & b),
    ("logic/or", ["aten.logical_or.default", "aten.__or__.Tensor", "aten.bitwise_or.Tensor"], "ElementWise OR", lambda a, b: a | b),
    ("logic/xor", ["aten.logical_xor.default", "aten.__xor__.Tensor", "aten.bitwise_xor.Tensor"], "ElementWise XOR", lambda a, b: a ^ b),
]
for id, ops, layers, fn in LOGICAL:
    define(ns, id, ops, "direct", layers=layers, example=(fn, t(2, 3, dtype=torch.bool), t(3, dtype=torch.bool)),
           bad=(fn, t(2, 3, dtype=torch.int32), t(3, dtype=torch.int32)), match="bool tensors only", checks=[bool_or_int_only])

define(ns, "logic/not", ["aten.logical_not.default", "aten.bitwise_not.default"], "direct", layers="Unary NOT",
       example=(lambda a: ~a, t(2, 3, dtype=torch.bool)), bad=(lambda a: ~a, t(2, 3, dtype=torch.int32)), match="bool tensors only",
       checks=[bool_or_int_only])

define(ns, "select/where", ["aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf", "aten.where.Scalar"], "direct",
       layers="Select (condition, then, else) with broadcasting", example=(lambda c, a: torch.where(c, a, 0.0), t(2, 3, dtype=torch.bool), t(3)))
define(ns, "select/masked-fill", ["aten.masked_fill.Scalar", "aten.masked_fill.Tensor"], "direct", layers="Select with a constant fill",
       example=(lambda a, m: a.masked_fill(m, -1e4), t(2, 3), t(2, 3, dtype=torch.bool)))

UNARY = [
    ("unary/abs", "aten.abs.default", "Unary ABS", torch.abs, False),
    ("unary/neg", "aten.neg.default", "Unary NEG", torch.neg, False),
    ("unary/exp", "aten.exp.default", "Unary EXP", torch.exp, True),
    ("unary/log", "aten.log.default", "Unary LOG", lambda a: torch.log(a.abs() + 1), True),
    ("unary/sqrt", "aten.sqrt.default", "Unary SQRT", lambda a: torch.sqrt(a.abs()), True),
    ("unary/reciprocal", "aten.reciprocal.default", "Unary RECIP", torch.reciprocal, True),
    ("unary/sin", "aten.sin.default", "Unary SIN", torch.sin, True),
    ("unary/cos", "aten.cos.default", "Unary COS", torch.cos, True),
    ("unary/erf", "aten.erf.default", "Unary ERF", torch.erf, True),
    ("unary/floor", "aten.floor.default", "Unary FLOOR", torch.floor, True),
    ("unary/ceil", "aten.ceil.default", "Unary CEIL", torch.ceil, True),
    ("unary/round", "aten.round.default", "Unary ROUND (half to even, as PyTorch)", torch.round, True),
    ("unary/sign", "aten.sign.default", "Unary SIGN", torch.sign, False),
    ("unary/isnan", "aten.isnan.default", "Unary ISNAN", torch.isnan, True),
    ("unary/isinf", "aten.isinf.default", "Unary ISINF", torch.isinf, True),
]
for id, op, layers, fn, floats_only in UNARY:
    define(ns, id, op, "direct", layers=layers, example=(fn, t(2, 3)), checks=[float_input] if floats_only else [])

define(ns, "unary/rsqrt", "aten.rsqrt.default", "decompose", layers="Unary SQRT then Unary RECIP (TensorRT has no RSQRT)",
       example=(lambda a: torch.rsqrt(a.abs() + 1), t(2, 3)), checks=[float_input])
