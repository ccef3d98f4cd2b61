"""The rest of the shape family: copies and fills (``copy``, ``fill``, ``empty_strided``, ``_reshape_copy``),
``tile``, pixel (un)shuffle, and writing a slice back into a tensor (``select_scatter``, ``slice_scatter``) — Shuffle,
Slice (stride 0 to broadcast, WRAP to tile) and Select over a position mask, all over shape tensors so dims may be
dynamic."""

import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept
from opmap.rules.common import define, out_dims, static_arg, t
from opmap.rules.shape import _emit_repeat, _in_range

ns = globals()
A = torch.ops.aten


def broadcast_to(ctx, x, dims):
    """x broadcast to ``dims`` (the builder's dims: ints or symbols): a Slice with stride 0 on x's unit dims."""
    x = ctx.unsqueeze_to(x, len(dims))
    stride = [0 if (isinstance(s, int) and s == 1 and d != 1) else 1 for s, d in zip(x.shape, dims)]
    return ctx.slice(x, [0] * len(dims), dims, stride)


def _emit_copy(ctx, node):
    """copy(self, src): src broadcast to self's shape, in self's dtype."""
    return ctx.cast(broadcast_to(ctx, ctx.input("src"), out_dims(node)), ctx.output_dtype())


def _emit_fill(ctx, node):
    dims, dtype = out_dims(node), ctx.output_dtype()
    value = ctx.cast(ctx.input("value"), dtype) if node.meta("value") is not None else ctx.const(node.arg("value"), dtype)
    return broadcast_to(ctx, ctx.reshape(value, [1] * len(dims)) if dims else value, dims) if dims else ctx.reshape(value, [])


def _emit_empty(ctx, node):
    """Uninitialised memory: any value is a valid result; zeros are emitted."""
    dims = out_dims(node)
    zero = ctx.const(0, ctx.output_dtype(), shape=[1] * len(dims))
    return broadcast_to(ctx, zero, dims) if dims else ctx.reshape(zero, [])


define(ns, "shape/copy", "aten.copy.default", "direct", layers="Slice with stride 0 (broadcast src to self's shape), Cast",
       example=(lambda a, b: A.copy.default(a, b), t(2, 3), t(3)), emit=_emit_copy)
define(ns, "creation/fill", ["aten.fill.Scalar", "aten.fill.Tensor"], "direct",
       layers="a Constant (or the 0-d value) broadcast by a stride-0 Slice to self's shape",
       example=(lambda a: A.fill.Scalar(a, 2.5), t(2, 3)), emit=_emit_fill)
define(ns, "creation/empty-strided", "aten.empty_strided.default", "direct",
       layers="a zero Constant broadcast to the size (uninitialised memory: zeros are as valid as any value)",
       example=(lambda a: A.empty_strided.default([2, 3], [3, 1]).fill_(1.5) + a, t(2, 3)),
       bad=(lambda a: A.empty_strided.default([2, 3], [3, 1], dtype=torch.float64).fill_(1.5) + a, t(2, 3)), emit=_emit_empty)
define(ns, "shape/reshape-copy", "aten._reshape_copy.default", "direct", layers="Shuffle (a reshape; a copy is free)",
       example=(lambda a: A._reshape_copy.default(a, [3, 2]), t(2, 3)),
       checks=[static_arg("self")], emit=lambda ctx, node: ctx.reshape(ctx.input("self"), out_dims(node)))
define(ns, "shape/tile", "aten.tile.default", "direct", layers="Slice in WRAP mode over the tiled size (as repeat)",
       example=(lambda a: a.tile((2, 1, 3)), t(2, 3)), emit=_emit_repeat)


def rank_four(node, **_):
    meta = node.meta("self")
    assert meta.rank == 4, f"input of rank {meta.rank}: only [N, C, H, W] is decomposed; flatten leading dims into N in the model"
    assert isinstance(meta.shape[1], int), f"channels {meta.shape[1]} are dynamic; the shuffle needs them at build time"


def _emit_pixel_shuffle(ctx, node):
    """[N, C r², H, W] -> [N, C, r, r, H, W] -> [N, C, H, r, W, r] -> [N, C, H r, W r] (unshuffle: the reverse)."""
    x = ctx.input("self")
    n, c, h, w = node.meta("self").shape
    o = out_dims(node)
    if node.op == "aten.pixel_shuffle.default":
        r = node.arg("upscale_factor")
        split, order = [n, o[1], r, r, h, w], (0, 1, 4, 2, 5, 3)
    else:
        r = node.arg("downscale_factor")
        split, order = [n, c, o[2], r, o[3], r], (0, 1, 3, 5, 2, 4)
    layer = ctx.net.add_shuffle(ctx.reshape(x, split))
    layer.first_transpose = order
    return ctx.reshape(ctx.out(layer, "transpose"), o)


define(ns, "shape/pixel-shuffle", ["aten.pixel_shuffle.default", "aten.pixel_unshuffle.default"], "decompose",
       layers="Shuffle (reshape), Shuffle (transpose), Shuffle (reshape)",
       example=(lambda a: F.pixel_shuffle(a, 2), t(1, 8, 2, 3)), checks=[rank_four], emit=_emit_pixel_shuffle)


def _positions(ctx, node, dim):
    """int64 positions along ``dim`` of self, shaped to broadcast against it; and the dim's length (int or symbol)."""
    shape = node.meta("self").shape
    rank, n = len(shape), shape[dim]
    return ctx.reshape(ctx.arange(n), [1] * dim + [n] + [1] * (rank - dim - 1)), n


def _where(ctx, cond, a, b):
    return ctx.out(ctx.net.add_select(*ctx.broadcast(cond, a, b)), "select")


def _length(ctx, n):
    """An int, a symbol or a [1] tensor, as a [1] int64 tensor."""
    return ctx.const([n], "int64") if isinstance(n, int) else ctx.size(n) if isinstance(n, str) else n


def _emit_select_scatter(ctx, node):
    """Select(position == index, src with the dim restored, self)."""
    x = ctx.input("self")
    dim = node.arg("dim") % ctx.rank(x)
    pos, n = _positions(ctx, node, dim)
    at = ctx.elementwise(pos, _length(ctx, _in_range(ctx, n, node.arg("index"), clamp=False)), "EQUAL")
    src = ctx.cast(ctx.input("src"), ctx.dtype(x))
    dims = ctx.dims_of(src)
    src = ctx.reshape(src, dims[:dim] + [1] + dims[dim:])
    return _where(ctx, at, src, x)


def _emit_slice_scatter(ctx, node):
    """Positions start, start + step, ... below end take src[(p - start) / step] (a Gather along dim); others keep self."""
    x = ctx.input("self")
    dim = node.arg("dim", 0) % ctx.rank(x)
    if node.meta("src").shape[dim] == 0:  # an empty slice writes nothing
        return x
    step = node.arg("step", 1) or 1
    pos, n = _positions(ctx, node, dim)
    start = _length(ctx, _in_range(ctx, n, node.arg("start") or 0))
    end = _length(ctx, _in_range(ctx, n, node.arg("end")) if node.arg("end") is not None else n)
    src = ctx.cast(ctx.input("src"), ctx.dtype(x))
    offset = ctx.elementwise(pos, start, "SUB")
    k = ctx.elementwise(offset, ctx.const([step], "int64"), "FLOOR_DIV")
    on_step = ctx.elementwise(ctx.elementwise(k, ctx.const([step], "int64"), "PROD"), offset, "EQUAL")
    inside = ctx.elementwise(ctx.unary(ctx.elementwise(pos, start, "LESS"), "NOT"), ctx.elementwise(pos, end, "LESS"), "AND")
    last = ctx.elementwise(_length(ctx, node.meta("src").shape[dim]), ctx.const([1], "int64"), "SUB")
    k = ctx.elementwise(ctx.elementwise(k, ctx.const([0], "int64"), "MAX"), last, "MIN")
    flat = ctx.reshape(k, [-1])
    gathered = ctx.out(ctx.net.add_gather(src, flat, dim), "gather")
    return _where(ctx, ctx.elementwise(inside, on_step, "AND"), gathered, x)


define(ns, "scatter/select-scatter", "aten.select_scatter.default", "decompose",
       layers="Fill (positions), ElementWise EQUAL, Shuffle (src with the dim restored), Select",
       example=(lambda a, s: torch.select_scatter(a, s, 1, -1), t(2, 3), t(2)), emit=_emit_select_scatter)
define(ns, "scatter/slice-scatter", "aten.slice_scatter.default", "decompose",
       layers="Fill (positions), ElementWise range and step tests, Gather of src along dim, Select",
       example=(lambda a: torch.slice_scatter(a, a[:, 1:6:2] * 2, 1, 1, 6, 2), t(2, 7)), emit=_emit_slice_scatter)

ns["rule_slice_scatter"].examples += (accept(lambda a: torch.slice_scatter(a, a[-3:] + 1, 0, -3), t(5, 2)),)
ns["rule_pixel_shuffle"].examples += (accept(lambda a: F.pixel_unshuffle(a, 2), t(2, 3, 4, 6)),)
ns["rule_fill"].examples += (accept(lambda a, v: A.fill.Tensor(a, v), t(2, 3), t()),)
