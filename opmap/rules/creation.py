"""Tensor creation and casts: IConstantLayer / IFillLayer (dynamic sizes), ICastLayer (arange, full, zeros/ones, fill,
empty_strided, to/type_as)."""

import torch

from opmap.loading.graph import Ref
from opmap.planning.strategy import accept, Example, strategy
from opmap.rules.common import cases, out_dims, static, t, trt_checks
from opmap.rules.shape import broadcast_to


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

rule_create = [strategy(id, op=ops, kind="direct", layers=layers, checks=trt_checks(), emit=emit,
                        examples=cases((fn, t(2, 3)), *[f if isinstance(f, Example) else (f, t(2, 3)) for f in MORE[id]],
                                       bad=(bad, t(2, 3))))
               for (id, ops, layers, fn, bad), emit in zip(CREATE, (_emit_arange, _emit_full, _emit_full))]

rule_cast = strategy(
    "cast/cast", op=["aten.to.dtype", "aten.to.dtype_layout", "aten._to_copy.default", "aten.type_as.default",
                     "aten.to.other"], kind="direct",
    layers="Cast to the target dtype (no layer when the dtype is unchanged; one per tensor and dtype, shared by every "
           "node that casts the same tensor to it, as each layer's copy of an attention mask does)", checks=trt_checks(),
    emit=lambda ctx, node: ctx.nb.cast_once(ctx, ctx.input("self"), ctx.output_dtype()),
    examples=cases((lambda a: a.to(torch.float16), t(2, 3)),
                   accept(lambda a: a.to(torch.int32), t(2, 3) * 4, decompose=True),
                   (lambda a, b: a.type_as(b), t(2, 3) * 4, t(2, dtype=torch.int32)),
                   (lambda a, b: torch.ops.aten.to.other(a, b), t(2, 3), t(2, dtype=torch.float16)),
                   (lambda a: torch.ops.aten.to.dtype_layout(a, dtype=torch.bfloat16), t(2, 3)),
                   bad=(lambda a: a.to(torch.float64), t(2, 3))),
    doc="direct: an explicit Cast layer, as strongly typed networks require.")

A = torch.ops.aten


def _emit_fill(ctx, node):
    dims, dtype = out_dims(node), ctx.output_dtype()
    value = ctx.cast(ctx.input("value"), dtype) if node.meta("value") is not None else ctx.const(node.arg("value"), dtype)
    return broadcast_to(ctx, ctx.reshape(value, [1] * len(dims)) if dims else value, dims) if dims else ctx.reshape(value, [])


def _emit_empty(ctx, node):
    """Uninitialised memory: any value is a valid result; zeros are emitted."""
    dims = out_dims(node)
    zero = ctx.const(0, ctx.output_dtype(), shape=[1] * len(dims))
    return broadcast_to(ctx, zero, dims) if dims else ctx.reshape(zero, [])


rule_fill = strategy(
    "creation/fill", op=["aten.fill.Scalar", "aten.fill.Tensor"], kind="direct",
    layers="a Constant (or the 0-d value) broadcast by a stride-0 Slice to self's shape", checks=trt_checks(),
    emit=_emit_fill,
    examples=cases((lambda a: A.fill.Scalar(a, 2.5), t(2, 3))) + [accept(lambda a, v: A.fill.Tensor(a, v), t(2, 3), t())])

rule_empty_strided = strategy(
    "creation/empty-strided", op="aten.empty_strided.default", kind="direct",
    layers="a zero Constant broadcast to the size (uninitialised memory: zeros are as valid as any value)",
    checks=trt_checks(), emit=_emit_empty,
    examples=cases((lambda a: A.empty_strided.default([2, 3], [3, 1]).fill_(1.5) + a, t(2, 3)),
                   bad=(lambda a: A.empty_strided.default([2, 3], [3, 1], dtype=torch.float64).fill_(1.5) + a, t(2, 3))))
