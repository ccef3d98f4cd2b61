"""Tensor creation and casts: IConstantLayer / IFillLayer (dynamic sizes), ICastLayer."""

import torch

from opmap.loading.graph import Ref
from opmap.planning.strategy import Example, accept
from opmap.rules.common import define, out_dims, static, t

ns = globals()


def _fill_value(node):
    if node.op in ("aten.ones.default", "aten.new_ones.default", "aten.ones_like.default"):
        return 1
    if node.op in ("aten.full.default", "aten.new_full.default", "aten.full_like.default"):
        return node.arg("fill_value")
    if node.op == "aten.scalar_tensor.default":
        return node.arg("s")
    return 0  # zeros and empty (an uninitialised tensor may hold anything; zeros are as good)


def _emit_full(ctx, node):
    dims = out_dims(node)
    dtype = ctx.output_dtype()
    value = _fill_value(node)
    if static(dims):
        return ctx.const(torch.full(dims, value, dtype=getattr(torch, dtype) if dtype != "bfloat16" else torch.float32), dtype)
    scalar = ctx.const(value, dtype, shape=[1] * len(dims))
    layer = ctx.net.add_slice(scalar, (0,) * len(dims), (1,) * len(dims), (0,) * len(dims))
    layer.set_input(2, ctx.shape_of(ctx.input("self")) if "like" in node.op else ctx.shape_tensor(dims))
    return ctx.out(layer, "broadcast")


def _emit_arange(ctx, node):
    """The length is torch.export's own ceil((end - start) / step), static or symbolic; start and step may be values
    the graph computes (SymInts such as a bag length)."""
    (length,) = out_dims(node)
    start, step = (ctx.tensor(v) if isinstance(v, Ref) else v for v in (node.arg("start", 0) or 0, node.arg("step", 1) or 1))
    return ctx.arange(length, start, step, ctx.output_dtype())

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
def _all_auto():
    return ({0: torch.export.Dim.AUTO(max=32), 1: torch.export.Dim.AUTO(max=32)},)


# every listed overload, each as a model writes it (empty values are arbitrary: they are filled before use)
MORE = {
    "create/arange": [lambda a: torch.arange(2, 5) + a, lambda a: torch.arange(0.5, 2.0, 0.5) + a,
                      # start, end and step computed by the graph (SymInts), e.g. embedding_bag's offsets of a 2-D input
                      accept(lambda a: torch.arange(a.shape[0], 3 * a.shape[0] + 1, a.shape[1]) * 1.5, t(6, 4),
                             dynamic_shapes=lambda: ({0: torch.export.Dim("n", min=4, max=32), 1: torch.export.Dim("m", min=2, max=8)},)),
                      accept(lambda a: torch.arange(0, a.numel(), a.shape[1]) * 2, t(3, 5), dynamic_shapes=_all_auto)],
    "create/full": [lambda a: torch.full((2, 3), 2.5) + a, lambda a: torch.zeros(2, 3) + a, lambda a: torch.scalar_tensor(-1.5) + a,
                    lambda a: torch.empty(2, 3).fill_(3.0) + a, lambda a: a.new_ones((3,)) + a, lambda a: a.new_zeros((2, 1)) + a,
                    lambda a: a.new_full((3,), 4.0) + a, lambda a: a.new_empty((3,)).fill_(2.0) + a,
                    # a zero-size tensor (WavLM starts a concatenation from torch.empty(0))
                    lambda a: torch.cat([torch.empty(0), a.flatten()])],
    "create/full-like": [lambda a: torch.ones_like(a) + a, lambda a: torch.zeros_like(a, dtype=torch.int32),
                         lambda a: torch.empty_like(a).fill_(1.0) + a],
}
for (id, ops, layers, fn, bad), emit in zip(CREATE, (_emit_arange, _emit_full, _emit_full)):
    define(ns, id, ops, "direct", layers=layers, example=(fn, t(2, 3)), bad=(bad, t(2, 3)),
           examples=[f if isinstance(f, Example) else (f, t(2, 3)) for f in MORE[id]],
           emit=emit)

define(ns, "cast/cast", ["aten.to.dtype", "aten.to.dtype_layout", "aten._to_copy.default", "aten.type_as.default",
                         "aten.to.other"],
       "direct", layers="Cast to the target dtype (no layer when the dtype is unchanged)",
       example=(lambda a: a.to(torch.float16), t(2, 3)), bad=(lambda a: a.to(torch.float64), t(2, 3)),
       examples=[accept(lambda a: a.to(torch.int32), t(2, 3) * 4, decompose=True),
                 (lambda a, b: a.type_as(b), t(2, 3) * 4, t(2, dtype=torch.int32)),
                 (lambda a, b: torch.ops.aten.to.other(a, b), t(2, 3), t(2, dtype=torch.float16)),
                 (lambda a: torch.ops.aten.to.dtype_layout(a, dtype=torch.bfloat16), t(2, 3))],
       doc="direct: an explicit Cast layer, as strongly typed networks require.",
       emit=lambda ctx, node: ctx.cast(ctx.input("self"), ctx.output_dtype()))
