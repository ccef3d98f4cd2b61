"""Max pooling's indices (the flat position of each window's maximum in its input plane, what ``max_unpool`` takes).

``pool/max3d-values``: ``max_pool3d_with_indices`` where only the values are read, PoolingNd MAX as ``pool/max`` maps
the 3-D pooling without indices. ``pool/max-with-indices``: both outputs, as a running maximum over the window
positions, for graphs that read the indices (PoolingNd yields the maxima only)."""

import itertools
import math

import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import define, float_input, t, trt_types
from opmap.rules.conv import _emit_pool, _spatial_args, indices_unused, no_ceil_mode_with_dilation

ns = globals()
MAX_WINDOW = 64  # window positions unrolled into Slice + compare + Select layers


def _emit_values(ctx, node):
    return [_emit_pool(ctx, node), None]


@strategy("pool/max3d-values", op="aten.max_pool3d_with_indices.default", kind="direct",
          examples=[accept(lambda a: F.max_pool3d(a, 2, return_indices=True)[0], t(1, 2, 4, 4, 4)),
                    accept(lambda a: F.max_pool3d(a, (3, 2, 2), stride=(2, 1, 2), padding=1, return_indices=True)[0], t(2, 2, 5, 4, 6)),
                    accept(lambda a: F.max_pool3d(a, 2, ceil_mode=True, return_indices=True)[0], t(1, 1, 5, 5, 3)),
                    reject(lambda a: F.max_pool3d(a, 2, return_indices=True)[1], t(1, 2, 4, 4, 4), match="indices"),
                    reject(lambda a: F.max_pool3d(a, 2, dilation=2, return_indices=True)[0], t(1, 2, 6, 6, 6), match="dilation")])
def rule_max_pool3d_values(node, graph):
    """PoolingNd MAX over the three spatial dims; the indices output must be unused."""
    trt_types(node)
    float_input(node)
    no_ceil_mode_with_dilation(node)
    indices_unused(node=node, graph=graph)


rule_max_pool3d_values.emit(_emit_values)


def _spatial(node) -> int:
    return 3 if "3d" in node.op else 2


def _window_args(node):
    spatial = _spatial(node)
    kernel, dilation, padding = _spatial_args(node, spatial, "kernel_size", "dilation", "padding")
    stride = list(node.arg("stride") or kernel)
    return kernel, (stride * spatial if len(stride) == 1 else stride), dilation, padding


def _static_window(node, **_):
    """The window table (each output position's input positions) is made at build time."""
    spatial = _spatial(node)
    sizes = node.meta("self").shape[-spatial:]
    assert all(isinstance(d, int) for d in sizes), f"spatial dims {list(sizes)} are dynamic; the position table is built for fixed sizes"
    kernel = _window_args(node)[0]
    assert math.prod(kernel) <= MAX_WINDOW, f"a window of {math.prod(kernel)} positions (over {MAX_WINDOW}) would unroll into that many layers"


def _emit_with_indices(ctx, node):
    """Each window position in turn, row-major as PyTorch scans: a strided Slice of the input padded with -inf, and the
    same Slice of a constant table of flat input positions; a strict GREATER (or a NaN, which PyTorch takes) replaces
    the running maximum and its position, so ties keep the first."""
    x = ctx.input("self")
    spatial = _spatial(node)
    shape = list(node.meta("self").shape)
    lead, sizes = shape[:-spatial], shape[-spatial:]
    kernel, stride, dilation, padding = _window_args(node)
    outs = list(node.out.shape[-spatial:])
    span = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(outs, stride, kernel, dilation)]
    table = torch.full(span, -1, dtype=torch.int64)  # flat positions; -1 where the window reads padding
    inside = tuple(slice(p, min(p + n, w)) for p, n, w in zip(padding, sizes, span))
    table[inside] = torch.arange(math.prod(sizes)).reshape(sizes)[tuple(slice(0, r.stop - r.start) for r in inside)]
    ones = [1] * len(lead)
    padded = ctx.slice(x, [0] * len(lead) + [-p for p in padding], lead + span, ones + [1] * spatial, mode="FILL",
                       fill=ctx.const(float("-inf"), ctx.dtype(x), shape=()))
    best = where = None
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = [o * d for o, d in zip(offset, dilation)]
        value = ctx.slice(padded, [0] * len(lead) + start, lead + outs, ones + stride)
        picked = table[tuple(slice(b, b + (o - 1) * s + 1, s) for b, o, s in zip(start, outs, stride))]
        position = ctx.const(picked.reshape([1] * len(lead) + outs), "int64")
        if best is None:
            best, where = value, ctx.expand_to(position, lead + outs)
            continue
        nan = ctx.unary(ctx.elementwise(value, value, "EQUAL"), "NOT")
        take = ctx.elementwise(ctx.elementwise(value, best, "GREATER"), nan, "OR")
        best, where = ctx.where(take, value, best), ctx.where(take, position, where)
    return [best, where]


def _pool_indices(fn, **kw):
    return lambda a: fn(a, return_indices=True, **kw)


define(ns, "pool/max-with-indices", ["aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default"],
       "decompose", layers="per window position: Slice of the -inf-padded input, GREATER/NaN test, Select of value and "
                           "flat position (a constant table)",
       example=(_pool_indices(F.max_pool2d, kernel_size=2), t(1, 3, 8, 8)),
       examples=[(_pool_indices(F.max_pool2d, kernel_size=3, stride=2, padding=1, ceil_mode=True), t(2, 2, 7, 6)),
                 (_pool_indices(F.max_pool2d, kernel_size=(2, 3), stride=1, dilation=2), t(3, 9, 8)),
                 (lambda a: F.max_unpool2d(*F.max_pool2d(a, 2, return_indices=True), 2), t(1, 2, 6, 6)),
                 (lambda a: F.max_pool2d(torch.round(a), 3, 1, return_indices=True), t(1, 1, 5, 5)),  # ties: the first
                 (_pool_indices(F.max_pool3d, kernel_size=2, padding=1), t(1, 2, 4, 5, 3)),
                 accept(_pool_indices(F.max_pool2d, kernel_size=2), t(3, 2, 6, 6),
                        dynamic_shapes=lambda: ({0: torch.export.Dim("batch", min=2, max=16)},)),
                 reject(_pool_indices(F.max_pool2d, kernel_size=2), t(1, 3, 8, 8), match="dynamic",
                        dynamic_shapes=lambda: ({2: torch.export.Dim("h", min=4, max=32)},)),
                 reject(_pool_indices(F.max_pool2d, kernel_size=9), t(1, 1, 9, 9), match="positions")],
       checks=[trt_types, float_input, _static_window], emit=_emit_with_indices)
