"""Ops whose natural TensorRT form would need a reducing scatter, mapped to exact alternatives:
``index_put(accumulate=True)`` and ``histc`` through one-hot sums (TensorRT's Scatter overwrites, it never adds)."""

import math

import torch

from opmap.engine.rules import accept, reject, strategy
from opmap.rules.common import float_input, t, trt_types


def _one_hot(ctx, idx, n):
    """[K, n] bool: idx[k] == j (idx as int64 [K])."""
    k = idx.shape[0]
    cols = ctx.const(torch.arange(n, dtype=torch.int64).reshape(1, n), "int64")
    return ctx.elementwise(ctx.reshape(idx, [k, 1]), cols, "EQUAL")


def _static_small(node, settings, sizes):
    total = math.prod(sizes)
    assert total <= settings.max_bound, f"the one-hot table has {total} elements, over max_bound {settings.max_bound}"


def _emit_index_put_accumulate(ctx, node):
    x = ctx.input("self")
    (ref,) = node.arg("indices")
    idx = ctx.cast(ctx.tensor(ref), "int64")
    n = node.meta("self").shape[0]
    idx = ctx.elementwise(idx, ctx.const(0, "int64"), "LESS")  # negative indices count from the end
    idx = ctx.out(ctx.net.add_select(idx, ctx.elementwise(ctx.cast(ctx.tensor(ref), "int64"), ctx.const(n, "int64"), "SUM"),
                                     ctx.cast(ctx.tensor(ref), "int64")), "wrap")
    hot = _one_hot(ctx, idx, n)  # [K, N]
    values = ctx.cast(ctx.input("values"), ctx.dtype(x))
    rest = list(node.meta("self").shape[1:])
    k = ctx.node._graph.meta_of(ref).shape[0]
    values = ctx.expand_to(values, [k, *rest])
    hot = ctx.reshape(hot, [k, n] + [1] * len(rest))
    zero = ctx.const(0, ctx.dtype(x), shape=[1] * (2 + len(rest)))
    spread = ctx.out(ctx.net.add_select(*ctx.broadcast(hot, ctx.reshape(values, [k, 1, *rest]), zero)), "spread")
    added = ctx.out(ctx.net.add_reduce(spread, ctx.trt.ReduceOperation.SUM, 1, False), "sum")
    return ctx.elementwise(x, added, "SUM")


put_acc = lambda x, i, v: x.index_put((i,), v, accumulate=True)  # noqa: E731


@strategy("scatter/index-put-accumulate", op=["aten.index_put.default"], kind="decompose",
          examples=[accept(put_acc, torch.zeros(5), torch.tensor([0, 2, 2, -1]), torch.ones(4)),
                    accept(put_acc, torch.zeros(4, 2, dtype=torch.int32), torch.tensor([1, 1]), torch.ones(2, 2, dtype=torch.int32)),
                    reject(lambda x, i, v: x.index_put((i,), v), torch.zeros(5), torch.tensor([0, 2]), torch.ones(2),
                           match="accumulate=False")])
def rule_index_put_accumulate(node, graph, settings):
    """Duplicates add up: a one-hot [K, N] table selects each update's row, a Reduce SUM over K adds them, and the
    sum is added to self. Exact for integers; for floats the additions may happen in another order than PyTorch's."""
    trt_types(node)
    assert node.arg("accumulate", False), "index_put with accumulate=False overwrites: use scatter/index-put"
    refs = node.arg("indices") or []
    assert len(refs) == 1 and refs[0] is not None, f"{len(refs)} index tensors; one (on the first dim) is decomposed"
    idx = graph.meta_of(refs[0])
    assert idx.dtype in ("int32", "int64") and idx.rank == 1, f"index is {idx}; a 1-D integer index is decomposed"
    meta = node.meta("self")
    assert meta.is_static and idx.is_static, "dynamic sizes: the one-hot table is sized at build time"
    _static_small(node, settings, [idx.shape[0], *meta.shape])


rule_index_put_accumulate.emit(_emit_index_put_accumulate)


def _emit_histc(ctx, node):
    x = ctx.reshape(ctx.input("self"), [-1])
    dt = ctx.dtype(x)
    bins = node.arg("bins", 100)
    lo, hi = float(node.arg("min", 0)), float(node.arg("max", 0))
    if lo == hi:  # PyTorch then uses the data's own min and max
        lo_t = ctx.out(ctx.net.add_reduce(x, ctx.trt.ReduceOperation.MIN, 1, True), "data-min")
        hi_t = ctx.out(ctx.net.add_reduce(x, ctx.trt.ReduceOperation.MAX, 1, True), "data-max")
    else:
        lo_t, hi_t = ctx.const([lo], dt), ctx.const([hi], dt)
    inside = ctx.elementwise(ctx.unary(ctx.elementwise(x, lo_t, "LESS"), "NOT"), ctx.unary(ctx.elementwise(x, hi_t, "GREATER"), "NOT"), "AND")
    # bin = floor((x - min) * bins / (max - min)), x == max in the last bin
    pos = ctx.elementwise(ctx.elementwise(ctx.elementwise(x, lo_t, "SUB"), ctx.const(float(bins), dt), "PROD"),
                          ctx.elementwise(hi_t, lo_t, "SUB"), "DIV")
    pos = ctx.cast(ctx.unary(pos, "FLOOR"), "int64")
    pos = ctx.elementwise(pos, ctx.const(bins - 1, "int64"), "MIN")
    hot = ctx.elementwise(_one_hot(ctx, pos, bins), ctx.reshape(inside, [-1, 1]), "AND")
    counts = ctx.out(ctx.net.add_reduce(ctx.cast(hot, dt), ctx.trt.ReduceOperation.SUM, 1, False), "counts")
    return counts


@strategy("hist/histc-one-hot", op="aten.histc.default", kind="decompose",
          examples=[accept(lambda x: torch.histc(x, bins=4, min=-2, max=2), torch.randn(50)),
                    accept(lambda x: torch.histc(x, bins=5), torch.randn(6, 5)),
                    reject(lambda x: torch.histc(x, bins=4, min=-2, max=2), torch.randn(50).double(), match="float64")])
def rule_histc_one_hot(node, settings):
    """Each element's bin as floor((x - min)·bins / (max - min)) (the maximum in the last bin, outside elements
    dropped), a one-hot [numel, bins] table, Reduce SUM. Exact for the same float arithmetic."""
    trt_types(node)
    float_input(node)
    meta = node.meta("self")
    assert meta.is_static, f"input {meta} has dynamic dims; the one-hot table is sized at build time"
    _static_small(node, settings, [math.prod(meta.shape), node.arg("bins", 100)])


rule_histc_one_hot.emit(_emit_histc)
