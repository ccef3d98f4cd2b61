"""More data-dependent compactions in the static-bound layout of ``unique/sort-compact`` (padded to the bound the
export proves, with the valid count as an extra output): ``unique_consecutive`` (runs of the input as it is, no sort)
and ``unique(dim=)`` (unique slices, sorted lexicographically through pairwise comparisons, since TopK sorts by one
key only)."""

import math

import torch

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import t, trt_types
from opmap.rules.compaction import CONTRACT, _finish, run_heads, run_lengths, static_mask
from opmap.rules.nonzero import _bound, _scatter_rows, _slots, _static_bound, selection_bound


def _emit_unique_consecutive(ctx, node):
    """Run heads of the flattened input, compacted by an exclusive running count; the inverse of an element is the
    number of run heads up to it, minus one."""
    shape = list(node.meta("self").shape)
    numel = math.prod(shape)
    s = ctx.reshape(ctx.input("self"), [numel])
    bound, symbol = _bound(ctx, node)
    first = run_heads(ctx, s, numel)
    target, count = _slots(ctx, first, bound)
    values = _scatter_rows(ctx, s, target, bound, [], 0, ctx.dtype(s))
    outs = [_finish(ctx, node, values, count, bound, symbol), None, None]
    if node.arg("return_inverse", False):
        axis = ctx.const(0, "int32", shape=())
        heads = ctx.out(ctx.net.add_cumulative(ctx.cast(first, "int32"), axis, ctx.trt.CumulativeOperation.SUM, False, False), "heads")
        outs[1] = ctx.reshape(ctx.cast(ctx.elementwise(heads, ctx.const([1], "int32"), "SUB"), "int64"), shape)
    if node.arg("return_counts", False):
        outs[2] = run_lengths(ctx, target, count, bound, numel)
    return outs


def _consecutive(**kw):
    def fn(x):
        return torch.unique_consecutive(x, **kw)

    return fn


@strategy("unique/consecutive-compact", op="aten.unique_consecutive.default", kind="decompose", tags=("data-dependent",),
          contract=CONTRACT,
          examples=[accept(_consecutive(), torch.tensor([1, 1, 2, 2, 3, 1, 1, 5])),
                    accept(_consecutive(return_inverse=True, return_counts=True), torch.tensor([[4, 4, 2], [2, 2, 7]])),
                    accept(_consecutive(return_counts=True), torch.full((5,), 2.5)),
                    accept(_consecutive(return_inverse=True), t(6)),
                    reject(_consecutive(dim=0), torch.tensor([[1, 1], [1, 1], [2, 3]]), match="dim"),
                    reject(_consecutive(), torch.tensor([1, 1, 2]).double(), match="float64")])
def rule_unique_consecutive(node, bounds, settings):
    """Consecutive duplicates collapsed (the whole input flattened), with inverse indices and run lengths."""
    trt_types(node)
    static_mask(node, None)
    assert node.arg("dim") is None, (f"unique_consecutive along dim {node.arg('dim')} compares whole slices; only the "
                                     "flattened form (dim=None) is decomposed")
    _static_bound(node, bounds, settings)


rule_unique_consecutive.emit(_emit_unique_consecutive)


# -- unique(dim=) ----------------------------------------------------------------------------------
def _as_rows(ctx, node):
    """self with ``dim`` moved first and the rest flattened: [n, L], and the permutation used."""
    shape = list(node.meta("self").shape)
    dim = node.arg("dim") % len(shape)
    perm = [dim] + [d for d in range(len(shape)) if d != dim]
    layer = ctx.net.add_shuffle(ctx.input("self"))
    layer.first_transpose = tuple(perm)
    layer.reshape_dims = (shape[dim], math.prod(shape) // shape[dim])
    return ctx.out(layer, "rows"), perm


def _row_order(ctx, rows, n):
    """(less, same): [n, n] bool, row i < row j lexicographically, and row i == row j."""
    a = ctx.out(ctx.net.add_unsqueeze(rows, ctx.const([1], "int64")), "row-i")  # [n, 1, L]
    b = ctx.out(ctx.net.add_unsqueeze(rows, ctx.const([0], "int64")), "row-j")  # [1, n, L]
    differ = ctx.unary(ctx.elementwise(a, b, "EQUAL"), "NOT")
    axis = ctx.const(2, "int32", shape=())
    before = ctx.out(ctx.net.add_cumulative(ctx.cast(differ, "int32"), axis, ctx.trt.CumulativeOperation.SUM, True, False),
                     "differences-before")
    decides = ctx.elementwise(before, ctx.const(0, "int32", shape=[1, 1, 1]), "EQUAL")  # the first difference (or none)
    smaller = ctx.elementwise(ctx.elementwise(a, b, "LESS"), decides, "AND")
    less = ctx.elementwise(ctx.reduce(ctx.cast(smaller, "int32"), "SUM", [2]), ctx.const(0, "int32", shape=[1, 1]), "GREATER")
    same = ctx.elementwise(ctx.reduce(ctx.cast(differ, "int32"), "SUM", [2]), ctx.const(0, "int32", shape=[1, 1]), "EQUAL")
    return less, same


def _emit_unique_dim(ctx, node):
    """Pairwise lexicographic order of the slices; a slice's rank = how many distinct slices are smaller (its inverse
    index and its slot); first occurrences scattered to their slots; counts = a one-hot sum of the ranks."""
    rows, perm = _as_rows(ctx, node)
    n, width = (int(d) for d in rows.shape)
    bound, symbol = _bound(ctx, node)
    less, same = _row_order(ctx, rows, n)
    earlier = ctx.const(torch.ones(n, n, dtype=torch.bool).triu(1), "bool")  # i < j
    repeated = ctx.reduce(ctx.cast(ctx.elementwise(same, earlier, "AND"), "int32"), "SUM", [0])  # [n]: earlier copies of j
    first = ctx.elementwise(repeated, ctx.const([0], "int32"), "EQUAL")
    counted = ctx.elementwise(less, ctx.reshape(first, [n, 1]), "AND")  # distinct slice j smaller than slice i
    rank = ctx.reduce(ctx.cast(counted, "int32"), "SUM", [0])  # [n]
    dump = ctx.const([bound], "int32")
    target = ctx.reshape(ctx.cast(ctx.where(first, rank, dump), "int64"), [n, 1])
    values = _scatter_rows(ctx, rows, target, bound, [width], 0, ctx.dtype(rows))  # [bound, L]
    shape = list(node.meta("self").shape)
    moved = [shape[d] for d in perm[1:]]
    layer = ctx.net.add_shuffle(values)
    layer.reshape_dims = (bound, *moved)
    layer.second_transpose = tuple(perm.index(d) for d in range(len(perm)))
    count = ctx.cast(ctx.reduce(ctx.cast(first, "int32"), "SUM", [0], keepdim=True), "int64")
    outs = [_finish(ctx, node, ctx.out(layer, "unique-slices"), count, bound, symbol), None, None]
    if node.arg("return_inverse", False):
        outs[1] = ctx.cast(rank, "int64")
    if node.arg("return_counts", False):
        slots = ctx.const(torch.arange(bound, dtype=torch.int32).reshape(bound, 1), "int32")
        hot = ctx.elementwise(slots, ctx.reshape(rank, [1, n]), "EQUAL")
        outs[2] = ctx.cast(ctx.reduce(ctx.cast(hot, "int32"), "SUM", [1]), "int64")
    return outs


def _unique_dim(dim, **kw):
    def fn(x):
        return torch.unique(x, dim=dim, **kw)

    return fn


ROWS = torch.tensor([[1, 2, 0], [0, 5, 1], [1, 2, 0], [0, 5, 0], [1, 1, 9]])


@strategy("unique/dim-pairwise", op="aten.unique_dim.default", kind="decompose", tags=("data-dependent",), contract=CONTRACT,
          examples=[accept(_unique_dim(0), ROWS),
                    accept(_unique_dim(1, return_inverse=True, return_counts=True), ROWS.T.contiguous()),
                    accept(_unique_dim(0, return_counts=True), t(4, 2, 3)),
                    accept(_unique_dim(-1, return_inverse=True), torch.tensor([[[2.0, 1.0, 2.0], [0.5, 3.0, 0.5]]])),
                    reject(_unique_dim(0), torch.zeros(200, 200, 40), match="max_bound"),
                    reject(_unique_dim(0), ROWS.double(), match="float64")])
def rule_unique_dim(node, bounds, settings):
    """Unique slices along ``dim``, sorted (with inverse indices and counts), for a static input whose pairwise
    comparison table (n × n × slice size) stays within max_bound."""
    trt_types(node)
    static_mask(node, None)
    assert node.meta("self").dtype != "bool", "self is bool: the pairwise comparison and sort take numbers; unique a cast to int"
    shape = node.meta("self").shape
    n = shape[node.arg("dim") % len(shape)]
    table = n * math.prod(shape)
    assert table <= settings.max_bound, f"the pairwise comparison table has {table} elements, over max_bound {settings.max_bound}"
    bound = selection_bound(node, bounds, settings)
    assert bound <= settings.max_bound, f"the static bound {bound} exceeds max_bound {settings.max_bound}"


rule_unique_dim.emit(_emit_unique_dim)
