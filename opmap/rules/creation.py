"""Tensor creation and casts: IConstantLayer / IFillLayer (dynamic sizes), ICastLayer."""

import torch

from opmap.rules.common import define, t

ns = globals()

CREATE = [
    ("create/arange", ["aten.arange.default", "aten.arange.start", "aten.arange.start_step"],
     "Constant when the length is static, else Fill LINSPACE over a shape tensor", lambda a: torch.arange(3) + a,
     lambda a: torch.arange(3, dtype=torch.float64)),
    ("create/full", ["aten.full.default", "aten.ones.default", "aten.zeros.default", "aten.empty.memory_format",
                     "aten.scalar_tensor.default", "aten.new_ones.default", "aten.new_zeros.default", "aten.new_full.default",
                     "aten.new_empty.default"],
     "Constant (static size) or a broadcast Slice of a scalar Constant (dynamic size)", lambda a: torch.ones(2, 3) + a,
     lambda a: torch.ones(2, 3, dtype=torch.float64)),
    ("create/full-like", ["aten.full_like.default", "aten.ones_like.default", "aten.zeros_like.default", "aten.empty_like.default"],
     "a scalar Constant broadcast to the input's shape (Shape + Slice)", lambda a: torch.full_like(a, 2.0),
     lambda a: torch.full_like(a, 2.0, dtype=torch.float64)),
]
for id, ops, layers, fn, bad in CREATE:
    define(ns, id, ops, "direct", layers=layers, example=(fn, t(2, 3)), bad=(bad, t(2, 3)))

define(ns, "cast/cast", ["aten.to.dtype", "aten.to.dtype_layout", "aten._to_copy.default", "aten.type_as.default",
                         "aten.to.other"],
       "direct", layers="Cast to the target dtype (no layer when the dtype is unchanged)",
       example=(lambda a: a.to(torch.float16), t(2, 3)), bad=(lambda a: a.to(torch.float64), t(2, 3)),
       doc="direct: an explicit Cast layer, as strongly typed networks require.")
