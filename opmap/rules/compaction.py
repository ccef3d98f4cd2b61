"""Ops whose output length is data-dependent because they compact or expand their input: ``unique`` and
``repeat_interleave`` with tensor repeats. Both map to the static-bound layout of the non-zero family: padded to
the upper bound torch.export proved, with the valid count as an extra output."""

import math

import torch

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import t, trt_types
from opmap.rules.nonzero import _bound, _scatter_rows, _slots, _static_bound


def static_mask(node, graph):
    """Compactions sort or one-hot their input against constants sized at build time."""
    for name, meta in node.tensor_args().items():
        assert meta.is_static, f"{name} has dynamic dims {meta.shape}; the compaction's tables are built at build time"

CONTRACT = "output padded to the static bound N with zeros; an extra int64 output holds the valid count"


def _finish(ctx, node, out, count, bound, symbol):
    if symbol is not None:
        ctx.nb.pad(symbol, bound, count)
    ctx.extra_output("count", count)
    return out


# -- repeat_interleave -----------------------------------------------------------------------------
def _emit_repeat_interleave(ctx, node):
    """Slot j takes element #{k : ends[k] <= j} (ends: inclusive running sum of repeats); slots past the total are 0."""
    x = ctx.input("self")
    if node.arg("dim") is None:
        x = ctx.reshape(x, [-1])
    k = ctx.node.meta("repeats").shape[0]
    bound, symbol = _bound(ctx, node) if isinstance(node.out.shape[0], str) else (node.out.shape[0], None)
    repeats = ctx.cast(ctx.input("repeats"), "int32")
    axis = ctx.const(0, "int32", shape=())
    ends = ctx.out(ctx.net.add_cumulative(repeats, axis, ctx.trt.CumulativeOperation.SUM, False, False), "ends")
    slots = ctx.const(torch.arange(bound, dtype=torch.int32).reshape(bound, 1), "int32")
    passed = ctx.cast(ctx.unary(ctx.elementwise(slots, ctx.reshape(ends, [1, k]), "LESS"), "NOT"), "int32")
    src = ctx.out(ctx.net.add_reduce(passed, ctx.trt.ReduceOperation.SUM, 1 << 1, False), "source")
    total = ctx.out(ctx.net.add_reduce(repeats, ctx.trt.ReduceOperation.SUM, 1, True), "total")
    valid = ctx.elementwise(ctx.reshape(slots, [bound]), total, "LESS")
    src = ctx.elementwise(src, ctx.const(k - 1, "int32"), "MIN")
    picked = ctx.out(ctx.net.add_gather(x, src, 0), "gather")
    rest = list(node.out.shape[1:])
    zero = ctx.const(0, ctx.dtype(x), shape=[1] * (1 + len(rest)))
    out = ctx.out(ctx.net.add_select(*ctx.broadcast(ctx.reshape(valid, [bound] + [1] * len(rest)), picked, zero)), "valid")
    return _finish(ctx, node, out, ctx.cast(total, "int64"), bound, symbol)


def _repeat(x, r):
    y = torch.repeat_interleave(x, r)
    torch._check(y.shape[0] <= 16)  # how a user hands torch.export the bound
    return y


@strategy("repeat/static-bound", op="aten.repeat_interleave.self_Tensor", kind="decompose", tags=("data-dependent",),
          contract=CONTRACT,
          examples=[accept(_repeat, torch.arange(4.0), torch.tensor([1, 2, 0, 3])),
                    accept(lambda x, r: torch.repeat_interleave(x, r, output_size=6), torch.arange(4.0), torch.tensor([1, 2, 0, 3])),
                    reject(lambda x, r: torch.repeat_interleave(x, r), torch.arange(4.0), torch.tensor([1, 2, 0, 3]),
                           match="no upper bound")])
def rule_repeat_static_bound(node, bounds, settings):
    """An output length that is the sum of the repeats needs a static bound: torch._check(y.shape[0] <= N) or
    output_size= gives one."""
    trt_types(node)
    static_mask(node, None)
    assert node.arg("dim") in (None, 0), f"repeat_interleave along dim {node.arg('dim')} is not decomposed"
    if isinstance(node.out.shape[0], str):
        _static_bound(node, bounds, settings)


rule_repeat_static_bound.emit(_emit_repeat_interleave)


# -- unique ----------------------------------------------------------------------------------------
def _emit_unique(ctx, node):
    """Sort (TopK MIN over all elements), mark each first-of-a-run, compact the marked values by an exclusive
    running count; the count of runs is the valid count. Counts per value come from the run lengths."""
    x = ctx.reshape(ctx.input("self"), [1, -1])
    numel = math.prod(node.meta("self").shape)
    bound, symbol = _bound(ctx, node)
    top = ctx.net.add_topk(x, ctx.trt.TopKOperation.MIN, numel, 1 << 1)
    ctx.layer(top, "sort")
    s = ctx.reshape(top.get_output(0), [numel])
    first = run_heads(ctx, s, numel)
    target, count = _slots(ctx, first, bound)
    values = _scatter_rows(ctx, ctx.reshape(s, [numel]), target, bound, [], 0, ctx.dtype(s))
    outs = [_finish(ctx, node, values, count, bound, symbol), None, None]
    if node.arg("return_inverse", False):
        # each element's index among the unique values = how many run heads hold a smaller value (static shape: exact)
        flat = ctx.reshape(x, [numel, 1])
        smaller = ctx.elementwise(ctx.reshape(s, [1, numel]), flat, "LESS")
        heads = ctx.elementwise(smaller, ctx.reshape(first, [1, numel]), "AND")
        rank = ctx.out(ctx.net.add_reduce(ctx.cast(heads, "int32"), ctx.trt.ReduceOperation.SUM, 1 << 1, False), "inverse")
        outs[1] = ctx.reshape(ctx.cast(rank, "int64"), list(node.meta("self").shape))
    if node.arg("return_counts", False):
        outs[2] = run_lengths(ctx, target, count, bound, numel)
    return outs


def run_heads(ctx, s, numel):
    """[numel] bool: element k starts a run of equal values (k = 0, or s[k] != s[k - 1])."""
    if numel == 1:
        return ctx.const([True], "bool")
    head = ctx.const([True], "bool")
    later = ctx.out(ctx.net.add_slice(s, (1,), (numel - 1,), (1,)), "later")
    earlier = ctx.out(ctx.net.add_slice(s, (0,), (numel - 1,), (1,)), "earlier")
    changed = ctx.unary(ctx.elementwise(later, earlier, "EQUAL"), "NOT")
    cat = ctx.net.add_concatenation([head, changed])
    cat.axis = 0
    return ctx.out(cat, "first-of-run")


def run_lengths(ctx, target, count, bound, numel):
    """[bound] int64 run lengths: run start positions compacted like the values (``target``), next start - start;
    slots past ``count`` are 0."""
    positions = ctx.const(torch.arange(numel, dtype=torch.int32), "int32")
    starts = _scatter_rows(ctx, positions, target, bound, [], numel, "int32")
    nexts = ctx.out(ctx.net.add_slice(starts, (1,), (bound - 1,), (1,)), "next-start")
    end = ctx.const([numel], "int32")
    cat = ctx.net.add_concatenation([nexts, end])
    cat.axis = 0
    ends = ctx.out(cat, "ends")
    lengths = ctx.elementwise(ctx.elementwise(ends, starts, "SUB"), ctx.const(0, "int32"), "MAX")
    valid = ctx.elementwise(ctx.const(torch.arange(bound, dtype=torch.int64), "int64"), count, "LESS")
    # the last valid run's next start is the fill value numel, so its length is already right
    return ctx.out(ctx.net.add_select(*ctx.broadcast(valid, ctx.cast(lengths, "int64"), ctx.const(0, "int64", shape=[1]))), "counts")


@strategy("unique/sort-compact", op="aten._unique2.default", kind="decompose", tags=("data-dependent",), contract=CONTRACT,
          examples=[accept(torch.unique, torch.randint(0, 5, (10,))),
                    accept(lambda x: torch.unique(x, return_counts=True), torch.randint(0, 4, (3, 4))),
                    accept(torch.unique, torch.full((6,), 3)),
                    accept(lambda x: torch.unique(x, return_inverse=True, return_counts=True), torch.randint(0, 4, (3, 4))),
                    reject(torch.unique, torch.randn(5000), match="3840")])
def rule_unique_sort_compact(node, bounds, settings):
    """Sorted unique (with inverse indices and counts) of a static input of at most 3840 elements (TensorRT TopK's k limit)."""
    trt_types(node)
    static_mask(node, None)
    assert node.arg("sorted", True), "unique(sorted=False) leaves the order unspecified; only the sorted form is decomposed"
    numel = math.prod(node.meta("self").shape)
    assert numel <= 3840, f"{numel} elements exceed TensorRT TopK's k limit of 3840"
    _static_bound(node, bounds, settings)


rule_unique_sort_compact.emit(_emit_unique)
