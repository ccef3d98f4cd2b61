"""Ops whose natural TensorRT form would need a reducing scatter, mapped to exact alternatives:
``index_put(accumulate=True)`` and ``histc`` through one-hot sums (TensorRT's Scatter overwrites, it never adds)."""

import math

import torch

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import float_input, t, trt_types
from opmap.rules.indexing import put_indices, put_indices_static


def _one_hot(ctx, idx, n):
    """[K, n] bool: idx[k] == j (idx as int64 [K])."""
    k = idx.shape[0]
    cols = ctx.const(torch.arange(n, dtype=torch.int64).reshape(1, n), "int64")
    return ctx.elementwise(ctx.reshape(idx, [k, 1]), cols, "EQUAL")


def _static_small(node, settings, sizes):
    total = math.prod(sizes)
    assert total <= settings.max_bound, f"the one-hot table has {total} elements, over max_bound {settings.max_bound}"


def _emit_index_put_accumulate(ctx, node):
    """The indexed leading dims flattened to one row number per update, then one-hot rows summed over the updates."""
    x = ctx.input("self")
    idx, shape = put_indices(ctx, node)
    sizes = list(node.meta("self").shape)
    lead, rest = sizes[:len(idx)], sizes[len(idx):]
    k, n = math.prod(shape), math.prod(lead)
    flat = None
    for axis, i in enumerate(idx):
        term = ctx.elementwise(ctx.reshape(i, [k]), ctx.const(math.prod(lead[axis + 1:]), "int64", shape=[1]), "PROD")
        flat = term if flat is None else ctx.elementwise(flat, term, "SUM")
    hot = ctx.reshape(_one_hot(ctx, flat, n), [k, n] + [1] * len(rest))  # [K, N]
    values = ctx.reshape(ctx.expand_to(ctx.cast(ctx.input("values"), ctx.dtype(x)), shape + rest), [k, 1, *rest])
    zero = ctx.const(0, ctx.dtype(x), shape=[1] * (2 + len(rest)))
    spread = ctx.out(ctx.net.add_select(*ctx.broadcast(hot, values, zero)), "spread")
    added = ctx.out(ctx.net.add_reduce(spread, ctx.trt.ReduceOperation.SUM, 1, False), "sum")
    return ctx.elementwise(x, ctx.reshape(added, sizes), "SUM")


put_acc = lambda x, i, v: x.index_put((i,), v, accumulate=True)  # noqa: E731


@strategy("scatter/index-put-accumulate", op=["aten.index_put.default"], kind="decompose",
          examples=[accept(put_acc, torch.zeros(5), torch.tensor([0, 2, 2, -1]), torch.ones(4)),
                    accept(put_acc, torch.zeros(4, 2, dtype=torch.int32), torch.tensor([1, 1]), torch.ones(2, 2, dtype=torch.int32)),
                    reject(lambda x, i, v: x.index_put((i,), v), torch.zeros(5), torch.tensor([0, 2]), torch.ones(2),
                           match="accumulate=False")])
def rule_index_put_accumulate(node, graph, settings):
    """Duplicates add up: the index tensors (broadcast) give each update a flat row over the indexed dims; a one-hot [K, N] table selects each update's row, a Reduce SUM over K adds them, and the
    sum is added to self. Exact for integers; for floats the additions may happen in another order than PyTorch's."""
    trt_types(node)
    assert node.arg("accumulate", False), "index_put with accumulate=False overwrites: use scatter/index-put"
    put_indices_static(node, graph)
    meta = node.meta("self")
    assert meta.dtype != "bool", "self is bool: accumulating bools (an OR) is not decomposed; index_put into an int tensor"
    refs = node.arg("indices")
    k = math.prod(torch.broadcast_shapes(*[tuple(graph.meta_of(r).shape) for r in refs]))
    _static_small(node, settings, [k, *meta.shape])


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
def rule_histc_one_hot(node, settings, bounds):
    """Each element's bin as floor((x - min)·bins / (max - min)) (the maximum in the last bin, outside elements
    dropped), a one-hot [numel, bins] table, Reduce SUM. Exact for the same float arithmetic. The table's rows follow
    the input's length, so dynamic dims are served (mixture-of-experts routers count tokens per expert this way);
    its size is checked at the export's largest input."""
    trt_types(node)
    float_input(node)
    dtype = node.meta("self").dtype
    assert dtype == "float32", (f"input is {dtype}: PyTorch computes each element's bin in that reduced precision, whose "
                                "rounding at the bin edges this strategy does not reproduce (the fuzzer found bfloat16 "
                                "counts off by one); histc a float32 cast")
    numel = bounds.upper(node.meta("self"))
    assert numel is not None, f"input {node.meta('self')} has no upper bound in the export; the one-hot table would be unbounded"
    _static_small(node, settings, [numel, node.arg("bins", 100)])


rule_histc_one_hot.emit(_emit_histc)
