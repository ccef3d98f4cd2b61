"""Data-dependent compactions other than nonzero: unique (sorted, consecutive, by dim) and repeat_interleave.

Ops whose output length is data-dependent because they compact or expand their input: ``unique`` and
``repeat_interleave`` with tensor repeats. Both map to the static-bound layout of the non-zero family: padded to
the upper bound torch.export proved, with the valid count as an extra output.

More data-dependent compactions in the static-bound layout of ``unique/sort-compact`` (padded to the bound the
export proves, with the valid count as an extra output): ``unique_consecutive`` (runs of the input as it is, no sort)
and ``unique(dim=)`` (unique slices, sorted lexicographically through pairwise comparisons, since TopK sorts by one
key only).
"""

import math

import torch

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import t, trt_types
from opmap.rules.nonzero import _bound, _scatter_rows, _slots, _static_bound, selection_bound


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
